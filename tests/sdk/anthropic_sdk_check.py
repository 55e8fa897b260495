"""Drives a running uag with the official `anthropic` Python SDK, unchanged.

Usage: python anthropic_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8080; the SDK adds /v1/messages)
Exits non-zero with a message on the first mismatch; prints "sdk check passed" at the end.
"""
import sys

import anthropic
from anthropic import Anthropic

base_url = sys.argv[1]
client = Anthropic(base_url=base_url, api_key="unused-by-uag", max_retries=0, timeout=20)

# A whole message, parsed into the SDK's pydantic models, from each upstream type.
for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"]:
    message = client.messages.create(
        model=model,
        max_tokens=64,
        system="You answer geography questions.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stop_sequences=["\n\n"],
        metadata={"user_id": "kiosk-7"},
        service_tier="auto",
        output_config={"effort": "low"},
    )
    assert message.type == "message", message
    assert message.role == "assistant", message
    assert message.content[0].type == "text", message
    assert message.content[0].text == "The capital of France is Paris.", message
    assert message.stop_reason == "end_turn", message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message

# Streaming with the SDK's helper: text as it comes, then the accumulated message.
with client.messages.stream(
    model="anthropic/claude-3-5-haiku-20241022",
    max_tokens=64,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "The capital of France is Paris.", text
assert final.content[0].text == text, final
assert final.stop_reason == "end_turn", final
assert final.usage.output_tokens > 0, final

# Raw events with stream=True.
kinds = [event.type for event in client.messages.create(
    model="ollama/llama3.2", max_tokens=64, stream=True,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)]
assert kinds[:2] == ["message_start", "content_block_start"], kinds
assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds

# Errors arrive as the SDK's typed exceptions, with Anthropic's error types.
try:
    client.messages.create(model="no/such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected NotFoundError")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
try:
    client.messages.create(
        model="graphrag", max_tokens=8, messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object"}}],
    )
    raise AssertionError("expected BadRequestError")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error" and e.body["error"]["param"] == "tools", e.body
# Structured output reaches an upstream that honours it; the local models refuse it by name.
structured = client.messages.create(
    model="openai/gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "x"}],
    output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
)
assert structured.type == "message", structured
try:
    client.messages.create(
        model="graphrag", max_tokens=8, messages=[{"role": "user", "content": "x"}],
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
    )
    raise AssertionError("expected BadRequestError")
except anthropic.BadRequestError as e:
    assert e.body["error"]["param"] == "output_config.format", e.body
try:
    client.messages.create(model="openai/error-429", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected RateLimitError")
except anthropic.RateLimitError as e:
    assert e.response.headers.get("retry-after") == "20", e.response.headers

# An error in the middle of a stream raises from the iterator.
try:
    for _ in client.messages.create(
        model="openai/cut", max_tokens=8, stream=True, messages=[{"role": "user", "content": "x"}]
    ):
        pass
    raise AssertionError("expected APIError from the stream")
except anthropic.APIError as e:
    pass

print("sdk check passed")
