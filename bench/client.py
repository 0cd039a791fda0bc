"""One benchmark measurement in a fresh process; prints one JSON line.

    python bench/client.py CLIENT BASE_URL WIRE MODE N [--path DIR] [--profile FILE]

CLIENT is one of: floor, llmstreamer, llmstreamer-chat, naive, openai-sdk,
anthropic-sdk, genai-sdk, none (start, print, exit: the process baseline).
WIRE is openai, anthropic, gemini or responses (OpenAI's Responses API; the
llmstreamer clients print {"skipped": ...} when the module has no
OpenAIResponses).
BASE_URL is the scenario root on the bench server, e.g.
http://127.0.0.1:PORT/s/openai/chunked/flood/100000 (see server.py).
MODE is flood, count or trickle. flood keeps every text delta (the text's
sha1 is checked by run.py); count only counts them, so that peak RSS shows
what the library itself keeps while the caller only iterates; in a trickle
each text delta is the server's send time (time.monotonic_ns()) and the
client records now - sent for each one the moment it reaches the consumer.

Peak RSS is VmHWM from /proc/self/status: ru_maxrss would report the parent's
RSS at fork when that is larger. --cpu N pins the process to CPU N.
--streams K runs K streams at once from K threads (one provider, for
llmstreamer; one socket each, for the floor) and reports their answers.

Only the streaming loop is timed (time.process_time(): user + sys CPU of this
process); imports and client objects are made before it, the request is sent
inside it (every client sends it lazily, on the first iteration).
Imports are kept to what each client needs, so that the whole-process CPU of
a run is the cost of that client.
"""

import sys
import time


def _sink(mode, texts):
    if mode == "flood":
        return texts.append
    if mode == "count":  # the caller only iterates: nothing kept, for peak RSS
        counts = [0, 0]

        def sink(text):
            counts[0] += 1
            counts[1] += len(text)

        sink.counts = counts
        return sink
    delays = []
    mono = time.monotonic_ns

    def sink(text):
        delays.append(mono() - int(text))
        texts.append(text)

    sink.delays = delays
    return sink


PROMPT = [{"role": "user", "content": "Write a long story."}]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
         "gemini": "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
         "responses": "/v1/responses"}


class Skip(Exception):
    """This client cannot run here (e.g. its provider class is absent)."""


# ---------------------------------------------------------------- floor ---


def floor(base, wire):
    """The practical limit: raw socket, minimal HTTP, de-chunk, split on blank
    lines, json.loads each event, pick out the text. Every complete event in
    what one recv returned is handled before the next recv."""
    import json
    import socket
    import zlib
    from urllib.parse import urlsplit

    return lambda sink: _floor(base, wire, sink, json, socket, zlib, urlsplit)


def _floor(base, wire, sink, json, socket, zlib, urlsplit):
    u = urlsplit(base)
    path = u.path + PATHS[wire]
    body = json.dumps({"model": "m", "messages": PROMPT, "stream": True}).encode()
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                 b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                 % (path.encode(), u.hostname.encode(), u.port, len(body), body))
    recv = sock.recv
    raw = b""
    while b"\r\n\r\n" not in raw:
        data = recv(65536)
        if not data:
            raise RuntimeError("no response head")
        raw += data
    head, _, raw = raw.partition(b"\r\n\r\n")
    head = head.lower()
    if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
        raise RuntimeError(head[:200])
    chunked = b"transfer-encoding: chunked" in head
    gz = zlib.decompressobj(31) if b"content-encoding: gzip" in head else None
    sep = b"\r\n\r\n" if wire == "gemini" else b"\n\n"
    loads = json.loads
    pending = b""
    eof = done = False
    for _ in range(100_000_000):  # bounded; ends at the stream's end
        if chunked:
            out = []
            pos = 0
            while True:
                i = raw.find(b"\r\n", pos)
                if i < 0:
                    break
                size = int(raw[pos:i], 16)
                if size == 0:
                    eof = True
                    break
                end = i + 2 + size
                if end + 2 > len(raw):
                    break
                out.append(raw[i + 2:end])
                pos = end + 2
            raw = raw[pos:]
            data = b"".join(out)
        else:
            data, raw = raw, b""
        if gz is not None and data:
            data = gz.decompress(data)
        if data:
            pending += data
            if sep in pending:
                parts = pending.split(sep)
                pending = parts.pop()
                for ev in parts:
                    j = ev.find(b"data: ")
                    if j < 0:
                        continue
                    # json.loads(bytes) sniffs the encoding in Python: decoding
                    # first is ~2 us cheaper per event
                    payload = ev[j + 6:].decode()
                    if wire == "openai":
                        if payload == "[DONE]":
                            done = True
                            break
                        choices = loads(payload)["choices"]
                        if choices:
                            text = choices[0]["delta"].get("content")
                            if text:
                                sink(text)
                    elif wire == "anthropic":
                        obj = loads(payload)
                        kind = obj["type"]
                        if kind == "content_block_delta":
                            sink(obj["delta"]["text"])
                        elif kind == "message_stop":
                            done = True
                            break
                    elif wire == "responses":
                        obj = loads(payload)
                        kind = obj["type"]
                        if kind == "response.output_text.delta":
                            sink(obj["delta"])
                        elif kind == "response.completed":
                            done = True
                            break
                    else:
                        text = loads(payload)["candidates"][0]["content"]["parts"][0].get("text")
                        if text:
                            sink(text)
        if done or eof:
            break
        data = recv(65536)
        if not data:
            break
        raw += data
    sock.close()


# ---------------------------------------------------------- llmstreamer ---


def _ls_provider(base, wire):
    import llmstreamer as ls

    # llmstreamer imports its transport with the first request; imports are not
    # timed, so import it here: urllib3 (requests, before the urllib3 transport)
    if hasattr(ls, "_pool_manager"):
        import certifi  # noqa: F401
        import urllib3  # noqa: F401
    else:
        import requests  # noqa: F401

    # OpenAIResponses arrives in another change: without it, skip cleanly
    cls = {"openai": ls.OpenAI, "anthropic": ls.Anthropic, "gemini": ls.Gemini,
           "responses": getattr(ls, "OpenAIResponses", None)}[wire]
    if cls is None:
        raise Skip(f"{ls.__file__} has no OpenAIResponses")
    root = base + {"openai": "/v1", "anthropic": "", "gemini": "/v1beta",
                   "responses": "/v1"}[wire]
    return ls, cls(api_key="sk-bench", base_url=root, max_retries=0, timeout=(5.0, 60.0))


def llmstreamer(base, wire):
    """The normal public path: stream_events, accumulation on (always)."""
    _, prov = _ls_provider(base, wire)

    def run(sink):
        completion = None
        for ev in prov.stream_events(PROMPT):
            if ev.type == "text":
                sink(ev.text)
            elif ev.type == "done":
                completion = ev.completion
        return completion.text

    return run


def llmstreamer_chat(base, wire):
    _, prov = _ls_provider(base, wire)

    def run(sink):
        for text in prov.stream_chat(PROMPT):
            sink(text)

    return run


# ---------------------------------------------------------------- naive ---


def naive(base, wire):
    """requests + sseclient-py as its README shows: SSEClient(response)."""
    import json

    import requests
    import sseclient

    return lambda sink: _naive(base, wire, sink, json, requests, sseclient)


def _naive(base, wire, sink, json, requests, sseclient):
    resp = requests.post(base + PATHS[wire],
                         json={"model": "m", "messages": PROMPT, "stream": True},
                         headers={"Accept": "text/event-stream"}, stream=True, timeout=60)
    resp.raise_for_status()
    client = sseclient.SSEClient(resp)
    for event in client.events():
        if wire == "openai":
            if event.data == "[DONE]":
                break
            choices = json.loads(event.data)["choices"]
            if choices:
                text = choices[0]["delta"].get("content")
                if text:
                    sink(text)
        elif wire == "anthropic":
            obj = json.loads(event.data)
            if obj["type"] == "content_block_delta":
                sink(obj["delta"]["text"])
            elif obj["type"] == "message_stop":
                break
        elif wire == "responses":
            obj = json.loads(event.data)
            if obj["type"] == "response.output_text.delta":
                sink(obj["delta"])
            elif obj["type"] == "response.completed":
                break
        else:
            text = json.loads(event.data)["candidates"][0]["content"]["parts"][0].get("text")
            if text:
                sink(text)
    resp.close()


# ----------------------------------------------------------------- SDKs ---


def openai_sdk(base, wire):
    import openai

    client = openai.OpenAI(api_key="sk-bench", base_url=base + "/v1", max_retries=0)
    if wire == "responses":
        return lambda sink: _openai_sdk_responses(client, sink)
    return lambda sink: _openai_sdk(client, sink)


def _openai_sdk_responses(client, sink):
    for event in client.responses.create(model="gpt-4.1-mini", input=PROMPT, stream=True):
        if event.type == "response.output_text.delta":
            sink(event.delta)


def _openai_sdk(client, sink):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices:
            text = chunk.choices[0].delta.content
            if text:
                sink(text)


def anthropic_sdk(base, wire):
    import anthropic

    client = anthropic.Anthropic(api_key="sk-bench", base_url=base, max_retries=0)
    return lambda sink: _anthropic_sdk(client, sink)


def _anthropic_sdk(client, sink):
    stream = client.messages.create(model="claude-sonnet-4-5", max_tokens=1024,
                                    messages=PROMPT, stream=True)
    for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            sink(event.delta.text)


def genai_sdk(base, wire):
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="bench", http_options=types.HttpOptions(
        base_url=base, api_version="v1beta"))
    return lambda sink: _genai_sdk(client, sink)


def _genai_sdk(client, sink):
    for chunk in client.models.generate_content_stream(model="gemini-2.5-flash",
                                                       contents="Write a long story."):
        for cand in chunk.candidates or ():
            for part in (cand.content.parts if cand.content else None) or ():
                if part.text:
                    sink(part.text)


CLIENTS = {
    "floor": floor,
    "llmstreamer": llmstreamer,
    "llmstreamer-chat": llmstreamer_chat,
    "naive": naive,
    "openai-sdk": openai_sdk,
    "anthropic-sdk": anthropic_sdk,
    "genai-sdk": genai_sdk,
}


def _hwm_kb():
    """Peak resident set of this process (this exec's address space), kB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def concurrent(run, mode, streams):
    """streams threads each run one stream at once; wall and process CPU from
    the moment they are released together until the last one ends."""
    import hashlib
    import threading

    kept = [[] for _ in range(streams)]
    sinks = [_sink(mode, k) for k in kept]
    errors = []
    gate = threading.Barrier(streams + 1)

    def one(i):
        gate.wait()
        try:
            run(sinks[i])
        except BaseException as exc:  # reported, so that run.py fails the cell
            errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    gate.wait()
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    answers = {}
    for k in kept:
        text = "".join(k)
        key = f"{hashlib.sha1(text.encode('utf-8')).hexdigest()} {len(text)} {len(k)}"
        answers[key] = answers.get(key, 0) + 1
    out = {"streams": streams, "cpu": cpu, "wall": wall, "errors": errors,
           "events": sum(len(k) for k in kept), "answers": answers}
    if mode == "trickle":
        out["delays_ns"] = [d for s in sinks for d in s.delays]
    return out


def main(argv):
    import json
    import os

    args = list(argv)
    opts = {}
    for flag in ("--path", "--profile", "--cpu", "--streams"):
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1]
            del args[i:i + 2]
    name = args[0]
    if name == "none":
        sys.stdout.write(f'{{"client": "none", "hwm_kb": {_hwm_kb()}}}\n')
        return 0
    if "--cpu" in opts and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(opts["--cpu"])})
    base, wire, mode, n = args[1], args[2], args[3], int(args[4])
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, opts.get("--path") or os.path.dirname(here))
    try:
        run = CLIENTS[name](base, wire)  # imports and client objects: not timed
    except Skip as exc:
        sys.stdout.write(json.dumps({"client": name, "skipped": str(exc)}) + "\n")
        return 0
    if "--streams" in opts:
        out = concurrent(run, mode, int(opts["--streams"]))
        out.update(client=name, wire=wire, mode=mode, n=n, hwm_kb=_hwm_kb())
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    texts = []
    sink = _sink(mode, texts)
    prof = None
    if "--profile" in opts:
        import cProfile

        prof = cProfile.Profile()
    import resource

    t_wall = time.perf_counter()
    t_cpu = time.process_time()
    if prof is not None:
        prof.enable()
    result = run(sink)
    if prof is not None:
        prof.disable()
    cpu = time.process_time() - t_cpu
    wall = time.perf_counter() - t_wall
    if prof is not None:
        prof.dump_stats(opts["--profile"])
    import hashlib

    text = "".join(texts)
    events = sink.counts[0] if mode == "count" else len(texts)
    out = {
        "client": name, "wire": wire, "mode": mode, "n": n, "events": events,
        "cpu": cpu, "wall": wall, "hwm_kb": _hwm_kb(),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "sha": hashlib.sha1(text.encode("utf-8")).hexdigest(), "len": str(len(text)),
        # what the library keeps for the Completion: the text, as one str
        "kept_kb": sys.getsizeof(result) // 1024 if isinstance(result, str) else None,
        "accumulated_ok": None if result is None else (
            len(result) == sink.counts[1] if mode == "count" else result == text),
    }
    if "llmstreamer" in name:
        mod = sys.modules["llmstreamer"]
        out["module"] = mod.__file__
    if mode == "count":
        out["len"] = str(sink.counts[1])
    if mode == "trickle":
        out["delays_ns"] = sink.delays
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
