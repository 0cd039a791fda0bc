"""Loopback SSE server for the llmstreamer benchmark.

Run as a subprocess: ``python bench/server.py`` binds 127.0.0.1 on a free port,
prints ``PORT <n>`` on stdout and serves until its stdin closes, it is
terminated, or ``--lifetime`` seconds pass.

Every request's path starts with a scenario prefix, and the rest of the path
(what an SDK appends to its base URL) is ignored::

    /s/<wire>/<framing>/<mode>/<n>/...

wire     openai | anthropic | gemini | responses   (the API's wire format;
                                           responses: OpenAI's Responses API)
framing  chunked | close | gzip           (gzip is chunked + Content-Encoding: gzip,
                                           one sync-flushed deflate block per event)
mode     flood                             the whole body is pre-built bytes, sent
                                           with sendall as fast as the client reads;
                                           events as the APIs send them
         flood-v1                          the same with the benchmark's first event
                                           set (see SHAPES)
         writes                            the flood's events, one sendall each: the
                                           client's reads then carry one or a few
                                           events, as they do from a real API
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

WIRES = ("openai", "anthropic", "gemini", "responses")
FRAMINGS = ("chunked", "close", "gzip")

# ------------------------------------------------------------------ text ---

# Event shapes. "real" (the default) is what the APIs send: English text,
# mostly ASCII, 1-4 tokens an event, each wire's JSON spacing and fields as
# its API writes them. "v1" is the benchmark's first event set, kept as a
# second row: a third of its events carry non-ASCII text (a str of 2 or 4
# bytes a character for the whole payload, in every client) and Gemini's
# JSON has a space after every comma; both make every client's JSON work
# dearer, which lowers every ratio to the floor.
SHAPES = ("real", "v1")

# Token-like pieces; an event carries 1-4 of them. Non-ASCII, quotes and
# newlines are there so that JSON escapes and UTF-8 decoding are exercised.
_TOKENS_V1 = (
    " the", " model", " stream", "ing", " of", " tokens", ",", ".", " a", " to",
    " and", " is", " in", " that", " it", " for", " as", " with", " on", " be",
    " response", " server", " event", " data", " Python", " generator", " latency",
    " café", " naïve", " —", " “quoted”", " 東京", " 😀", "\n", "\n\n", " \"x\"",
    " {", "}", " 42", " 3.14", "'s", " re", "ly", " un", "able", " API", " JSON",
)
# English prose as a tokenizer cuts it: words with their leading space,
# punctuation, suffixes. One token in 100 is from the second set (newlines,
# quotes, a dash, an accent), so escapes and UTF-8 still occur, as in prose.
_TOKENS = (
    " the", " of", " and", " to", " a", " in", " is", " that", " for", " it", " as",
    " with", " was", " on", " be", " by", " this", " are", " from", " or", " an",
    " at", " which", " not", " can", " have", " more", " one", " you", " we", " when",
    " model", " stream", " tokens", " answer", " request", " server", " time", " each",
    " first", " number", " example", " system", " because", " between", " through",
    " Python", " function", " value", " result", " people", " would", " about",
    "ing", "ed", "ly", "s", "'s", ",", ".", ":", " (", ")", " 2", "0", "24",
)
_RARE = ("\n", "\n\n", " \"", "\"", " —", " café", " naïve", "**", " `x`", "\t")


def texts(n: int, seed: int = 7, shape: str = "real") -> List[str]:
    """The n text deltas of a stream (1-4 tokens each), deterministic."""
    rnd = random.Random(seed)
    choice, randint, rand = rnd.choice, rnd.randint, rnd.random
    if shape == "v1":
        return ["".join(choice(_TOKENS_V1) for _ in range(randint(1, 4))) for _ in range(n)]
    return ["".join(choice(_RARE) if rand() < 0.01 else choice(_TOKENS)
                    for _ in range(randint(1, 4))) for _ in range(n)]


def expected(n: int, shape: str = "real") -> Tuple[str, str]:
    """(sha1 of the full text, length) every client must report for a flood of n."""
    text = "".join(texts(n, shape=shape))
    return hashlib.sha1(text.encode("utf-8")).hexdigest(), str(len(text))


# ----------------------------------------------------------------- wires ---

_OA_ID = "chatcmpl-BbS3q0rLx8ZkT2vJm9WcQy4eHn7Pd"
_OA_MODEL = "gpt-4o-mini-2024-07-18"
_AN_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
_AN_MODEL = "claude-sonnet-4-5-20250929"
_GE_ID = "kX5aaPbBHuXxz7IPq4yXkAc"
_GE_MODEL = "gemini-2.5-flash"
_RS_ID = "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"
_RS_ITEM = "msg_68af40337bc08193a3e7b9c63e4e0c5b05438e46b5f69a3b"
_RS_MODEL = "gpt-4.1-mini-2025-04-14"
# OpenAI pads each streamed event with a random "obfuscation" string of
# varying length so that event sizes do not reveal the tokens
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_OBF = ["".join(random.Random(i).choices(_ALNUM, k=1 + i % 15)) for i in range(64)]


def _compact(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _oa(choices: list, usage: Optional[dict] = None, obf: str = "sX2vDq") -> bytes:
    obj = {"id": _OA_ID, "object": "chat.completion.chunk", "created": 1741569952,
           "model": _OA_MODEL, "service_tier": "default",
           "system_fingerprint": "fp_560af6e559", "choices": choices, "usage": usage,
           "obfuscation": obf}
    return b"data: " + _compact(obj) + b"\n\n"


def _an(kind: str, obj: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _compact(obj) + b"\n\n"


def _ge(obj: dict, shape: str = "real") -> bytes:
    # Google writes '": "' after keys, no space after commas, and CRLF line
    # ends on alt=sse; v1 had a space after commas too
    seps = (", ", ": ") if shape == "v1" else (",", ": ")
    return (b"data: " + json.dumps(obj, ensure_ascii=False, separators=seps).encode()
            + b"\r\n\r\n")


def _rs(obj: dict) -> bytes:
    return _an(obj["type"], obj)


_GE_USAGE = {"promptTokenCount": 9, "totalTokenCount": 9,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}]}


def _rs_response(status: str, output: list, usage: Optional[dict]) -> dict:
    return {"id": _RS_ID, "object": "response", "created_at": 1756315696, "status": status,
            "background": False, "error": None, "incomplete_details": None,
            "instructions": None, "max_output_tokens": None, "max_tool_calls": None,
            "model": _RS_MODEL, "output": output, "parallel_tool_calls": True,
            "previous_response_id": None, "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
            "service_tier": "auto", "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0,
            "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


def _rs_part(text: str) -> dict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def head_events(wire: str, shape: str = "real") -> List[bytes]:
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
    if wire == "responses":
        return [
            _rs({"type": "response.created", "sequence_number": 0,
                 "response": _rs_response("in_progress", [], None)}),
            _rs({"type": "response.in_progress", "sequence_number": 1,
                 "response": _rs_response("in_progress", [], None)}),
            _rs({"type": "response.output_item.added", "sequence_number": 2,
                 "output_index": 0, "item": {"id": _RS_ITEM, "type": "message",
                                             "status": "in_progress", "content": [],
                                             "role": "assistant"}}),
            _rs({"type": "response.content_part.added", "sequence_number": 3,
                 "item_id": _RS_ITEM, "output_index": 0, "content_index": 0,
                 "part": _rs_part("")}),
        ]
    return []


def delta_event(wire: str, text: str, i: int = 0, shape: str = "real") -> bytes:
    """The i-th text delta event (0-based)."""
    if wire == "openai":
        return _oa([{"index": 0, "delta": {"content": text}, "logprobs": None,
                     "finish_reason": None}], obf=_OBF[i % 64] if shape == "real" else "sX2vDq")
    if wire == "anthropic":
        return _an("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": text}})
    if wire == "responses":
        return _rs({"type": "response.output_text.delta", "sequence_number": 4 + i,
                    "item_id": _RS_ITEM, "output_index": 0, "content_index": 0,
                    "delta": text, "logprobs": [], "obfuscation": _OBF[i % 64]})
    return _ge({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "index": 0}],
                "usageMetadata": _GE_USAGE, "modelVersion": _GE_MODEL, "responseId": _GE_ID},
               shape)


def tail_events(wire: str, deltas: List[str], shape: str = "real") -> List[bytes]:
    n = len(deltas)
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
    if wire == "responses":
        # the API repeats the whole text in the three "done" events and the
        # final response: a long answer ends with four copies of itself
        text = "".join(deltas)
        item = {"id": _RS_ITEM, "type": "message", "status": "completed",
                "content": [_rs_part(text)], "role": "assistant"}
        seq = 4 + n
        return [
            _rs({"type": "response.output_text.done", "sequence_number": seq,
                 "item_id": _RS_ITEM, "output_index": 0, "content_index": 0, "text": text,
                 "logprobs": []}),
            _rs({"type": "response.content_part.done", "sequence_number": seq + 1,
                 "item_id": _RS_ITEM, "output_index": 0, "content_index": 0,
                 "part": _rs_part(text)}),
            _rs({"type": "response.output_item.done", "sequence_number": seq + 2,
                 "output_index": 0, "item": item}),
            _rs({"type": "response.completed", "sequence_number": seq + 3,
                 "response": _rs_response("completed", [item], {
                     "input_tokens": 25, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": 2 * n,
                     "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": 25 + 2 * n})}),
        ]
    return [_ge({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2 * n,
                                   "totalTokenCount": 9 + 2 * n,
                                   "promptTokensDetails": [{"modality": "TEXT",
                                                            "tokenCount": 9}]},
                 "modelVersion": _GE_MODEL, "responseId": _GE_ID}, shape)]


def events(wire: str, n: int, shape: str = "real") -> List[bytes]:
    """Every SSE event of a flood of n text deltas, in order."""
    deltas = texts(n, shape=shape)
    return (head_events(wire, shape)
            + [delta_event(wire, t, i, shape) for i, t in enumerate(deltas)]
            + tail_events(wire, deltas, shape))


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


def flood_body(wire: str, framing: str, n: int, shape: str = "real") -> bytes:
    framer = Framer(framing)
    return b"".join([framer.frame(e) for e in events(wire, n, shape)] + [framer.end()])


# --------------------------------------------------------------- server ---

_cache: Dict[Tuple[str, str, int, str], bytes] = {}
_cache_lock = threading.Lock()


def _body(wire: str, framing: str, n: int, shape: str = "real") -> bytes:
    key = (wire, framing, n, shape)
    with _cache_lock:
        body = _cache.get(key)
        if body is None:
            body = _cache[key] = flood_body(wire, framing, n, shape)
        return body


_events_cache: Dict[Tuple[str, int], List[bytes]] = {}


def _events_cached(wire: str, n: int) -> List[bytes]:
    with _cache_lock:
        evs = _events_cache.get((wire, n))
        if evs is None:
            evs = _events_cache[wire, n] = events(wire, n)
        return evs


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
    if mode in ("flood", "flood-v1"):
        body = _body(wire, framing, n, "v1" if mode == "flood-v1" else "real")
        sock.sendall(response_head(wire, framing))
        sock.sendall(body)
    elif mode == "writes":  # a flood written one event at a time, as an API flushes
        framer = Framer(framing)
        sock.sendall(response_head(wire, framing))
        for event in _events_cached(wire, n):
            sock.sendall(framer.frame(event))
        sock.sendall(framer.end())
    elif mode.startswith("trickle"):
        interval = float(mode[len("trickle"):] or 20) / 1000.0
        framer = Framer(framing)
        sock.sendall(response_head(wire, framing)
                     + b"".join(framer.frame(e) for e in head_events(wire)))
        stamps = []
        t0 = time.monotonic() + interval
        for i in range(n):
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamps.append(str(time.monotonic_ns()))
            sock.sendall(framer.frame(delta_event(wire, stamps[-1], i)))
        sock.sendall(b"".join(framer.frame(e) for e in tail_events(wire, stamps))
                     + framer.end())
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
                   help="comma-separated wire:framing:n[:shape] bodies to build before "
                        "serving")
    args = p.parse_args(argv)
    for spec in filter(None, args.prebuild.split(",")):
        wire, framing, n, *shape = spec.split(":")
        _body(wire, framing, int(n), *shape)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(512)  # 200 concurrent streams connect at once
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
