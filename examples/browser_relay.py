"""Stream a model's tokens to a web page over SSE, with a Cancel button.

    python examples/browser_relay.py [PORT]     # prints: http://127.0.0.1:PORT/

One page (``GET /``) whose JavaScript opens an ``EventSource`` on
``GET /stream?prompt=...``; the relay answers with one SSE event per token
(``data: {"text": ...}``), then ``event: done`` (or ``event: failed`` with the
error). Cancel closes the ``EventSource``; the relay's next write to the gone
browser fails, and closing the generator closes the model's connection at once.

The provider is chosen as everywhere else: ``LLM_PROVIDER`` and that
provider's key or base URL (``OPENAI_BASE_URL=http://127.0.0.1:8080/v1`` for a
local server). The port comes from the argument, else ``RELAY_PORT``, else 8000;
0 picks a free one. It listens on 127.0.0.1 only. Standard library only.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import llmstreamer as ls

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>llmstreamer relay</title>
<style>
  body { font: 18px/1.5 sans-serif; margin: 2em; background: #f6f7f9; color: #1d1f23; }
  form { display: flex; gap: .5em; }
  input { flex: 1; font: inherit; padding: .3em .5em; }
  button { font: inherit; padding: .3em 1em; }
  #out { white-space: pre-wrap; background: #fff; border: 2px solid #3b6fd8;
         border-radius: 6px; padding: 1em; min-height: 6em; margin-top: 1em;
         font-size: 28px; }
  #status { color: #555; margin-top: .5em; }
</style>
</head>
<body>
<form id="ask">
  <input id="prompt" name="prompt" placeholder="Ask something" autofocus>
  <button id="start" type="submit">Send</button>
  <button id="cancel" type="button" disabled>Cancel</button>
</form>
<div id="out"></div>
<div id="status">idle</div>
<script>
const $ = (id) => document.getElementById(id);
let source = null;

function finish(state) {
  if (source) source.close();  // also stops EventSource from reconnecting
  source = null;
  $("status").textContent = state;
  $("start").disabled = false;
  $("cancel").disabled = true;
}

function start(prompt) {
  if (source) source.close();
  $("out").textContent = "";
  $("status").textContent = "streaming";
  $("start").disabled = true;
  $("cancel").disabled = false;
  source = new EventSource("/stream?prompt=" + encodeURIComponent(prompt));
  source.onmessage = (e) => { $("out").textContent += JSON.parse(e.data).text; };
  source.addEventListener("done", (e) => {
    finish("done (" + JSON.parse(e.data).finish_reason + ")");
  });
  source.addEventListener("failed", (e) => {
    finish("error: " + JSON.parse(e.data).error);
  });
  // A dropped connection: stop here rather than let EventSource ask again.
  source.onerror = () => { if (source) finish("connection lost"); };
}

$("ask").onsubmit = (e) => { e.preventDefault(); start($("prompt").value); };
$("cancel").onclick = () => finish("cancelled");

// /?prompt=... starts at once (a link, or a headless browser).
const given = new URLSearchParams(location.search).get("prompt");
if (given) { $("prompt").value = given; start(given); }
</script>
</body>
</html>
"""


class Relay(BaseHTTPRequestHandler):
    """``GET /``: the page; ``GET /stream?prompt=...``: the model's tokens as SSE."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif url.path == "/stream":
            prompt = parse_qs(url.query).get("prompt", [""])[0]
            if prompt.strip():
                self._relay(prompt)
            else:
                self._send(400, "text/plain; charset=utf-8", b"no prompt\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _event(self, data: dict, event: str = "") -> None:
        head = f"event: {event}\n" if event else ""
        line = json.dumps(data, ensure_ascii=False)  # JSON has no raw newlines
        self.wfile.write(f"{head}data: {line}\n\n".encode())  # unbuffered: sent now

    def _relay(self, prompt: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # no proxy buffering (nginx)
        self.end_headers()
        self.close_connection = True  # the body ends when the connection does
        events = None
        try:
            try:
                events = ls.stream_events(prompt)
                for ev in events:
                    if ev.type == "text":
                        self._event({"text": ev.text})
                    elif ev.type == "done" and ev.completion is not None:
                        c = ev.completion
                        usage = c.usage.__dict__ if c.usage else None
                        self._event({"finish_reason": c.finish_reason, "usage": usage}, "done")
            except (ls.LLMStreamerError, ValueError) as exc:  # the model's, or a setting's
                self._event({"error": str(exc)}, "failed")
        except (BrokenPipeError, ConnectionResetError):
            self.log_message("browser went away; closing the model's stream")
        finally:
            if events is not None:
                events.close()  # closes the model's HTTP connection at once


def main() -> None:
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RELAY_PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Relay)
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
