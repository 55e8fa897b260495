"""Drives a running uag's tool calling with the official `openai` and `anthropic` Python SDKs,
unchanged, across upstream types: an OpenAI client on Anthropic and Ollama upstreams, an
Anthropic client on an OpenAI upstream, a Responses client on each.

Usage: python tools_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8080, no /v1)
The mock upstream answers any request that offers tools with a call of get_weather for Paris.
Exits non-zero with a message on the first mismatch; prints "sdk check passed" at the end.
"""
import json
import sys

from anthropic import Anthropic
from openai import OpenAI

base_url = sys.argv[1]
openai = OpenAI(base_url=base_url + "/v1", api_key="unused-by-uag", max_retries=0, timeout=20)
anthropic = Anthropic(base_url=base_url, api_key="unused-by-uag", max_retries=0, timeout=20)

PARIS = {"city": "Paris", "unit": "celsius"}
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
UPSTREAMS = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "ollama/llama3.2"]
question = [{"role": "user", "content": "What is the weather in Paris?"}]

# OpenAI Chat Completions: whole, then streamed (the SDK's stream helper assembles the deltas).
for model in UPSTREAMS:
    tools = [{"type": "function", "function": WEATHER}]
    done = openai.chat.completions.create(model=model, messages=question, tools=tools, tool_choice="auto")
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls", (model, done)
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather", (model, call)
    assert json.loads(call.function.arguments) == PARIS, (model, call)
    assert call.id, (model, call)

    with openai.chat.completions.stream(model=model, messages=question, tools=tools) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls", (model, final)
    [streamed] = choice.message.tool_calls
    assert streamed.function.name == "get_weather" and json.loads(streamed.function.arguments) == PARIS, (model, streamed)

    # The tool's result goes back; every upstream takes it in its own form (the mock answers
    # with a call again, since the tools are still offered).
    follow_up = question + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18})},
    ]
    again = openai.chat.completions.create(model=model, messages=follow_up, tools=tools)
    assert again.choices[0].finish_reason == "tool_calls", (model, again)

# Anthropic Messages: whole, and streamed with input_json_delta assembled by the SDK.
tool = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
for model in UPSTREAMS:
    message = anthropic.messages.create(model=model, max_tokens=128, messages=question, tools=[tool], tool_choice={"type": "auto"})
    assert message.stop_reason == "tool_use", (model, message)
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == PARIS, (model, message)

    with anthropic.messages.stream(model=model, max_tokens=128, messages=question, tools=[tool]) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use", (model, final)
    assert len(uses) == 1 and uses[0].input == PARIS, (model, final)

    follow_up = question + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": "get_weather", "input": PARIS}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 degrees"}]},
    ]
    again = anthropic.messages.create(model=model, max_tokens=128, messages=follow_up, tools=[tool])
    assert again.stop_reason == "tool_use", (model, again)

# OpenAI Responses: a function_call output item, whole and streamed.
for model in UPSTREAMS:
    tools = [{"type": "function", **WEATHER}]
    response = openai.responses.create(model=model, input="What is the weather in Paris?", tools=tools)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == PARIS, (model, response)

    with openai.responses.stream(model=model, input="What is the weather in Paris?", tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed", (model, kinds)
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == PARIS, (model, final)

    follow_up = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees"},
    ]
    again = openai.responses.create(model=model, input=follow_up, tools=tools)
    assert again.status == "completed", (model, again)

print("sdk check passed")
