"""Stop early with break, and bound a stream in time.

`break` closes the HTTP connection at once; the provider stays usable.
"""

import sys

import llmstreamer as ls

provider = ls.OpenAI(
    timeout=(5, 30),  # connect, read (seconds between bytes)
    stall_timeout=60,  # keep-alives but no content this long: APITimeoutError
    deadline=120,  # the whole stream, retries included
)
prompt = " ".join(sys.argv[1:]) or "Count from 1 to 100, one number per line."

received = []
for text in provider.stream_chat(prompt):
    received.append(text)
    if len(received) >= 10:
        break  # the connection is closed here, not when the model finishes
print("".join(received))
print("[stopped after 10 deltas]")

try:
    print(provider.chat("Say OK.").text)
except ls.APITimeoutError as exc:
    print(f"timed out; partial text: {exc.partial.text!r}", file=sys.stderr)
