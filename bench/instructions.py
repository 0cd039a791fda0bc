#!/usr/bin/env python3
"""Instructions per text event, stage by stage, under valgrind's callgrind.

    python bench/instructions.py [--wires openai,gemini] [--n 4000] [DIR]
    python bench/instructions.py --body gzip [DIR ...]   # the whole stack, per body type

CPU time on a shared machine moves by ±20 % between runs; the number of
instructions a process executes does not. Each figure here is one stage of
the parse path, without the socket, over a wire's pre-built body cut in
64 KiB pieces: valgrind counts a run of 2N events and a run of N events, and
the difference divided by N is the cost of one event (the interpreter's start,
the imports and the body's construction cancel out).

Stages, each including the ones before it:

    floor: split   the floor's framing: split on the blank line, find "data: ",
                   decode (what client.py's floor does between its reads)
    floor          client.py's floor itself (json.loads, the text picked out),
                   reading a close-delimited response made of the pieces
    decoder        llmstreamer's SSE decoder (WHATWG rules, an event object each)
    + JSON         ... plus _json_object on each event's data
    + protocol     ... plus the wire's parser: every field of the protocol, the
                   text recorded for the Completion, an Event each
    _events        Provider._events itself: the generator a stream reads

DIR is the checkout whose llmstreamer.py is measured (default: this one).
Needs valgrind; takes ~40 s per wire and stage on a 2-core machine.

With ``--body chunked|close|gzip|writes`` it counts the whole stack instead:
``stream_events`` reading the body as its reads arrive (``_send`` replaced by
the reads, de-chunked and inflated as ``_read_chunks`` does; ``Stream`` and
the generators included) against client.py's floor reading the same response.
``writes`` is chunked with one event a read, as from an API that flushes per
token. Several DIRs are measured side by side, e.g. before and after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import server as wires  # noqa: E402

STAGES = ["floor: split", "floor", "decoder", "+ JSON", "+ protocol", "_events"]
BODIES = ("close", "chunked", "gzip", "writes")


def body_reads(wire: str, body: str, n: int) -> List[bytes]:
    """The reads a client gets for ``n`` events of ``wire`` sent as ``body``."""
    if body == "writes":
        framer = wires.Framer("chunked")
        return [framer.frame(e) for e in wires.events(wire, n)] + [framer.end()]
    data = wires.flood_body(wire, body, n)
    return [data[i:i + 65536] for i in range(0, len(data), 65536)]


def run_stream(wire: str, body: str, reads: List[bytes], path: str) -> None:
    """The whole stack over ``reads`` (the child valgrind runs)."""
    sink: List[str] = []
    if path == "floor":
        import zlib
        from urllib.parse import urlsplit

        import client

        head = wires.response_head(wire, "chunked" if body == "writes" else body)
        client._floor("http://127.0.0.1:1", wire, sink.append, json, _Pieces(reads, head),
                      zlib, urlsplit)
        return
    sys.path.insert(0, path)
    import llmstreamer as ls

    class _Conn:  # what _dechunk hands the connection back to
        def release_conn(self) -> None:
            pass

        def close(self) -> None:
            pass

    base = {"openai": ls.OpenAI, "anthropic": ls.Anthropic, "gemini": ls.Gemini,
            "responses": ls.OpenAIResponses}[wire]

    class Replayed(base):  # type: ignore[misc, valid-type]
        def _send(self, req: Any, control: Any) -> Any:
            chunks: Any = iter(reads)
            if body != "close":
                more = iter(reads)
                chunks = ls._dechunk(_Conn(), _Conn(), lambda size: next(more, b""))
                if body == "gzip":
                    chunks = ls._gunzip(chunks)
            return False, chunks, lambda read: None

    for ev in Replayed(api_key="k").stream_events("hi"):
        if ev.type == "text":
            sink.append(ev.text)


def run_stage(stage: str, wire: str, body: bytes, path: str) -> None:
    """One stage over ``body``, in this process (the child valgrind runs)."""
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    texts: List[str] = []
    sink = texts.append
    if stage == "floor":  # client.py's own floor, its socket replaced by the pieces
        import zlib
        from urllib.parse import urlsplit

        import client

        client._floor("http://127.0.0.1:1", wire, sink, json, _Pieces(pieces), zlib,
                      urlsplit)
        return
    if stage == "floor: split":  # the floor's framing alone
        sep = b"\r\n\r\n" if wire == "gemini" else b"\n\n"
        pending = b""
        for data in pieces:
            pending += data
            if sep not in pending:
                continue
            parts = pending.split(sep)
            pending = parts.pop()
            for ev in parts:
                j = ev.find(b"data: ")
                if j >= 0:
                    sink(ev[j + 6:].decode())
        return
    sys.path.insert(0, path)
    import llmstreamer as ls

    cls = {"openai": ls.OpenAI, "anthropic": ls.Anthropic, "gemini": ls.Gemini,
           "responses": ls.OpenAIResponses}[wire]
    prov = cls(api_key="k")
    st = ls._State(prov.name, "m")
    if stage == "_events":
        for ev in prov._events(iter(pieces), st):
            if ev.type == "text":
                sink(ev.text)
        return
    decoder, parser, scan = ls._SSEDecoder(), prov._parser(st), ls._json_object
    seen = 0
    for data in pieces:
        for sse in decoder.feed(data):
            if stage == "decoder":
                seen += 1
            elif stage == "+ JSON":
                if sse.data != "[DONE]":
                    seen += len(scan(sse.data, "bench"))
            else:
                for ev in parser.event(sse):
                    if ev.type == "text":
                        sink(ev.text)


class _Pieces:
    """What client._floor uses of the socket module: a connection whose reads
    return a close-delimited response carrying ``pieces``."""

    IPPROTO_TCP = TCP_NODELAY = 0

    def __init__(self, pieces: List[bytes],
                 head: bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                 ) -> None:
        self.reads = iter([head, *pieces])

    def create_connection(self, address: Any, timeout: float) -> _Pieces:
        return self

    def setsockopt(self, *args: Any) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return next(self.reads, b"")

    def close(self) -> None:
        pass


def count(stage: str, wire: str, body_file: str, path: str) -> int:
    """Instructions valgrind counts for one run of ``stage`` (a body type:
    the whole stack)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", stage, wire, body_file, path],
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def body_files(tmp: str, wire: str, n: int, make: Callable[[str, int], bytes]
               ) -> Dict[int, str]:
    """Files holding ``make(wire, k)`` for k = n and 2n events, by k."""
    files = {}
    for k in (n, 2 * n):
        files[k] = os.path.join(tmp, f"{wire}-{k}")
        with open(files[k], "wb") as f:
            f.write(make(wire, k))
    return files


def per_event(pool: ThreadPoolExecutor, stage: str, wire: str, files: Dict[int, str],
              path: str) -> int:
    """Instructions of one event: the run of 2n events minus the run of n, over
    n (the start, the imports and the body's construction cancel out). The
    two runs go in parallel: valgrind runs one thread."""
    n = min(files)
    short, long = pool.map(count, [stage] * 2, [wire] * 2, [files[n], files[2 * n]],
                           [path] * 2)
    return (long - short) // n


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        stage, wire, body_file, path = sys.argv[2:6]
        with open(body_file, "rb") as f:
            if stage in BODIES:
                run_stream(wire, stage, pickle.load(f), path)
            else:
                run_stage(stage, wire, f.read(), path)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="*", default=[os.path.dirname(HERE)])
    ap.add_argument("--wires", default=",".join(wires.WIRES))
    ap.add_argument("--n", type=int, default=4000, help="events in the shorter run")
    ap.add_argument("--body", choices=BODIES, help="count the whole stack on this body")
    args = ap.parse_args()
    if args.body:
        return main_stream(args)
    [args.path] = args.path
    results: Dict[str, Dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for wire in args.wires.split(","):
            files = body_files(tmp, wire, args.n, lambda w, n: b"".join(wires.events(w, n)))
            results[wire] = {}
            for stage in STAGES:
                results[wire][stage] = per_event(pool, stage, wire, files, args.path)
                print(f"{wire:10s} {stage:14s} {results[wire][stage]:>8,}", flush=True)
    print("\n| stage | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for stage in STAGES:
        print(f"| {stage} | " + " | ".join(f"{results[w][stage]:,}" for w in results) + " |")
    ratios: Any = [results[w]["_events"] / results[w]["floor"] for w in results]
    print("| `_events` / floor | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    return 0


def main_stream(args: Any) -> int:
    """Instructions per text event of the whole stack, floor and each DIR."""
    paths = ["floor", *args.path]
    rows: Dict[str, Dict[str, int]] = {p: {} for p in paths}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for wire in args.wires.split(","):
            files = body_files(tmp, wire, args.n,
                               lambda w, n: pickle.dumps(body_reads(w, args.body, n)))
            for path in paths:
                rows[path][wire] = per_event(pool, args.body, wire, files, path)
                print(f"{args.body:8s} {wire:10s} {path:30s} {rows[path][wire]:>8,}",
                      flush=True)
    wl = list(rows["floor"])
    print(f"\n| {args.body} | " + " | ".join(wl) + " |")
    print("|---|" + "---:|" * len(wl))
    for path in paths:
        print(f"| {path} | " + " | ".join(
            f"{rows[path][w]:,}" + ("" if path == "floor" else
                                    f" ({rows[path][w] / rows['floor'][w]:.2f}x)")
            for w in wl) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
