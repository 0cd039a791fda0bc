"""Go-style callbacks, as in the Go library's OnContent/OnFinish/OnError.

    python examples/callbacks.py "Write a haiku about rivers"
"""

import sys

import llmstreamer as ls


def on_content(text: str) -> None:
    print(text, end="", flush=True)


def on_finish(completion: ls.Completion) -> None:
    print(f"\n[done: {completion.finish_reason}, usage {completion.usage}]")


def on_error(exc: Exception) -> None:
    print(f"\n[error: {exc}]", file=sys.stderr)


prompt = " ".join(sys.argv[1:]) or "Write a haiku about rivers."
result = ls.stream_with_callbacks(
    ls.stream_events(prompt),
    on_content=on_content,
    on_finish=on_finish,
    on_error=on_error,
)
sys.exit(0 if result is not None else 1)
