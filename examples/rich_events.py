"""Every delta as a typed event: text, reasoning, tool calls, usage, done.

    python examples/rich_events.py "What's the weather in Paris?"
"""

import sys

import llmstreamer as ls

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

prompt = " ".join(sys.argv[1:]) or "What's the weather in Paris?"
for event in ls.stream_events(prompt, tools=TOOLS):
    if event.type == "text":
        print(event.text, end="", flush=True)
    elif event.type == "reasoning":
        print(event.text, end="", file=sys.stderr, flush=True)
    elif event.type == "tool_call":
        print(f"\n[tool call #{event.index} {event.name or ''} {event.arguments}]", end="")
    elif event.type == "usage":
        print(f"\n[usage: {event.usage}]", end="")
    elif event.type == "done":
        c = event.completion
        print(f"\n[finish: {c.finish_reason}; calls: {[(t.name, t.args) for t in c.tool_calls]}]")
