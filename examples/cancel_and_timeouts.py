"""Stop early with break or close(), and bound a stream in time.

`break` (or leaving a `with` block) closes the HTTP connection at once, and
`close()` does the same from any other thread: a Cancel button, a timer. The
provider stays usable either way.
"""

import sys
import threading

import llmstreamer as ls

provider = ls.OpenAI(
    timeout=(5, 30),  # connect, read (seconds between bytes)
    stall_timeout=60,  # no content this long, silent or only keep-alives: APITimeoutError
    deadline=120,  # the whole call: connect, headers, body, retries and their waits
)
prompt = " ".join(sys.argv[1:]) or "Count from 1 to 100, one number per line."

received = []
with provider.stream_chat(prompt) as stream:
    for text in stream:
        received.append(text)
        if len(received) >= 10:
            break  # the connection is closed here, not when the model finishes
print("".join(received))
print("[stopped after 10 deltas]")

# Another thread may end a stream: close() returns at once, and the loop below
# stops even if it is waiting on a silent server (.completion stays None).
stream = provider.stream_chat("Say OK.")
timer = threading.Timer(20, stream.close)  # a user who gives up after 20 s
timer.start()
try:
    for text in stream:
        print(text, end="", flush=True)
    print()
    if stream.completion is None:
        print("[cancelled by the timer]", file=sys.stderr)
except ls.APITimeoutError as exc:  # stall_timeout or deadline, with what arrived
    print(f"\ntimed out; partial text: {exc.partial.text!r}", file=sys.stderr)
finally:
    timer.cancel()
