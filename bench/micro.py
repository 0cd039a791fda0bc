#!/usr/bin/env python3
"""Micro-benchmarks behind the diagnosis (not part of `make bench`'s table).

    python bench/micro.py read             # body-read primitives, flood + trickle
    python bench/micro.py parse [DIR ...]   # llmstreamer's parse path, no I/O

read: one flood of N openai events per framing (chunked, close, gzip) read
to the end with each primitive (bytes only, no SSE parsing), CPU µs per event;
then a trickle (one event every 20 ms) read the same way, recording when each
event's send stamp first appears in what the primitive returned: the
real-time check (an event must never wait for later bytes).

parse: ``Provider._events`` (SSE decoder, JSON, events, accumulation) over the
pre-built body cut in 64 KiB pieces, for llmstreamer.py in each DIR (default:
the repository), min of several repetitions: the I/O-free part of the cost,
stable enough to compare small changes on a busy machine.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import server as wires  # noqa: E402

STAMP = re.compile(rb'"content":"(\d{6,})"')


# ------------------------------------------------------------------ read ---


def _http_client_read1(resp: Any) -> Iterator[bytes]:
    fp = resp.raw._fp  # http.client.HTTPResponse: read1 returns at most one chunk
    gz = (zlib.decompressobj(31) if resp.headers.get("content-encoding") == "gzip" else None)
    while True:
        data = fp.read1(65536)
        if not data:
            return
        yield gz.decompress(data) if gz else data


def _urllib3_read1(resp: Any) -> Iterator[bytes]:
    read1 = resp.raw.read1
    while True:
        data = read1(65536, decode_content=True)
        if not data:
            return
        yield data


def _urllib3_read_chunked(resp: Any) -> Iterator[bytes]:
    # what iter_content(None) uses on a chunked body (one chunk per step);
    # on a close-delimited body it is stream(None) = read() to EOF
    if resp.raw.chunked:
        yield from resp.raw.read_chunked(None, decode_content=True)
    else:
        yield from resp.raw.stream(None, decode_content=True)


def _proposed(name: str, path: str) -> Callable[[Any], Iterator[bytes]]:
    """llmstreamer._read_chunks from DIR/llmstreamer.py, loaded under its own name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"llmstreamer_{name}",
                                                  os.path.join(path, "llmstreamer.py"))
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return lambda resp: mod._read_chunks(resp.raw)


def _socket_floor(url: str) -> Iterator[bytes]:
    """Raw socket, no de-chunking, no inflating: what the bytes alone cost."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=60)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % u.path.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(65536)
    head, _, rest = head.partition(b"\r\n\r\n")
    if rest:
        yield rest
    while True:
        data = s.recv(65536)
        if not data:
            break
        yield data
        if data.endswith(b"0\r\n\r\n"):
            break
    s.close()


def read_bench(n: int, trickle_n: int, rounds: int) -> Dict[str, Any]:
    import requests

    server = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--prebuild",
                               ",".join(f"openai:{f}:{n}" for f in wires.FRAMINGS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]
        paths = {"repo": ROOT}
        paths.update(dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a))
        prims: Dict[str, Any] = {
            "urllib3 HTTPResponse.read1 (llmstreamer today)": _urllib3_read1,
            "urllib3 read_chunked / stream (iter_content(None))": _urllib3_read_chunked,
            "http.client HTTPResponse.read1 (resp.raw._fp)": _http_client_read1,
        }
        for name, path in paths.items():
            prims[f"llmstreamer._read_chunks [{name}]"] = _proposed(name, path)
        prims["raw socket recv (no de-chunking)"] = None
        out: Dict[str, Any] = {}
        for framing in wires.FRAMINGS:
            for mode, count in (("flood", n), ("trickle20", trickle_n)):
                for _ in range(rounds if mode == "flood" else 1):
                    for name, prim in prims.items():
                        url = f"http://127.0.0.1:{port}/s/openai/{framing}/{mode}/{count}/v1/x"
                        delays: List[float] = []
                        buf = b""
                        nbytes = calls = 0
                        sess = requests.Session()
                        t0 = time.process_time()
                        if prim is None:
                            it = _socket_floor(url)
                            resp = None
                        else:
                            resp = sess.post(url, json={}, stream=True)
                            it = prim(resp)
                        for data in it:
                            calls += 1
                            nbytes += len(data)
                            if mode != "flood":
                                now = time.monotonic_ns()
                                buf += data
                                last = 0
                                for m in STAMP.finditer(buf):
                                    delays.append((now - int(m.group(1))) / 1e6)
                                    last = m.end()
                                buf = buf[last:][-200:]
                        cpu = time.process_time() - t0
                        if resp is not None:
                            resp.close()
                        sess.close()
                        row = out.setdefault(framing, {}).setdefault(name, {})
                        if mode == "flood":
                            row.setdefault("us_per_event", []).append(cpu / n * 1e6)
                            row["reads_per_event"] = calls / n
                        else:
                            row["delay_p50_ms"] = statistics.median(delays) if delays else None
                            row["delay_max_ms"] = max(delays) if delays else None
                            row["stamps_seen"] = len(delays)
        for rows in out.values():
            for row in rows.values():
                row["us_per_event"] = statistics.median(row["us_per_event"])
        return out
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        if server.poll() is None:
            os.kill(server.pid, 15)
        server.wait(5)


# ----------------------------------------------------------------- parse ---


def parse_child(path: str, n: int, reps: int) -> Dict[str, float]:
    sys.path.insert(0, path)
    import llmstreamer as ls

    out = {}
    for wire in wires.WIRES:
        body = b"".join(wires.events(wire, n))
        pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
        cls = {"openai": ls.OpenAI, "anthropic": ls.Anthropic, "gemini": ls.Gemini,
               "responses": getattr(ls, "OpenAIResponses", None)}[wire]
        if cls is None:  # not in this llmstreamer.py
            out[wire] = float("nan")
            continue
        prov = cls(api_key="k")
        best = float("inf")
        for _ in range(reps):
            st = ls._State(prov.name, "m")
            t0 = time.process_time()
            for _ in prov._events(iter(pieces), st):
                pass
            best = min(best, time.process_time() - t0)
        out[wire] = best / n * 1e6
    return out


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "read"
    if what == "read":
        res = read_bench(int(os.environ.get("N", 100_000)), 100, 3)
        for framing, rows in res.items():
            print(f"\n{framing}:")
            print(f"  {'primitive':55s} {'us/event':>9s} {'reads/event':>12s} "
                  f"{'trickle p50 ms':>15s} {'max ms':>8s}")
            for name, row in rows.items():
                p50, mx = row.get("delay_p50_ms"), row.get("delay_max_ms")
                print(f"  {name:55s} {row['us_per_event']:9.2f} {row['reads_per_event']:12.3f} "
                      f"{p50 if p50 is None else round(p50, 3)!s:>15s} "
                      f"{mx if mx is None else round(mx, 3)!s:>8s}")
        print(json.dumps(res), file=sys.stderr)
    elif what == "parse-child":
        print(json.dumps(parse_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif what == "parse":
        dirs = sys.argv[2:] or [ROOT]
        n, reps, rounds = 50_000, 5, 3
        res: Dict[str, Dict[str, List[float]]] = {d: {} for d in dirs}
        for _ in range(rounds):  # interleaved, fresh processes
            for d in dirs:
                cp = subprocess.run([sys.executable, __file__, "parse-child", d, str(n),
                                     str(reps)], capture_output=True, text=True, check=True)
                for wire, us in json.loads(cp.stdout).items():
                    res[d].setdefault(wire, []).append(us)
        print(f"{'llmstreamer.py in':40s} " + " ".join(f"{w:>10s}" for w in wires.WIRES)
              + "   (µs per event, parse path only, min of reps, median of rounds)")
        for d in dirs:
            print(f"{d:40s} " + " ".join(f"{statistics.median(res[d][w]):10.2f}"
                                         for w in wires.WIRES))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
