"""Stream a model's tokens to a web page over SSE, with a Cancel button and a
max tokens field (256 to start with; empty: no bound of ours).

    python examples/browser_relay.py [PORT]     # prints: http://127.0.0.1:PORT/

One page (``GET /``) whose JavaScript opens an ``EventSource`` on
``GET /stream?prompt=...&max_tokens=...``; the relay answers with one SSE event
per token (``data: {"text": ...}``), then ``event: done`` (or ``event: failed``
with the error, which the page shows as an error). Cancel closes the
``EventSource``; the relay's next write to the gone browser fails, and closing
the generator closes the model's connection at once.

The provider is chosen as everywhere else: ``LLM_PROVIDER`` and that
provider's key or base URL (``OPENAI_BASE_URL=http://127.0.0.1:8080/v1`` for a
local server). The port comes from the argument, else ``RELAY_PORT``, else 8000;
0 picks a free one. It listens on 127.0.0.1 only. Standard library only.
"""

import json
import os
import re
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
  html, body { height: 100%; margin: 0; }
  /* one screen: the answer box takes the room left and scrolls, the status stays in view */
  body { display: flex; flex-direction: column; box-sizing: border-box; padding: 1.5em 2em;
         font: 18px/1.5 sans-serif; background: #f6f7f9; color: #1d1f23; }
  form { display: flex; gap: .5em; align-items: center; }
  input { font: inherit; padding: .3em .5em; }
  #prompt { flex: 1; }
  #max_tokens { width: 5em; }
  button { font: inherit; padding: .3em 1em; }
  #out { flex: 1; min-height: 2em; overflow-y: auto; white-space: pre-wrap;
         background: #fff; border: 2px solid #3b6fd8; border-radius: 6px; padding: 1em;
         margin-top: 1em; font-size: 28px; }
  #status { color: #555; margin-top: .5em; }
  #status.error { color: #a50e0e; background: #fce8e6; border-left: 4px solid #d93025;
                  padding: .2em .6em; font-weight: bold; }
</style>
</head>
<body>
<form id="ask">
  <input id="prompt" name="prompt" placeholder="Ask something" autofocus>
  <label>max tokens <input id="max_tokens" name="max_tokens" type="number" min="1" step="1"
    value="256" title="bounds the answer's length; empty: the server's limit"></label>
  <button id="start" type="submit">Send</button>
  <button id="cancel" type="button" disabled>Cancel</button>
</form>
<div id="out"></div>
<div id="status">idle</div>
<script>
const $ = (id) => document.getElementById(id);
let source = null;

function show(state, error) {
  $("status").textContent = state;
  if (error) $("status").className = "error"; else $("status").removeAttribute("class");
}

function finish(state, error) {
  if (source) source.close();  // also stops EventSource from reconnecting
  source = null;
  show(state, error);
  $("start").disabled = false;
  $("cancel").disabled = true;
}

function start(prompt) {
  const limit = $("max_tokens").value.trim();
  if (!prompt.trim()) return show("error: type a prompt first", true);
  if (limit && !/^[1-9][0-9]*$/.test(limit)) {
    return show("error: max tokens must be a whole number above 0, or empty", true);
  }
  if (source) source.close();
  $("out").textContent = "";
  show("streaming");
  $("start").disabled = true;
  $("cancel").disabled = false;
  let url = "/stream?prompt=" + encodeURIComponent(prompt);
  if (limit) url += "&max_tokens=" + limit;
  source = new EventSource(url);
  source.onmessage = (e) => {
    const out = $("out");
    // follow the text as it grows, unless the reader scrolled up to read
    const follow = out.scrollTop + out.clientHeight >= out.scrollHeight - 30;
    out.append(JSON.parse(e.data).text);
    if (follow) out.scrollTop = out.scrollHeight;
  };
  source.addEventListener("done", (e) => {
    finish("done (" + JSON.parse(e.data).finish_reason + ")");
  });
  source.addEventListener("failed", (e) => {
    finish("error: " + JSON.parse(e.data).error, true);
  });
  // A dropped connection: stop here rather than let EventSource ask again.
  source.onerror = () => {
    if (source) finish("error: connection lost (is the relay still running?)", true);
  };
}

$("ask").onsubmit = (e) => { e.preventDefault(); start($("prompt").value); };
$("cancel").onclick = () => finish("cancelled");

// /?prompt=...&max_tokens=... starts at once (a link, or a headless browser).
const given = new URLSearchParams(location.search);
if (given.has("max_tokens")) $("max_tokens").value = given.get("max_tokens");
if (given.has("prompt")) { $("prompt").value = given.get("prompt"); start(given.get("prompt")); }
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
            query = parse_qs(url.query)
            prompt = query.get("prompt", [""])[0]
            limit = query.get("max_tokens", [""])[0]
            if not prompt.strip():
                self._send(400, "text/plain; charset=utf-8", b"no prompt\n")
            elif limit and not re.fullmatch("[1-9][0-9]*", limit):
                self._send(400, "text/plain; charset=utf-8",
                           b"max_tokens must be a whole number above 0\n")
            else:
                self._relay(prompt, {"max_tokens": int(limit)} if limit else {})
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

    def _relay(self, prompt: str, options: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # no proxy buffering (nginx)
        self.end_headers()
        self.close_connection = True  # the body ends when the connection does
        try:
            try:
                # leaving the with block, however, closes the model's connection at once
                with ls.stream_events(prompt, **options) as events:
                    for ev in events:
                        if ev.type == "text":
                            self._event({"text": ev.text})
                c = events.completion
                usage = c.usage.__dict__ if c.usage else None
                self._event({"finish_reason": c.finish_reason, "usage": usage}, "done")
            except (ls.LLMStreamerError, ValueError) as exc:  # the model's, or a setting's
                self._event({"error": str(exc)}, "failed")
        except (BrokenPipeError, ConnectionResetError):
            self.log_message("browser went away; closing the model's stream")


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
