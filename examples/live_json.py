"""Watch JSON take shape while it streams: structured output, or a tool
call's arguments, closed by ``partial_json`` at every delta.

    python examples/live_json.py "Plan a weekend in Lisbon"
    python examples/live_json.py --tool "What's the weather in Paris?"

Works on every provider: LLM_PROVIDER=gemini python examples/live_json.py
"""

import json
import sys

import llmstreamer as ls

PLAN = {
    "type": "json_schema",
    "json_schema": {"name": "plan", "strict": True, "schema": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "days": {"type": "array", "items": {
                "type": "object",
                "properties": {"day": {"type": "integer"},
                               "activities": {"type": "array", "items": {"type": "string"}}},
                "required": ["day", "activities"],
                "additionalProperties": False,
            }},
        },
        "required": ["title", "days"],
        "additionalProperties": False,
    }},
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string"}},
                   "required": ["city"]},
}}]


def show(label: str, value: object, shown: dict) -> None:
    """One line each time what the JSON says changes (not every delta does)."""
    if value is not None and shown.get(label) != value:
        shown[label] = value
        print(f"{label} {json.dumps(value, ensure_ascii=False)}", flush=True)


args = sys.argv[1:]
use_tool = args[:1] == ["--tool"]
prompt = " ".join(args[1:] if use_tool else args) or (
    "What's the weather in Paris?" if use_tool else "Plan a weekend in Lisbon")
options = {"tools": TOOLS, "tool_choice": "required"} if use_tool else {"response_format": PLAN}

text, calls, shown = "", {}, {}
stream = ls.stream_events(prompt, **options)
for event in stream:
    if event.type == "text":
        text += event.text
        show("answer", ls.partial_json(text), shown)
    elif event.type == "tool_call":
        name, arguments = calls.get(event.index, (event.name or "", ""))
        calls[event.index] = (name, arguments + event.arguments)
        show(f"{name}#{event.index}", ls.partial_json(calls[event.index][1]), shown)
c = stream.completion
print(f"[done: {c.finish_reason}]")
if not use_tool:
    c.json()  # a ValueError saying why, if the answer is not whole JSON
