"""Loopback SSE server for the llmstreamer benchmark.

Run as a subprocess: ``python bench/server.py`` binds 127.0.0.1 on a free port,
prints ``PORT <n>`` on stdout and serves until its stdin closes, it is
terminated, or ``--lifetime`` seconds pass.

Every request's path starts with a scenario prefix, and the rest of the path
(what an SDK appends to its base URL) is ignored::

    /s/<wire>/<framing>/<mode>/<n>/...

wire     openai | anthropic | gemini      (the provider's wire format)
framing  chunked | close | gzip           (gzip is chunked + Content-Encoding: gzip,
                                           one sync-flushed deflate block per event)
mode     flood                             the whole body is pre-built bytes, sent
                                           with sendall as fast as the client reads
         trickleMS                         one text event every MS milliseconds; its
                                           text is the send time, time.monotonic_ns()
                                           taken just before the event is compressed,
                                           framed and written (CLOCK_MONOTONIC is
                                           shared by all processes of one machine)
n        number of text-delta events

The server is never the bottleneck in a flood: bodies are built once per
scenario (``--prebuild`` builds them before ``PORT`` is printed) and written
with one ``sendall``. Each SSE event is its own HTTP chunk, as a server that
flushes per token writes it. The module also exposes the generators so that
run.py can compute the exact text every client must have received.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
import zlib
from typing import Dict, List, Optional, Tuple

WIRES = ("openai", "anthropic", "gemini")
FRAMINGS = ("chunked", "close", "gzip")

# ------------------------------------------------------------------ text ---

# Token-like pieces; an event carries 1-4 of them. Non-ASCII, quotes and
# newlines are there so that JSON escapes and UTF-8 decoding are exercised.
_TOKENS = (
    " the", " model", " stream", "ing", " of", " tokens", ",", ".", " a", " to",
    " and", " is", " in", " that", " it", " for", " as", " with", " on", " be",
    " response", " server", " event", " data", " Python", " generator", " latency",
    " café", " naïve", " —", " “quoted”", " 東京", " 😀", "\n", "\n\n", " \"x\"",
    " {", "}", " 42", " 3.14", "'s", " re", "ly", " un", "able", " API", " JSON",
)


def texts(n: int, seed: int = 7) -> List[str]:
    """The n text deltas of a stream (1-4 tokens each), deterministic."""
    rnd = random.Random(seed)
    choice, randint = rnd.choice, rnd.randint
    return ["".join(choice(_TOKENS) for _ in range(randint(1, 4))) for _ in range(n)]


def expected(n: int) -> Tuple[str, str]:
    """(sha1 of the full text, length) every client must report for a flood of n."""
    text = "".join(texts(n))
    return hashlib.sha1(text.encode("utf-8")).hexdigest(), str(len(text))


# ----------------------------------------------------------------- wires ---

_OA_ID = "chatcmpl-BbS3q0rLx8ZkT2vJm9WcQy4eHn7Pd"
_OA_MODEL = "gpt-4o-mini-2024-07-18"
_AN_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
_AN_MODEL = "claude-sonnet-4-5-20250929"
_GE_ID = "kX5aaPbBHuXxz7IPq4yXkAc"
_GE_MODEL = "gemini-2.5-flash"


def _oa(choices: list, usage: Optional[dict] = None) -> bytes:
    obj = {"id": _OA_ID, "object": "chat.completion.chunk", "created": 1741569952,
           "model": _OA_MODEL, "service_tier": "default",
           "system_fingerprint": "fp_560af6e559", "choices": choices, "usage": usage,
           "obfuscation": "sX2vDq"}
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _an(kind: str, obj: dict) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def _ge(obj: dict) -> bytes:
    # Google writes ", " / ": " separators and CRLF line ends on alt=sse
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\r\n\r\n"


_GE_USAGE = {"promptTokenCount": 9, "totalTokenCount": 9,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}]}


def head_events(wire: str) -> List[bytes]:
    if wire == "openai":
        return [_oa([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}])]
    if wire == "anthropic":
        return [
            _an("message_start", {"type": "message_start", "message": {
                "id": _AN_ID, "type": "message", "role": "assistant", "model": _AN_MODEL,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1,
                          "service_tier": "standard"}}}),
            _an("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}),
            b'event: ping\ndata: {"type": "ping"}\n\n',
        ]
    return []


def delta_event(wire: str, text: str) -> bytes:
    if wire == "openai":
        return _oa([{"index": 0, "delta": {"content": text}, "logprobs": None,
                     "finish_reason": None}])
    if wire == "anthropic":
        return _an("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": text}})
    return _ge({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "index": 0}],
                "usageMetadata": _GE_USAGE, "modelVersion": _GE_MODEL, "responseId": _GE_ID})


def tail_events(wire: str, n: int) -> List[bytes]:
    if wire == "openai":
        return [
            _oa([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]),
            _oa([], {"prompt_tokens": 25, "completion_tokens": 2 * n, "total_tokens": 25 + 2 * n,
                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                   "accepted_prediction_tokens": 0,
                                                   "rejected_prediction_tokens": 0}}),
            b"data: [DONE]\n\n",
        ]
    if wire == "anthropic":
        return [
            _an("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _an("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": 2 * n}}),
            _an("message_stop", {"type": "message_stop"}),
        ]
    return [_ge({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2 * n,
                                   "totalTokenCount": 9 + 2 * n,
                                   "promptTokensDetails": [{"modality": "TEXT",
                                                            "tokenCount": 9}]},
                 "modelVersion": _GE_MODEL, "responseId": _GE_ID})]


def events(wire: str, n: int) -> List[bytes]:
    """Every SSE event of a flood of n text deltas, in order."""
    return (head_events(wire) + [delta_event(wire, t) for t in texts(n)]
            + tail_events(wire, n))


# -------------------------------------------------------------- framing ---


def response_head(wire: str, framing: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8",
             "Cache-Control: no-cache", "x-request-id: req_bench"]
    if wire == "gemini":
        lines[1] = "Content-Type: text/event-stream"
    if framing == "close":
        lines.append("Connection: close")
    else:
        lines.append("Transfer-Encoding: chunked")
    if framing == "gzip":
        lines.append("Content-Encoding: gzip")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


class Framer:
    """Frames one response's events as they are written."""

    def __init__(self, framing: str) -> None:
        self.framing = framing
        self.gz = zlib.compressobj(6, zlib.DEFLATED, 31) if framing == "gzip" else None

    def frame(self, event: bytes) -> bytes:
        if self.gz is not None:
            event = self.gz.compress(event) + self.gz.flush(zlib.Z_SYNC_FLUSH)
        return event if self.framing == "close" else _chunk(event)

    def end(self) -> bytes:
        if self.framing == "close":
            return b""
        last = _chunk(self.gz.flush()) if self.gz is not None else b""
        return last + b"0\r\n\r\n"


def flood_body(wire: str, framing: str, n: int) -> bytes:
    framer = Framer(framing)
    return b"".join([framer.frame(e) for e in events(wire, n)] + [framer.end()])


# --------------------------------------------------------------- server ---

_cache: Dict[Tuple[str, str, int], bytes] = {}
_cache_lock = threading.Lock()


def _body(wire: str, framing: str, n: int) -> bytes:
    key = (wire, framing, n)
    with _cache_lock:
        body = _cache.get(key)
        if body is None:
            body = _cache[key] = flood_body(wire, framing, n)
        return body


def _read_request(sock: socket.socket, buf: bytes) -> Tuple[Optional[str], bytes]:
    """(path, leftover) of the next request, or (None, b"") at EOF."""
    deadline = time.monotonic() + 30
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            return None, b""
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None, b""
        rest += data
    return path, rest[length:]


def _not_found(sock: socket.socket, why: str) -> None:
    body = json.dumps({"error": {"message": why, "type": "not_found_error"}}).encode()
    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def _serve_one(sock: socket.socket, path: str) -> bool:
    """Answer one request; False when the connection must close after it."""
    parts = path.split("/")
    if len(parts) < 6 or parts[1] != "s":
        _not_found(sock, f"no scenario in {path!r}; expected /s/wire/framing/mode/n/...")
        return True
    wire, framing, mode, n = parts[2], parts[3], parts[4], int(parts[5])
    if wire not in WIRES or framing not in FRAMINGS:
        _not_found(sock, f"unknown wire or framing in {path!r}")
        return True
    if mode == "flood":
        body = _body(wire, framing, n)
        sock.sendall(response_head(wire, framing))
        sock.sendall(body)
    elif mode.startswith("trickle"):
        interval = float(mode[len("trickle"):] or 20) / 1000.0
        framer = Framer(framing)
        sock.sendall(response_head(wire, framing)
                     + b"".join(framer.frame(e) for e in head_events(wire)))
        t0 = time.monotonic() + interval
        for i in range(n):
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = time.monotonic_ns()
            sock.sendall(framer.frame(delta_event(wire, str(stamp))))
        sock.sendall(b"".join(framer.frame(e) for e in tail_events(wire, n)) + framer.end())
    else:
        _not_found(sock, f"unknown mode {mode!r}")
        return True
    return framing != "close"


def _handle(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(10000):  # keep-alive requests on one connection, bounded
            path, buf = _read_request(sock, buf)
            if path is None or not _serve_one(sock, path):
                break
    except OSError:
        pass  # the client hung up (e.g. it stopped early): nothing to do
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lifetime", type=float, default=1800.0,
                   help="exit after this many seconds whatever happens")
    p.add_argument("--prebuild", default="",
                   help="comma-separated wire:framing:n bodies to build before serving")
    args = p.parse_args(argv)
    for spec in filter(None, args.prebuild.split(",")):
        wire, framing, n = spec.split(":")
        _body(wire, framing, int(n))

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()

    def watch_stdin() -> None:  # the parent went away: so do we
        try:
            while sys.stdin.buffer.read(1):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write(f"PORT {srv.getsockname()[1]} PID {os.getpid()}\n")
    sys.stdout.flush()
    end = time.monotonic() + args.lifetime
    while not stop.is_set() and time.monotonic() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()
    srv.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
