"""Drives a running uag with the official `openai` Python SDK, unchanged.

Usage: python openai_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with a message on the first mismatch; prints "sdk check passed" at the end.
"""
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="unused-by-uag", max_retries=0, timeout=20)

# Plain completion, parsed into the SDK's pydantic models.
completion = client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[
        {"role": "system", "content": "You answer geography questions."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    max_tokens=64,
    temperature=0.2,
)
assert completion.object == "chat.completion", completion
assert completion.choices[0].message.role == "assistant", completion
assert completion.choices[0].message.content == "The capital of France is Paris.", completion
assert completion.choices[0].finish_reason == "stop", completion
assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens, completion

# Streaming with usage in the last chunk.
stream = client.chat.completions.create(
    model="anthropic/claude-3-5-haiku-20241022",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    stream=True,
    stream_options={"include_usage": True},
)
text = ""
usage = None
finish = None
for chunk in stream:
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.choices:
        if chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    if chunk.usage:
        usage = chunk.usage
assert text == "The capital of France is Paris.", text
assert finish == "stop", finish
assert usage is not None and usage.prompt_tokens == 21 and usage.completion_tokens == 11, usage

# Model listing.
ids = [m.id for m in client.models.list()]
assert "ollama/llama3.2" in ids, ids

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=[])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "messages", e.body
city = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}
# Structured output goes to an OpenAI upstream as sent ...
completion = client.chat.completions.create(
    model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}], response_format=city
)
assert completion.choices[0].message.content is not None
# ... and a target that cannot honour it refuses by name instead of answering in free text.
try:
    client.chat.completions.create(model="graphrag", messages=[{"role": "user", "content": "x"}], response_format=city)
    raise AssertionError("expected BadRequestError: structured output must not be dropped silently")
except openai.BadRequestError as e:
    assert e.body["param"] == "response_format", e.body
    assert e.body["code"] == "unsupported_parameter", e.body
try:
    client.chat.completions.create(model="openai/error-429", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.response.headers.get("retry-after") == "20", e.response.headers

# An error in the middle of a stream raises from the iterator.
try:
    for _ in client.chat.completions.create(
        model="openai/cut", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        pass
    raise AssertionError("expected APIError from the stream")
except openai.APIError as e:
    assert "stream" in str(e), e

# The Responses API, whole and streamed.
response = client.responses.create(
    model="openai/gpt-4o-mini",
    instructions="You answer geography questions.",
    input="What is the capital of France?",
    max_output_tokens=64,
)
assert response.status == "completed", response
assert response.output_text == "The capital of France is Paris.", response
assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens, response
with client.responses.stream(model="anthropic/claude-3-5-haiku-20241022", input="What is the capital of France?") as stream:
    text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
    final = stream.get_final_response()
assert text == "The capital of France is Paris.", text
assert final.output_text == text, final
kinds = [e.type for e in client.responses.create(model="ollama/llama3.2", input="What is the capital of France?", stream=True)]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
try:
    client.responses.create(model="openai/gpt-4o-mini", input="x", previous_response_id="resp_123")
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "previous_response_id", e.body

print("sdk check passed")
