"""A tool loop: the model asks for a function, we run it, the chat goes on.

Works unchanged on every provider:  LLM_PROVIDER=anthropic python examples/tool_loop.py
"""

import json
import sys

import llmstreamer as ls


def get_weather(city: str) -> dict:
    """A real Python function the model may call."""
    return {"city": city, "temperature_c": 21, "sky": "clear"}


FUNCTIONS = {"get_weather": get_weather}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}]

messages = [{"role": "user", "content": " ".join(sys.argv[1:]) or "Weather in Paris?"}]
for _ in range(5):  # a bound, in case the model keeps calling tools
    stream = ls.stream_chat(messages, tools=TOOLS)
    for text in stream:
        print(text, end="", flush=True)
    completion = stream.completion  # the whole turn: tool calls, usage, message
    messages.append(completion.message)
    if not completion.tool_calls:
        print()
        break
    for call in completion.tool_calls:
        result = FUNCTIONS[call.name](**call.args)
        print(f"[{call.name}({call.args}) -> {result}]")
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
