"""Stream chat completions from LLM APIs as plain Python generators.

    import llmstreamer as ls

    for text in ls.openai.stream_chat("Tell me a joke", model="gpt-4o-mini"):
        print(text, end="", flush=True)

OpenAI (and every OpenAI-compatible server: vLLM, llama.cpp, Ollama, Groq,
OpenRouter, ...), the OpenAI Responses API, Anthropic and Google Gemini,
through one small API:
``stream_chat`` (text deltas), ``stream_events`` (typed events), ``chat``
(the whole ``Completion``) and Go-style callbacks.

Single file: copy it into your project. Needs ``requests`` and
``sseclient-py``. MIT licence.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Anthropic",
    "AuthenticationError",
    "BadRequestError",
    "Completion",
    "Event",
    "FakeProvider",
    "Gemini",
    "IncompleteStreamError",
    "LLMStreamerError",
    "NotFoundError",
    "OpenAI",
    "OpenAIResponses",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "Stream",
    "ToolCall",
    "Usage",
    "anthropic",
    "chat",
    "gemini",
    "openai",
    "openai_responses",
    "partial_json",
    "stream_chat",
    "stream_events",
    "stream_with_callbacks",
]

import copy
import importlib
import json
import json.decoder
import json.scanner
import logging
import os
import random
import re
import socket
import sys
import threading
import time
import weakref
import zlib
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Generator,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)
from urllib.parse import urlsplit

import sseclient


class _Deferred:
    """A module imported when it is first used, then bound in its place.

    urllib3 and http.client take ~70 ms to import, requests ~30 ms more;
    ``import llmstreamer`` does not pay that (a CLI's --help, a program that
    may never stream): the first request imports urllib3, and only a
    caller's ``session=`` or ``auth=`` needs requests. Setting an attribute
    sets it on the module, so ``mock.patch("llmstreamer.u3.X")`` works."""

    def __init__(self, alias: str, module: str) -> None:
        self.__dict__.update(alias=alias, module=module)

    def _load(self) -> Any:
        module = importlib.import_module(self.__dict__["module"])
        globals()[self.__dict__["alias"]] = module
        return module

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and inspect probes: not a reason to import
            raise AttributeError(name)
        return getattr(self._load(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._load(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._load(), name)


if TYPE_CHECKING:
    import http.client as httpclient

    import requests
    import urllib3
    import urllib3.exceptions as u3
    from urllib3 import BaseHTTPResponse as _Response
else:
    _Response = Any
    httpclient = _Deferred("httpclient", "http.client")
    requests = _Deferred("requests", "requests")
    u3 = _Deferred("u3", "urllib3.exceptions")

log = logging.getLogger("llmstreamer")

Messages = Union[str, Sequence[Mapping[str, Any]]]
Timeout = Union[float, Tuple[float, float]]

DEFAULT_TIMEOUT = (10.0, 300.0)  # (connect, read) seconds
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one SSE event larger than this is an error
_READ_SIZE = 65536


# ---------------------------------------------------------------- errors ---


class LLMStreamerError(Exception):
    """Root of every error llmstreamer raises.

    ``partial`` is a ``Completion`` with everything received before the
    error (``None`` only when no request was sent).
    """

    def __init__(self, message: str, *, partial: Optional[Completion] = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial
        self.should_retry: Optional[bool] = None  # None: decided by the error's kind


class APIError(LLMStreamerError):
    """The server answered with an error (HTTP status or an in-stream error)."""

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        body: Any = None,
        provider: Optional[str] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        partial: Optional[Completion] = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.status = status
        self.body = body
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class BadRequestError(APIError):
    """400, 413, 422: the request itself is wrong; fix it, do not retry."""


class AuthenticationError(APIError):
    """401, or no API key configured: check the key."""


class PermissionDeniedError(APIError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(APIError):
    """404: wrong model name or base URL."""


class RateLimitError(APIError):
    """429 or an in-stream rate-limit error: wait ``retry_after`` seconds."""


class ServerError(APIError):
    """5xx, 529 or an in-stream overloaded/server error."""


class APIConnectionError(LLMStreamerError, ConnectionError):
    """Could not connect, or the connection broke."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """Connect, read or stall timeout."""


class IncompleteStreamError(LLMStreamerError):
    """The stream ended before its protocol's terminal event."""


_STATUS_ERRORS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}

# In-stream error types (OpenAI "type"/"code", Anthropic error.type, Gemini
# status) mapped to the HTTP status they stand for.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "badrequesterror": 400,
    "invalid_argument": 400,
    "failed_precondition": 400,
    "authentication_error": 401,
    "unauthenticated": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "resource_exhausted": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "internal": 500,
    "internal_server_error": 500,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_HINTS = {
    401: "check the API key",
    403: "the key may not have access to this model",
    404: "check the model name and base_url",
    429: "slow down, or wait for retry_after seconds",
}


def _error_class(status: Optional[int]) -> Type[APIError]:
    if status is None:
        return APIError
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    return ServerError if status >= 500 else APIError


def _error_message(body: Any) -> Optional[str]:
    """Find the human message in any of the error bodies servers send."""
    if isinstance(body, list) and body:  # Gemini wraps errors in a list
        body = body[0]
    if isinstance(body, str):
        return body
    if not isinstance(body, dict):
        return None
    err = body.get("error", body)
    if isinstance(err, str):  # Ollama: {"error": "model not found"}
        return err
    if isinstance(err, dict):
        for key in ("message", "detail", "msg"):
            if isinstance(err.get(key), str):
                return str(err[key])
    detail = body.get("detail")  # FastAPI-style servers
    return detail if isinstance(detail, str) else None


def _stream_error(body: Dict[str, Any], provider: str) -> APIError:
    """Turn an error object that arrived inside a 200 stream into its class."""
    err = body.get("error", body)
    if not isinstance(err, dict):
        err = {"message": str(err)}
    status: Optional[int] = None
    code = err.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    else:
        for word in (err.get("type"), err.get("status"), code):
            if isinstance(word, str) and word.lower() in _ERROR_TYPE_STATUS:
                status = _ERROR_TYPE_STATUS[word.lower()]
                break
    kind = err.get("type") or err.get("status") or "error"
    message = _error_message(body) or json.dumps(body)[:500]
    cls = _error_class(status)
    return cls(f"{provider} stream error ({kind}): {message}", status=status,
               body=body, provider=provider)


# ------------------------------------------------------------ data types ---


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is raw JSON text."""

    id: str
    name: str
    arguments: str

    @property
    def args(self) -> Dict[str, Any]:
        """The arguments parsed; ValueError if they are not a JSON object."""
        if not self.arguments.strip():
            return {}
        try:
            value = json.loads(self.arguments)
        except ValueError as exc:
            raise ValueError(
                f"tool call {self.name!r} ({self.id}) has arguments that are not "
                f"valid JSON (cut off by max_tokens?): {self.arguments[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise ValueError(
                f"tool call {self.name!r} ({self.id}) arguments are JSON but not "
                f"an object: {self.arguments[:200]!r}"
            )
        return value


@dataclass(frozen=True)
class Event:
    """One streamed delta.

    ``type`` is ``text`` | ``reasoning`` | ``tool_call`` | ``usage`` | ``done``.
    """

    type: str
    text: str = ""
    index: int = 0
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: str = ""
    usage: Optional[Usage] = None
    completion: Optional[Completion] = None
    raw: Any = None


@dataclass
class Completion:
    """The result of one streamed request; ``str(completion)`` is its text.

    ``native`` is set when the turn held content that is not text, reasoning
    or a client tool call (server-tool blocks, types newer than this code):
    ``{"protocol": name, "content": [...]}``, the turn as that protocol sent
    it (Gemini's streamed text fragments joined, as they go back), which
    ``message`` carries back verbatim to the same protocol.
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: List[ToolCall] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_reason: Optional[str] = None
    usage: Optional[Usage] = None
    refusal: Optional[str] = None
    block_reason: Optional[str] = None
    signatures: List[Dict[str, Any]] = field(default_factory=list)
    citations: List[Dict[str, Any]] = field(default_factory=list)
    native: Optional[Dict[str, Any]] = None
    model: Optional[str] = None
    id: Optional[str] = None
    provider: Optional[str] = None
    ttft: Optional[float] = None
    elapsed: float = 0.0
    retries: int = 0

    def __str__(self) -> str:
        return self.text

    def json(self) -> Any:
        """The answer's text parsed as JSON (structured output, ``response_format``).

        ValueError saying why it cannot be: the answer is empty, was cut off
        by ``max_tokens`` (``finish_reason == "length"``), or is not JSON.

            point = ls.chat("A point as JSON", response_format={"type": "json_object"}).json()
        """
        why = f"finish_reason {self.finish_reason!r}" + (
            f", stop_reason {self.stop_reason!r}" if self.stop_reason else "")
        if not self.text.strip():
            raise ValueError(f"the answer is empty ({why}), so it is not JSON"
                             + (f"; the model refused: {self.refusal!r}" if self.refusal else ""))
        try:
            return json.loads(self.text)
        except ValueError as exc:
            if self.finish_reason == "length":
                raise ValueError(
                    f"the answer was cut off by max_tokens ({why}) before its JSON was "
                    f"complete ({len(self.text)} characters): raise max_tokens; "
                    "partial_json(completion.text) gives what arrived") from exc
            snippet = self.text if len(self.text) <= 200 else self.text[:200] + "..."
            raise ValueError(f"the answer is not JSON ({exc}; {why}): {snippet!r}") from exc

    @property
    def message(self) -> Dict[str, Any]:
        """This turn as an OpenAI-style assistant message, to continue the chat."""
        content = self.text or (None if self.tool_calls else "")
        msg: Dict[str, Any] = {"role": "assistant", "content": content}
        if self.refusal:
            msg["refusal"] = self.refusal
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.reasoning:
            msg["reasoning"] = self.reasoning
        if self.signatures:
            msg["signatures"] = list(self.signatures)
        if self.native:
            msg["native"] = self.native
        return msg


class _Call:
    """A tool call being assembled from fragments."""

    __slots__ = ("id", "name", "parts")

    def __init__(self, id: str, name: str) -> None:
        self.id = id
        self.name = name
        self.parts: List[str] = []


_BLOCK = 4096  # accumulated deltas are joined into one str this often
_new = object.__new__


class _State:
    """Everything one stream has received so far; becomes the Completion."""

    def __init__(self, provider: str, model: Optional[str]) -> None:
        self.provider = provider
        self.model = model
        self.id: Optional[str] = None
        self.text: List[str] = []  # the latest deltas; earlier ones are joined in blocks
        self.reasoning: List[str] = []
        self.blocks: Dict[str, List[str]] = {"text": [], "reasoning": []}
        self.refusal: List[str] = []
        self.calls: Dict[int, _Call] = {}
        self.finish_reason: Optional[str] = None
        self.stop_reason: Optional[str] = None
        self.usage: Optional[Usage] = None
        self.block_reason: Optional[str] = None
        self.signatures: List[Dict[str, Any]] = []
        self.citations: List[Dict[str, Any]] = []
        self.native: Optional[List[Dict[str, Any]]] = None  # see Completion.native
        self.ended = False  # the protocol's terminal signal arrived: EOF is fine now
        self.done = False  # nothing more to read: stop without waiting for EOF
        # content events so far (once there is one, a retry could duplicate
        # output), and at the last stall clock check
        self.deltas = self.deltas_seen = 0
        self.ttft: Optional[float] = None
        self.retries = 0
        self.t0 = self.t_content = time.monotonic()  # t_content: the last read with content
        # a parser's content not yet written where the Completion reads it
        self.flush: Optional[Callable[[], None]] = None

    # Parsers make content events here, so everything received is recorded
    # (for the Completion and .partial) the moment it is parsed.

    def delta(self, kind: str, text: str, raw: Any) -> Event:
        """Record a ``text`` or ``reasoning`` delta; the Event that carries it."""
        parts = self.text if kind == "text" else self.reasoning
        parts.append(text)
        if len(parts) >= _BLOCK:  # a str per delta costs ~60 bytes: keep one per block
            self.blocks[kind].append("".join(parts))
            parts.clear()
        self.deltas += 1
        if self.ttft is None:
            self.ttft = time.monotonic() - self.t0
        # Event(kind, text=text, raw=raw) without the frozen dataclass's
        # __init__, whose nine object.__setattr__ calls cost ~0.4 us a delta.
        # Only these three go in the instance: every other field reads its
        # default from the class attribute @dataclass leaves (copying the
        # defaults in cost another ~0.2 us; ==, repr, hash, asdict, replace,
        # copy and pickle all read fields with getattr)
        ev: Event = _new(Event)
        attrs = ev.__dict__
        attrs["type"] = kind
        attrs["text"] = text
        attrs["raw"] = raw
        return ev

    def tool(self, index: int, id: Optional[str], name: Optional[str], arguments: str,
             raw: Any) -> Event:
        """Record a tool call fragment; the Event that carries it."""
        self.call(index, id, name).parts.append(arguments)
        self.deltas += 1
        if self.ttft is None:
            self.ttft = time.monotonic() - self.t0
        return Event("tool_call", index=index, id=id, name=name, arguments=arguments, raw=raw)

    def set_usage(self, usage: Usage, raw: Any) -> Event:
        """Record the usage figures so far; the Event that carries them."""
        self.usage = usage
        return Event("usage", usage=usage, raw=raw)

    def call(self, index: int, id: Optional[str], name: Optional[str]) -> _Call:
        c = self.calls.get(index)
        if c is None:
            c = self.calls[index] = _Call(id or "", name or "")
        else:  # servers that repeat id/name on every fragment: keep the first
            c.id = c.id or id or ""
            c.name = c.name or name or ""
        return c

    def completion(self) -> Completion:
        if self.flush is not None:
            self.flush()
        return Completion(
            text="".join(self.blocks["text"] + self.text),
            reasoning="".join(self.blocks["reasoning"] + self.reasoning),
            tool_calls=[ToolCall(c.id, c.name, "".join(c.parts))
                        for _, c in sorted(self.calls.items())],
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            usage=self.usage,
            refusal="".join(self.refusal) or None,
            block_reason=self.block_reason,
            signatures=list(self.signatures),
            citations=list(self.citations),
            native=(None if self.native is None else
                    {"protocol": self.provider, "content": list(self.native)}),
            model=self.model,
            id=self.id,
            provider=self.provider,
            ttft=self.ttft,
            elapsed=time.monotonic() - self.t0,
            retries=self.retries,
        )


class _Parser:
    """One stream's protocol state: SSE events (or one whole JSON body) in,
    ``Event``s out, everything recorded in the ``_State`` as it is parsed.
    Each provider has its own; what a protocol must remember between events
    (open blocks, usage so far) lives in attributes of it."""

    def __init__(self, st: _State) -> None:
        self.st = st

    def event(self, event: sseclient.Event) -> Sequence[Event]:
        raise NotImplementedError

    def body(self, body: Any) -> Sequence[Event]:
        """A server that ignored ``stream: true``: the whole answer as JSON."""
        raise NotImplementedError


# ------------------------------------------------------------------- SSE ---


class _StreamTooLarge(Exception):
    pass


# "event:" lines seen, whole, and their event types: few per protocol
_EVENT_TYPES: Dict[bytes, str] = {}


def _event_type(line: bytes) -> str:
    """The event type an ``event`` field line sets ("message" if empty)."""
    value = line.partition(b":")[2]
    kind = (value[1:] if value[:1] == b" " else value).decode("utf-8", "replace") or "message"
    if len(_EVENT_TYPES) < 256:  # do not grow without bound
        _EVENT_TYPES[line] = kind
    return kind


class _SSEDecoder:
    """Incremental text/event-stream parser (WHATWG HTML, 9.2.6): bytes in,
    complete ``sseclient.Event`` objects out.

    sseclient-py's own ``SSEClient`` is not used for parsing because, as of
    1.9.0, it (1) misses event ends written with mixed line endings
    (``\\n\\r\\n``, ``\\r\\n\\n``, ``\\r\\r\\n``), (2) dispatches an unterminated
    trailing event at EOF, which the spec forbids, (3) rebuilds the pending
    event with ``data += line``, quadratic for large events arriving in many
    reads, and (4) raises on invalid UTF-8 where the spec decodes with
    U+FFFD. Its ``Event`` type is what we hand out.

    A read is split on the blank lines that end events. The events APIs
    send, a ``data:`` line after an ``event:`` line or alone, are made from
    their block at once; anything else (comments, ids, several data lines,
    mixed line ends, an event cut by the read) goes line by line, which is
    what the spec describes.
    """

    def __init__(self, max_size: int = MAX_EVENT_BYTES) -> None:
        self._max = max_size
        self._tail: List[bytes] = []  # pieces of a line not yet terminated
        self._tail_len = 0
        self._data: List[bytes] = []
        self._size = 0
        self._type = ""
        self._last_id: Optional[str] = None  # persists across events (spec)
        self._retry: Optional[int] = None
        self._skip_lf = False  # last read ended in CR: a following LF is its pair
        self._bom = True

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are buffered."""
        return bool(self._tail or self._data or self._type)

    def feed(self, chunk: bytes) -> List[sseclient.Event]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        last = chunk[-1:]
        # A read that ends a line (from an API: one event a read) has a line
        # end; only other reads are searched for one. (An int, not b"\n":
        # bytes.__contains__ tries its argument as an int first, and the
        # TypeError it raises and clears costs ~0.2 us.)
        if last != b"\n" and last != b"\r" and 10 not in chunk and 13 not in chunk:
            if chunk:
                self._tail.append(chunk)
                self._tail_len += len(chunk)
                if self._tail_len + self._size > self._max:
                    raise _StreamTooLarge(self._tail_len + self._size)
            return []
        if self._tail:
            self._tail.append(chunk)
            chunk = b"".join(self._tail)
            self._tail = []
            self._tail_len = 0
        if self._bom:
            # "One leading U+FEFF BYTE ORDER MARK character must be ignored."
            self._bom = False
            if chunk[:3] == b"\xef\xbb\xbf":
                chunk = chunk[3:]
        out: List[sseclient.Event] = []
        # each block before a blank line is a whole event: the chunk starts a
        # line, and after a blank line nothing of an event is pending
        lf = 13 not in chunk  # else CRLF, as Gemini writes, or mixed
        sep, data_line = (b"\n\n", b"\ndata: ") if lf else (b"\r\n\r\n", b"\r\ndata: ")
        blocks = chunk.split(sep) if len(chunk) <= self._max else [chunk]
        rest = blocks.pop()  # the lines after the last blank line
        if blocks:
            it = iter(blocks)
            if self._data or self._type:  # an event an earlier read began
                self._lines(next(it) + sep, out)
            last_id, retry, types = self._last_id, self._retry, _EVENT_TYPES
            for block in it:
                if block[:6] == b"data: " and 10 not in block and (lf or 13 not in block):
                    kind, data = "message", block[6:]
                else:
                    head, found, data = block.partition(data_line)
                    kind = types.get(head, "")  # an "event:" line seen before, or ""
                    if not (kind and found and 10 not in data and (lf or 13 not in data)):
                        self._lines(block + sep, out)
                        last_id, retry = self._last_id, self._retry
                        continue
                ev = _new(sseclient.Event)  # its __init__ call costs ~0.15 us more
                ev.id = last_id
                ev.event = kind
                ev.data = data.decode("utf-8", "replace")
                ev.retry = retry
                out.append(ev)
        if rest:
            self._lines(rest, out)
        return out

    def _lines(self, chunk: bytes, out: List[sseclient.Event]) -> None:
        """Decode ``chunk`` line by line into ``out``, as the spec describes;
        an unterminated last line is kept for the next read."""
        # bytes.splitlines breaks on CR, LF and CRLF only, which are exactly
        # the SSE line ends; str.splitlines would also break on U+2028 etc.
        lines = chunk.splitlines()
        last = chunk[-1:]
        if last == b"\r":
            self._skip_lf = True
        elif last != b"\n":
            rest = lines.pop()
            self._tail.append(rest)
            self._tail_len = len(rest)
        data = self._data
        size, limit = self._size, self._max
        for line in lines:
            if not line:  # a blank line dispatches the event
                if data:
                    out.append(self._dispatch(data))
                    data = self._data = []
                    size = 0
                self._type = ""
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
                size += len(value)
                if size > limit:
                    raise _StreamTooLarge(size)
            elif name == b"event":
                self._type = _EVENT_TYPES.get(line) or _event_type(line)
            elif name == b"id":
                if 0 not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif name == b"retry":
                if value.isdigit():
                    self._retry = int(value)
            # an empty name is a comment (": keep-alive"); others are ignored
        self._size = size

    def close(self) -> List[sseclient.Event]:
        """End of stream. "If the file ends in the middle of an event, before
        the final empty line, the incomplete event is not dispatched": unlike
        sseclient-py, nothing buffered comes out, so this is always empty."""
        self._tail, self._data, self._type = [], [], ""
        return []

    def _dispatch(self, data: List[bytes]) -> sseclient.Event:
        ev = _new(sseclient.Event)
        ev.id = self._last_id
        ev.event = self._type or "message"
        ev.data = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
        ev.retry = self._retry
        return ev


# ------------------------------------------------------------- messages ---

_ROLES = ("system", "developer", "user", "assistant", "tool")


def _messages(messages: Messages, system: Optional[str]) -> List[Dict[str, Any]]:
    """Check messages and return them as a list of OpenAI-style dicts."""
    if isinstance(messages, str):
        out: List[Dict[str, Any]] = [{"role": "user", "content": messages}]
    elif isinstance(messages, (list, tuple)):
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise TypeError(
                    f"messages[{i}] is {type(m).__name__}; expected a dict like "
                    '{"role": "user", "content": "..."}'
                )
            role = m.get("role")
            if role not in _ROLES:
                raise ValueError(
                    f"messages[{i}] has role {role!r}; expected one of: {', '.join(_ROLES)}"
                )
            if role == "tool" and not m.get("tool_call_id"):
                raise ValueError(f"messages[{i}] is a tool result without tool_call_id")
            out.append(dict(m))
        if not out:
            raise ValueError("messages is empty; pass a prompt string or a list of messages")
    else:
        raise TypeError(
            f"messages is {type(messages).__name__}; expected a prompt string or "
            'a list of dicts like [{"role": "user", "content": "..."}]'
        )
    if system is not None:
        out.insert(0, {"role": "system", "content": system})
    return out


def _text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text for kind, text in _typed_parts(content) if kind == "text")
    return str(content)


def _typed_parts(parts: Any) -> Iterator[Tuple[str, str]]:
    """("text" | "reasoning", text) for each typed content part that has text:
    ``{"type": "text", "text": ...}``, and reasoning parts such as Mistral's
    ``{"type": "thinking", "thinking": [{"type": "text", "text": ...}]}``."""
    for p in parts if isinstance(parts, list) else ():
        if not isinstance(p, Mapping):
            continue
        kind = p.get("type")
        if kind in ("thinking", "reasoning"):
            inner = p.get(kind)
            text = inner if isinstance(inner, str) else (
                _text_of(inner) if isinstance(inner, list) else "")
            if text:
                yield "reasoning", text
        elif isinstance(p.get("text"), str) and p["text"]:
            yield "text", p["text"]


# ------------------------------------------------------------- transport ---


@dataclass
class _Request:
    url: str
    headers: Dict[str, str] = field(repr=False)  # holds the key
    body: Dict[str, Any] = field(repr=False)
    model: str = ""


def _endpoint(base_url: str, path: str) -> str:
    """``path`` appended to ``base_url``, keeping a query string the base URL
    carries (Azure's ``?api-version=...``): ``path`` may hold a query of its own."""
    base, _, query = base_url.partition("?")
    url = base.rstrip("/") + path
    if query:
        url += ("&" if "?" in path else "?") + query
    return url


def _read_timeout(timeout: Timeout) -> float:
    return timeout[1] if isinstance(timeout, tuple) else timeout


def _chain(exc: BaseException) -> List[BaseException]:
    """A urllib3 error and the errors it wraps, the root last (requests ->
    MaxRetryError -> NewConnectionError, or ProtocolError('Connection
    aborted.', RemoteDisconnected))."""
    out = [exc]
    for _ in range(8):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if inner is None:
            break
        exc = inner
        out.append(exc)
    return out


def _chain_text(exc: BaseException) -> str:
    """The text of an exception and everything it was raised from or during."""
    out, seen = [], 0
    cur: Optional[BaseException] = exc
    while cur is not None and seen < 12:
        out.append(str(_chain(cur)[-1]))
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return " / ".join(out)


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, e.g. 'Connection refused'."""
    text = str(_chain(exc)[-1])
    head, sep, rest = text.partition(": ")  # "HTTPConnection(host=..., port=...): why"
    return rest if sep and "Connection(" in head and head.endswith(")") else text


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds the server asked us to wait (retry-after-ms, Retry-After)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # loaded by http.client by now; not at import

    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _request_id(headers: Mapping[str, str]) -> Optional[str]:
    for name in ("x-request-id", "request-id", "x-goog-request-id", "cf-ray"):
        if headers.get(name):
            return headers[name]
    return None


_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)


def _mask(key: str) -> str:
    return f"{key[:3]}...{key[-2:]}" if len(key) > 8 else "***"


def _http_error(resp: _Response, provider: str, env_key: str) -> APIError:
    """Build the typed error for a non-2xx response (reads at most 64 KiB)."""
    raw = resp.read(65536, decode_content=True) or b""
    text = raw.decode("utf-8", "replace")  # a key echoed in it is masked by _scrub
    body: Any = text
    message: Optional[str] = None
    try:
        body = json.loads(text)
        message = _error_message(body)
    except ValueError:
        if "<" in text:  # an HTML page from a proxy or gateway
            message = " ".join(_TAG.sub(" ", text).split())[:300]
        else:
            message = text.strip()[:300]
    status = resp.status
    if status == 400 and '"API_KEY_INVALID"' in text:
        status = 401  # Gemini answers a bad key with 400 INVALID_ARGUMENT
    hint = _HINTS.get(status, "")
    if status == 401:
        hint = f"check the API key (api_key= or {env_key})"
    detail = message or resp.reason or "no message"
    text = (f"{resp.status} {resp.reason or ''} from {provider}: {detail}"
            .replace("  ", " "))
    if hint:
        text += f" ({hint})"
    cls = _error_class(status)
    exc = cls(text, status=status, body=body, provider=provider,
              request_id=_request_id(resp.headers), retry_after=_retry_after(resp.headers))
    should = resp.headers.get("x-should-retry", "").lower()
    exc.should_retry = {"true": True, "false": False}.get(should)
    return exc


_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _retryable(exc: LLMStreamerError) -> bool:
    if exc.should_retry is not None:  # the server's x-should-retry, or ours
        return exc.should_retry
    if isinstance(exc, (APIConnectionError, IncompleteStreamError)):
        return True  # only ever asked before any content was shown
    if not isinstance(exc, APIError):
        return False
    return exc.status in _RETRY_STATUSES


def _read_chunks(raw: Any) -> Iterator[bytes]:
    """Yield body bytes the moment they arrive, already un-gzipped.

    ``read1`` returns what the socket has; ``read(n)``, ``iter_content`` and
    ``iter_lines`` wait for n bytes, which on a close-delimited body holds an
    event back until more bytes (or the close) arrive.

    Chunked and close-delimited bodies, plain or gzip, are read straight from
    the connection's buffered reader: one ``read1`` per network read, however
    many chunks (events) it holds. urllib3's ``read1`` returns one chunk per
    call through a dozen Python frames, which cost more than parsing the
    event. Anything else (Content-Length, deflate, br, zstd, a response that
    is not http.client's) is read through urllib3.
    """
    fp = getattr(raw, "_fp", None)
    sock = getattr(fp, "fp", None)
    if (isinstance(fp, httpclient.HTTPResponse) and sock is not None
            and getattr(raw, "_fp_bytes_read", None) == 0
            and (fp.chunk_left is None if fp.chunked else fp.length is None)):
        encoding = (raw.headers.get("content-encoding") or "").strip().lower()
        if encoding in ("", "identity", "gzip", "x-gzip"):
            body = _dechunk(raw, fp, sock.read1) if fp.chunked else _until_eof(sock.read1)
            yield from _gunzip(body) if encoding.endswith("gzip") else body
            return
    read1 = getattr(raw, "read1", None)
    if read1 is None:
        raise LLMStreamerError(
            "llmstreamer needs urllib3 >= 2.3 for streaming; run: pip install -U urllib3"
        )
    while True:
        chunk = read1(_READ_SIZE, decode_content=True)
        if not chunk:
            return
        yield chunk


def _read1(read1: Callable[[int], bytes]) -> bytes:
    """One read; socket errors leave as urllib3's, as urllib3's reads raise them."""
    try:
        return read1(_READ_SIZE)
    except socket.timeout as exc:
        raise u3.ReadTimeoutError(None, "", f"Read timed out. ({exc})") from exc  # type: ignore[arg-type]
    except OSError as exc:
        raise u3.ProtocolError(f"Connection broken: {exc!r}", exc) from exc


def _until_eof(read1: Callable[[int], bytes]) -> Iterator[bytes]:
    while True:
        data = _read1(read1)
        if not data:
            return
        yield data


def _dechunk(raw: Any, fp: httpclient.HTTPResponse,
             read1: Callable[[int], bytes]) -> Iterator[bytes]:
    """Undo chunked transfer coding (RFC 9112, 7.1) as bytes arrive: what a
    read returns is yielded at once, whole chunks or not, so no event waits
    for later bytes. After the last chunk and its trailer section the
    connection goes back to urllib3's pool, as urllib3 does it."""
    buf = b""  # an unterminated size line
    left = 0  # data bytes of the current chunk still to come
    skip = 0  # bytes of the CRLF after a chunk's data still to come
    last = False  # the last chunk was seen: reading the trailer section
    while True:
        data = _read1(read1)
        if not data:
            raise u3.ProtocolError("Response ended prematurely: IncompleteRead in a "
                                   "chunked body")
        if buf:
            data, buf = buf + data, b""
        out = []
        pos, end = 0, len(data)
        if left:  # the rest of a chunk that began in an earlier read
            stop = min(left, end)
            out.append(data[:stop])
            left -= stop
            pos = stop
            skip = 0 if left else 2
        if skip:  # the CRLF after a chunk's data, split across reads
            step = min(skip, end - pos)
            pos += step
            skip -= step
        while pos < end:
            eol = data.find(b"\n", pos)
            if eol < 0:
                buf = data[pos:]
                if len(buf) > 4096:
                    raise u3.ProtocolError(f"InvalidChunkLength(got length {buf[:40]!r}...)")
                break
            if last:  # a trailer field, or the blank line that ends the body
                line = data[pos:eol].strip()
                pos = eol + 1
                if line:
                    continue
                if out:
                    yield b"".join(out)
                if pos == end:  # nothing was read past the body: reusable
                    fp.close()
                    raw.release_conn()
                return
            try:  # int() ignores the surrounding whitespace and CR
                size = int(data[pos:eol], 16)
            except ValueError:  # a chunk extension ("1a;name=value"), or garbage
                try:
                    size = int(data[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    size = -1
            start = eol + 1
            stop = start + size
            if size > 0 and stop + 2 <= end:  # the whole chunk and its CRLF are here
                out.append(data[start:stop])
                pos = stop + 2
                continue
            if size < 0:
                raise u3.ProtocolError(f"InvalidChunkLength(got length {data[pos:eol][:40]!r})")
            if not size:
                last, pos = True, start
                continue
            out.append(data[start:stop])
            if stop <= end:  # all its data, part of its CRLF
                skip, pos = 2 - (end - stop), end
            else:  # the rest of its data comes in later reads
                left, pos = stop - end, end
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)


def _gunzip(body: Iterator[bytes]) -> Iterator[bytes]:
    """Content-Encoding: gzip, of one or more members, inflated as it arrives,
    at most 1 MiB per piece (a compression bomb cannot make one piece huge).

    Every turn of the inner loop consumes input or yields output: a member's
    end is checked before ``unconsumed_tail``, which still holds the bytes
    past that end (they are in ``unused_data`` too), and inflating them
    again would return nothing, forever."""
    limit = 16 * _READ_SIZE
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for data in body:
        while data:
            try:
                out = dec.decompress(data, limit)
            except zlib.error as exc:
                raise u3.DecodeError(f"bad gzip body: {exc}") from exc
            if out:
                yield out
            if dec.eof:  # a member ended; another may follow
                data = dec.unused_data
                dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif dec.unconsumed_tail:  # output was capped at `limit`: go on
                data = dec.unconsumed_tail
            else:
                data = b""
    rest = dec.flush()
    if rest:
        yield rest


def _release(resp: _Response) -> None:
    """Done with a response: its connection is closed unless it was read to
    its end (then it is in the pool already), and its pool slot freed."""
    resp.close()
    resp.release_conn()


_DRAIN_TIMEOUT = 0.05  # seconds to wait for the bytes after a terminal event


def _drain(resp: _Response, chunks: Iterator[bytes]) -> None:
    """Read what follows the terminal event (usually just the chunked
    terminator), so urllib3 returns the connection to the pool; close()
    would otherwise drop it, and the next call would pay a new TLS handshake.
    A server that keeps talking past its end gets the connection closed."""
    sock = getattr(resp.connection, "sock", None)
    if sock is None:
        return
    try:
        sock.settimeout(_DRAIN_TIMEOUT)  # urllib3 sets it again on reuse
        for _ in range(4):
            if next(chunks, None) is None:
                return
    except (OSError, u3.HTTPError):
        pass  # not drained: close() drops the connection


# ---------------------------------------------------- limits and closing ---


class _Control:
    """What the reader, the watchdog and ``Stream.close()`` share for one call.

    A read blocked on a silent server cannot look at a clock. The watchdog
    thread (for ``deadline`` and ``stall_timeout``) and ``close()`` from any
    thread shut the call's socket down, which makes the blocked read return at
    once; the reader then finds ``why`` set and raises (or stops) accordingly.
    """

    def __init__(self, deadline: Optional[float], stall: Optional[float]) -> None:
        self.t0 = self.quiet = time.monotonic()  # quiet: when the stall clock starts
        self.deadline_at = None if deadline is None else self.t0 + deadline
        self.deadline, self.stall = deadline, stall
        self.st: Optional[_State] = None  # the attempt being read
        self.gen: Any = None  # weakref to the reading generator: is it running?
        self.sock: Optional[socket.socket] = None
        self.why: Optional[str] = None  # "deadline", "stall", "closed"
        self.finished = False
        self.completion: Optional[Completion] = None
        self.thrown: Optional[BaseException] = None  # what Stream.throw() raised inside
        self.lock = threading.Lock()
        self.wake = threading.Event()  # interrupts a retry's wait

    def attach(self, sock: Optional[socket.socket]) -> None:
        """The socket this call reads now (a new one per attempt)."""
        with self.lock:
            self.sock = sock
            killed = self.why is not None
        if killed:
            _shutdown(sock)

    def kill(self, why: str) -> None:
        with self.lock:
            if self.finished or self.why is not None:
                return
            self.why = why
            sock = self.sock
        self.wake.set()
        _shutdown(sock)

    def left(self) -> Optional[float]:
        """Seconds to the deadline, or None without one."""
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def due(self, now: float) -> Optional[float]:
        """When the watchdog should look next, or None: nothing to watch."""
        if self.finished or self.why is not None:
            return None
        times = [] if self.deadline_at is None else [self.deadline_at]
        if self.stall is not None:
            times.append(max(self.quiet_since() + self.stall, now + 0.01))
        return min(times) if times else None

    def check(self, now: float) -> None:
        """The watchdog's look: kill a call past a limit."""
        gen = self.gen() if self.gen is not None else None
        # a consumer busy between events is not a silent server: only a
        # running (reading) generator can stall
        why = self.expired(now, reading=gen is not None and gen.gi_running)
        if why:
            self.kill(why)

    def expired(self, now: float, reading: bool = True) -> Optional[str]:
        """The limit this call is past ("deadline", "stall"), or None."""
        if self.deadline_at is not None and now >= self.deadline_at:
            return "deadline"
        if self.stall is not None and reading and now - self.quiet_since() >= self.stall:
            return "stall"
        return None

    def quiet_since(self) -> float:
        """When content last arrived (or the attempt began, or will)."""
        return self.st.t_content if self.st is not None else self.quiet

    def error(self, name: str) -> LLMStreamerError:
        if self.why == "deadline":
            return APITimeoutError(f"{name} stream passed its deadline of {self.deadline}s")
        if self.why == "stall":
            quiet = time.monotonic() - self.quiet_since()
            return APITimeoutError(f"{name} sent no content for {quiet:.1f}s "
                                   f"(stall_timeout={self.stall}s)")
        return APIConnectionError(f"the {name} stream was closed")


def _shutdown(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Watchdog:
    """One daemon thread that wakes when some call's deadline or stall limit
    comes due (started with the first call that has one; again after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.calls: List[_Control] = []
        thread = threading.Thread(target=self.run, name="llmstreamer-watchdog", daemon=True)
        thread.start()

    def add(self, control: _Control) -> None:
        with self.cond:
            self.calls.append(control)
            self.cond.notify()

    def run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for c in self.calls:
                    c.check(now)
                now = time.monotonic()
                dues = [(c.due(now), c) for c in self.calls]
                self.calls = [c for d, c in dues if d is not None]
                wait = min((d for d, _ in dues if d is not None), default=None)
                self.cond.wait(None if wait is None else max(wait - now, 0.005))


_watchdog: Optional[_Watchdog] = None
_watchdog_lock = threading.Lock()


def _watch(control: _Control) -> None:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or _watchdog.pid != os.getpid():  # threads do not survive fork
            _watchdog = _Watchdog()
        dog = _watchdog
    dog.add(control)


_local = threading.local()  # the _Control of the call this thread is sending


def _attach(sock: Any) -> None:
    control = getattr(_local, "control", None)
    if control is not None:
        control.attach(sock)


_pool_classes: Optional[Dict[str, Any]] = None


def _pool_manager(proxy: Optional[str], ca: Optional[str]) -> urllib3.PoolManager:
    """urllib3's pool manager (through ``proxy``, if given), verifying TLS
    against ``ca`` or certifi's bundle as requests does, with connections that
    (1) tell the call sending on them which socket to shut down, so a limit or
    close() can end a request still waiting for its headers, and (2) read past
    1xx interim responses (103 Early Hints, which CDNs send) to the final one.
    urllib3 is imported with the first request; requests only for a caller's
    ``session=`` or ``auth=``."""
    global _pool_classes
    import urllib3

    if _pool_classes is None:
        import urllib3.connection
        import urllib3.connectionpool

        class Response(httpclient.HTTPResponse):
            def _read_status(self) -> Any:
                for _ in range(64):
                    version, status, reason = super()._read_status()  # type: ignore[misc]
                    if not 100 <= status < 200 or status == 101:
                        return version, status, reason
                    httpclient._read_headers(self.fp)  # type: ignore[attr-defined]
                raise httpclient.HTTPException("too many interim (1xx) responses")

        def connection(base: Any) -> Any:
            class Connection(base):  # type: ignore[misc]
                response_class = Response

                def connect(self) -> None:
                    super().connect()
                    _attach(self.sock)

                def request(self, *args: Any, **kwargs: Any) -> None:
                    if self.sock is not None:  # a pooled connection
                        _attach(self.sock)
                    super().request(*args, **kwargs)

            return Connection

        class Pool(urllib3.connectionpool.HTTPConnectionPool):
            ConnectionCls = connection(urllib3.connection.HTTPConnection)

        class TLSPool(urllib3.connectionpool.HTTPSConnectionPool):
            ConnectionCls = connection(urllib3.connection.HTTPSConnection)

        _pool_classes = {"http": Pool, "https": TLSPool}
    if ca is None:
        try:
            import certifi

            ca = certifi.where()
        except ImportError:  # a distribution's requests without certifi: the system's CAs
            pass
    # many threads share one provider: keep a connection per thread
    kw: Dict[str, Any] = {"num_pools": 4, "maxsize": 256, "cert_reqs": "CERT_REQUIRED"}
    if ca is not None:
        kw["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
    if proxy is None:
        manager = urllib3.PoolManager(**kw)
    elif proxy.lower().startswith("socks"):
        try:  # its own connection classes: limits end it only by the capped timeouts
            import warnings

            with warnings.catch_warnings():  # urllib3 warns before it raises
                warnings.simplefilter("ignore")
                from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:
            err = APIConnectionError(f"the proxy {_safe_url(proxy)} is a SOCKS proxy: "
                                     "pip install pysocks")
            err.should_retry = False  # it will not be installed by the next attempt
            raise err from None
        return SOCKSProxyManager(proxy, **kw)
    else:
        auth = urlsplit(proxy)
        if auth.username is not None:  # requests sends a proxy URL's user:password
            from urllib.parse import unquote

            kw["proxy_headers"] = urllib3.util.make_headers(
                proxy_basic_auth=f"{unquote(auth.username)}:{unquote(auth.password or '')}")
        manager = urllib3.ProxyManager(proxy, **kw)
    manager.pool_classes_by_scheme = _pool_classes
    return manager


def _env(name: str) -> Optional[str]:
    """A proxy variable as urllib reads it: the lowercase name first, and
    HTTP_PROXY not at all in a CGI script (httpoxy)."""
    value = os.environ.get(name)
    if value is None and not (name == "http_proxy" and "REQUEST_METHOD" in os.environ):
        value = os.environ.get(name.upper())
    return value


def _env_proxy(url: str) -> Optional[str]:
    """The proxy the environment names for ``url``, as requests reads it
    (``https_proxy``, ``http_proxy``, ``all_proxy``, ``no_proxy`` with host
    suffixes, ``host:port``, IP networks and ``*``), or None. A few dict
    lookups: read on every request, so a changed variable is seen."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for entry in (_env("no_proxy") or "").replace(" ", "").lower().split(","):
        entry = entry.lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry)
                                       or f"{host}:{parts.port}" == entry
                                       or ("/" in entry and _in_network(host, entry)))):
            return None
    for name in (f"{parts.scheme}_proxy", "all_proxy"):
        proxy = _env(name)
        if proxy:
            return proxy if "://" in proxy else "http://" + proxy
    return None


def _in_network(host: str, network: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:  # not an IP address, or not a network
        return False


# --------------------------------------------------------------- secrets ---

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key",
                             "proxy-authorization"})
_SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "token", "access_token",
                            "sig", "signature", "password"})


def _header_safe(value: str) -> Optional[int]:
    """The position of the first character that cannot go in a header value
    (not Latin-1, or a control character), or None if it can."""
    for i, ch in enumerate(value):
        if ord(ch) > 255 or (ord(ch) < 32 and ch != "\t") or ord(ch) == 127:
            return i
    return None


def _url_secrets(url: str) -> List[str]:
    parts = urlsplit(url)
    out = [parts.password] if parts.password else []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and name.lower() in _SECRET_PARAMS:
            out.append(value)
    return out


def _safe_url(url: str, secrets: Iterable[str] = ()) -> str:
    """The URL with its credentials masked, fit for a message or a log line."""
    return _redact_text(url, list(secrets) + _url_secrets(url))


def _redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, _mask(secret))
    return text


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return _redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    return value


def _scrub(exc: LLMStreamerError, secrets: Sequence[str]) -> None:
    """Mask every secret in an error we raise, even one a server echoed; drop
    a chained low-level exception whose text holds one (a traceback shows it)."""
    if not secrets:
        return
    exc.message = _redact_text(exc.message, secrets)
    exc.args = (exc.message, *exc.args[1:])
    if isinstance(exc, APIError):
        exc.body = _redact(exc.body, secrets)
    cause: Optional[BaseException] = exc.__cause__ or exc.__context__
    for _ in range(8):
        if cause is None:
            break
        if _redact_text(repr(cause) + str(cause), secrets) != repr(cause) + str(cause):
            exc.__cause__ = None
            exc.__suppress_context__ = True
            break
        cause = cause.__cause__ or cause.__context__


# ---------------------------------------------------------------- Stream ---

T = TypeVar("T")


class Stream(Generic[T]):
    """What ``stream_chat`` (text) and ``stream_events`` (events) return.

    Iterate it; afterwards ``.completion`` is the ``Completion`` (``None``
    until the stream ended). It keeps the generator protocol (``next``,
    ``send``, ``throw``, ``close``, the Completion as ``StopIteration.value``)
    and is a context manager that closes it. ``close()`` may be called from
    any thread: a reader blocked on a silent server stops at once.

        with ls.openai.stream_chat("Hi") as s:
            for text in s:
                print(text, end="")
        print(s.completion.usage)
    """

    __slots__ = ("_control", "_gen")

    def __init__(self, gen: Generator[T, Any, Any], control: _Control) -> None:
        self._gen = gen
        self._control = control

    @property
    def completion(self) -> Optional[Completion]:
        return self._control.completion

    @property
    def closed(self) -> bool:
        return self._control.why == "closed"

    def __iter__(self) -> Iterator[T]:
        # the generator itself: a for loop pays nothing per item for this class
        return self._gen

    def __next__(self) -> T:
        return next(self._gen)

    def send(self, value: Any) -> T:
        return self._gen.send(value)

    def throw(self, *args: Any) -> T:
        exc = args[1] if len(args) > 1 and args[1] is not None else args[0]
        if isinstance(exc, type):
            exc = exc()
            args = (exc,)
        self._control.thrown = exc
        return self._gen.throw(*args)

    def close(self) -> None:
        """Stop the stream and close its connection, from any thread."""
        self._control.kill("closed")
        try:
            self._gen.close()
        except ValueError:  # running in another thread: the kill ends it there
            pass

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("done" if self.completion is not None else
                 self._control.why or ("ended" if self._control.finished else "open"))
        return f"<llmstreamer.Stream {state}>"


# ------------------------------------------------------------- providers ---

# the options every provider takes (and translates)
_COMMON_OPTIONS = frozenset({"system", "max_tokens", "temperature", "stop", "tools",
                             "tool_choice", "response_format"})


def _closest(name: str, names: Iterable[str]) -> Optional[str]:
    """The name within edit distance 2 of ``name`` (the nearest), or None."""
    best: Tuple[int, str] = (3, "")
    for known in sorted(names):
        best = min(best, (_distance(name.lower(), known.lower()), known))
    return best[1] or None


def _distance(a: str, b: str) -> int:
    """Edit distance: insertions, deletions, substitutions and swaps of two
    neighbours each count 1 ("temprature", "max_tokesn" are 1 away)."""
    if abs(len(a) - len(b)) > 2:
        return 3  # more than we care about, and keyword lengths are unbounded
    prev2: List[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            row.append(d)
        prev2, prev = prev, row
    return prev[-1]


class _Provider:
    """The shared core: request, retries, reading, accumulation, errors."""

    name = ""
    key_envs: Tuple[str, ...] = ()  # tried in order
    base_env = ""
    model_env = ""
    default_base_url = ""
    default_model = ""
    _retry_base = 0.5  # seconds; doubled per retry, with jitter
    _retry_max_wait = 60.0  # longer Retry-After requests fail at once

    def __init__(
        self,
        api_key: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        model: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        session: Optional[requests.Session] = None,
        stall_timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        auth: Any = None,
    ) -> None:
        """Configure once, reuse from any number of threads.

        api_key: else the provider's environment variable, read at call time.
        base_url: the server; else ``<PROVIDER>_BASE_URL`` or the hosted API.
        model: the default model; else ``<PROVIDER>_MODEL`` or a built-in default.
        headers: extra HTTP headers for every request.
        timeout: seconds, or ``(connect, read)``; read is the longest silence.
        max_retries: retries before the first delta (never after).
        session: a ``requests.Session`` of your own (proxies, certificates, mounts).
        stall_timeout: raise ``APITimeoutError`` after this long without content,
            however many keep-alives arrive.
        deadline: seconds for a whole call: connecting, headers, body,
            retries and the waits between them.
        auth: anything ``requests`` accepts as ``auth=`` (an ``AuthBase`` that
            refreshes an Azure Entra or Google Cloud token), on every attempt.
        """
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.api_key = api_key
        self.base_url = base_url
        self.model = model
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_retries = max_retries
        self.stall_timeout = stall_timeout  # keep-alives but no content this long
        self.deadline = deadline  # seconds for a whole stream, retries included
        self.auth = auth
        self._session = session  # the caller's; else urllib3's pools, made as needed
        self._pools: Dict[Tuple[Optional[str], Optional[str]], urllib3.PoolManager] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._no_stream_options: Set[str] = set()  # base URLs that rejected it

    def __repr__(self) -> str:
        key = self._key()
        masked = _mask(key) if key else None
        base = _safe_url(self._base_url(), self._secrets())
        return (f"{type(self).__name__}(base_url={base!r}, "
                f"model={self._model(None)!r}, api_key={masked!r})")

    # settings are read at call time, so the default instances follow the env

    def _key(self) -> Optional[str]:
        # a key read from a file or pasted keeps its newline: strip what
        # surrounds it, never what is inside
        if self.api_key and self.api_key.strip():
            return self.api_key.strip()
        return next((os.environ[e].strip() for e in self.key_envs
                     if os.environ.get(e, "").strip()), None)

    def _secrets(self) -> List[str]:
        """Every configured secret, to be masked wherever a message could show it."""
        out = [self._key() or ""]
        for name, value in self.headers.items():
            if name.lower() in _SECRET_HEADERS and isinstance(value, str):
                out += [value, value.split(" ", 1)[-1]]  # "Bearer TOKEN": TOKEN too
        out += _url_secrets(self._base_url())
        # shorter values ("x", "none": placeholders for servers that need no
        # key) are no secrets, and masking them would mangle ordinary words
        return sorted({x for x in out if len(x) >= 6}, key=len, reverse=True)

    def _base_url(self) -> str:
        url = self.base_url or (os.environ.get(self.base_env) if self.base_env else None)
        base, sep, query = (url or self.default_base_url).partition("?")
        return base.rstrip("/") + sep + query

    def _model(self, model: Optional[str]) -> str:
        return model or self.model or os.environ.get(self.model_env) or self.default_model

    def _require_key(self, base_url: str) -> Optional[str]:
        key = self._key()
        if key is not None and _header_safe(key) is not None:
            where = _header_safe(key) or 0
            raise AuthenticationError(
                f"the API key for {self.name} has a character that cannot be sent in an "
                f"HTTP header (U+{ord(key[where]):04X} at position {where}; a zero-width "
                "space or line break pasted with it?): copy the key again",
                provider=self.name)
        for name, value in self.headers.items():
            if not isinstance(value, str) or _header_safe(value) is not None:
                raise ValueError(f"headers[{name!r}] has a character that cannot be sent in "
                                 "an HTTP header (a line break or a non-Latin-1 character)")
        if (not key and self.auth is None
                and urlsplit(base_url).hostname == urlsplit(self.default_base_url).hostname):
            raise AuthenticationError(
                f"no API key for {self.name}: pass api_key= or set "
                f"{' or '.join(self.key_envs)}",
                provider=self.name,
            )
        return key

    def _pool(self, url: str) -> urllib3.PoolManager:
        """The urllib3 pool manager for ``url``: through the proxy the
        environment names for it now, trusting ``REQUESTS_CA_BUNDLE`` or
        ``CURL_CA_BUNDLE`` if set, as requests would."""
        proxy = _env_proxy(url)
        ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not read its parent's sockets
                self._pools, self._pid = {}, os.getpid()
            manager = self._pools.get((proxy, ca))
            if manager is None:
                manager = self._pools[proxy, ca] = _pool_manager(proxy, ca)
            return manager

    # a protocol adapter is a request builder and a _Parser class

    _parser: Type[_Parser] = _Parser
    # the protocol's documented request body fields: passed through as given,
    # never taken for a misspelt option
    _body_fields: FrozenSet[str] = frozenset()
    # this provider's options people use most, besides _COMMON_OPTIONS: a
    # keyword a typo away from one of them is an error, not a body field
    _options: FrozenSet[str] = frozenset()

    def _check_options(self, options: Mapping[str, Any]) -> None:
        """TypeError for a keyword that looks like a misspelt option."""
        known = _COMMON_OPTIONS | self._options
        for name in options:
            if name in known or name in self._body_fields:
                continue
            meant = _closest(name, known)
            if meant is not None:
                raise TypeError(f"unknown option {name!r}; did you mean {meant!r}? ({self.name} "
                                "passes keywords it does not know into the request body, "
                                "so a typo would be sent silently)")

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        raise NotImplementedError

    # public API

    def stream_events(self, messages: Messages, model: Optional[str] = None,
                      **options: Any) -> Stream[Event]:
        """Stream every delta as a typed ``Event``; the last one is ``done``.

        Arguments are checked here, before any network I/O: TypeError or
        ValueError for bad messages or a misspelt option (``max_token``),
        AuthenticationError for a missing key.
        Errors while streaming are ``LLMStreamerError`` with ``.partial``.

            for ev in ls.openai.stream_events("Hi"):
                print(ev.type, ev.text)
        """
        self._check_options(options)
        system = options.pop("system", None)
        msgs = _messages(messages, system)
        base_url = self._base_url()
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url {_safe_url(base_url, self._secrets())!r} has no "
                             "http:// or https:// scheme: write it as http://HOST:PORT/...")
        key = self._require_key(base_url)
        req = self._build(msgs, self._model(model), base_url, key, options)
        control = _Control(self.deadline, self.stall_timeout)
        gen = self._stream(req, base_url, control)
        control.gen = weakref.ref(gen)
        if control.deadline is not None or control.stall is not None:
            _watch(control)
        return Stream(gen, control)

    def stream_chat(self, messages: Messages, model: Optional[str] = None,
                    **options: Any) -> Stream[str]:
        """Stream the text deltas; afterwards ``.completion`` is the ``Completion``.

            for text in (s := ls.openai.stream_chat("Tell me a joke")):
                print(text, end="", flush=True)
        """
        events = self.stream_events(messages, model, **options)
        return Stream(_texts(events), events._control)

    def chat(self, messages: Messages, model: Optional[str] = None,
             **options: Any) -> Completion:
        """Stream the whole answer and return the ``Completion``.

            print(ls.openai.chat("Tell me a joke").text)
        """
        stream = self.stream_events(messages, model, **options)
        for _ in stream:
            pass
        assert stream.completion is not None  # the stream always ends with "done"
        return stream.completion

    # the core

    def _stream(self, req: _Request, base_url: str, control: _Control
                ) -> Generator[Event, None, Optional[Completion]]:
        retries = 0
        try:
            while True:
                st = _State(self.name, req.model)
                st.retries, st.t0 = retries, control.t0  # ttft and deadline count retries
                control.st = st
                try:
                    whole, chunks, finish = self._send(req, control)
                    read = False
                    try:
                        yield from self._events(chunks, st, whole, control)
                        read = True
                    finally:
                        finish(read)
                    return control.completion
                except LLMStreamerError as raised:
                    if control.why == "closed":
                        return None  # closed from another thread: a clean stop
                    # a limit that the watchdog enforced by ending the read
                    exc = control.error(self.name) if control.why else raised
                    exc.partial = st.completion()
                    _scrub(exc, self._secrets())
                    retry = None if control.why else self._fallback(req, base_url, exc, st)
                    if retry is not None:
                        req = retry
                        continue
                    # a limit that fired is final: never retried
                    wait = None if control.why else self._retry_wait(exc, st, control)
                    if wait is None:
                        raise exc from exc.__cause__
                    retries += 1
                    log.info("%s: retry %d/%d in %.2fs after: %s", self.name,
                             retries, self.max_retries, wait, exc)
                    control.st, control.quiet = None, time.monotonic() + wait
                    if control.wake.wait(wait):  # closed, or past the deadline
                        if control.why == "closed":
                            return None
                        exc = control.error(self.name)
                        exc.partial = st.completion()
                        raise exc from None
        finally:
            control.finished = True
            control.sock = None

    def _fallback(self, req: _Request, base_url: str, exc: LLMStreamerError,
                  st: _State) -> Optional[_Request]:
        """A request to send again at once, uncounted, when a server rejected
        something optional in it; None otherwise."""
        return None

    def _retry_wait(self, exc: LLMStreamerError, st: _State,
                    control: _Control) -> Optional[float]:
        """Seconds to wait before retrying, or None to raise ``exc`` now."""
        if st.deltas or st.retries >= self.max_retries or not _retryable(exc):
            return None  # never retry once content arrived: no duplicates
        wait = exc.retry_after if isinstance(exc, APIError) else None
        if wait is None:
            wait = float(self._retry_base * 2 ** st.retries * (0.5 + random.random() / 2))
        elif wait > self._retry_max_wait:
            return None
        left = control.left()
        if left is not None and wait >= left:
            return None  # a retry after the deadline cannot be waited for
        return wait

    def _send(self, req: _Request, control: _Control
              ) -> Tuple[bool, Iterator[bytes], Callable[[bool], None]]:
        """One attempt: send ``req``; (the body is one JSON document, its
        bytes, ``finish(read)`` to call once done with them). The only step
        that touches the network (``FakeProvider`` plays a script instead)."""
        resp = self._open(req, control)
        try:
            control.attach(getattr(resp.connection, "sock", None))
            whole = self._check(resp, req)
        except BaseException:
            _release(resp)
            raise
        chunks = _read_chunks(resp)

        def finish(read: bool) -> None:
            try:
                if read:
                    _drain(resp, chunks)  # the caller read past "done": reuse it
            finally:
                _release(resp)

        return whole, chunks, finish

    def _open(self, req: _Request, control: _Control) -> _Response:
        """Send the request: urllib3's response, its body unread. Failures to
        get one leave as typed errors."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: POST %s model=%s", self.name,
                      _safe_url(req.url, self._secrets()), req.model)
        try:  # requests' json=, compact
            body = json.dumps(req.body, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as exc:
            raise ValueError(f"the request cannot be sent as JSON: {exc}") from None
        headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate",
                   "User-Agent": f"llmstreamer/{__version__}", **req.headers}
        _local.control = control  # our connections attach their socket to it
        try:
            try:
                return self._post(req.url, headers, body, control)
            except (OSError, u3.HTTPError) as exc:
                # Servers such as llama.cpp's advertise keep-alive yet close after a
                # stream; a request sent on such a pooled connection meets a close
                # before any response byte. Nothing was received, so nothing can be
                # duplicated: send it once more (on a new connection), uncounted.
                stale = (httpclient.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                if control.why or not isinstance(_chain(exc)[-1], stale):
                    raise  # a limit or close() shut the socket: not a stale connection
                log.debug("%s: pooled connection was closed by the server; sending again",
                          self.name)
            return self._post(req.url, headers, body, control)
        except LLMStreamerError:
            raise
        except Exception as exc:
            err = self._send_error(exc, _safe_url(req.url, self._secrets()))
            if err is exc:
                raise
            # what urllib3 said of a refused header could quote its value: not chained
            raise err from (None if isinstance(err, ValueError) else exc)
        finally:
            _local.control = None

    def _post(self, url: str, headers: Dict[str, str], body: bytes, control: _Control
              ) -> _Response:
        connect, read = (self.timeout if isinstance(self.timeout, tuple)
                         else (self.timeout, self.timeout))
        left = control.left()
        if left is not None:  # no single wait may outlast the deadline
            left = max(left, 0.001)
            connect, read = min(connect, left), min(read, left)
        if self._session is not None:  # the caller's requests.Session
            return self._session.post(url, data=body, headers=headers, stream=True,
                                      timeout=(connect, read), allow_redirects=False,
                                      auth=self.auth).raw
        if self.auth is not None:  # requests' auth protocol, on every attempt
            prep = requests.models.PreparedRequest()
            prep.prepare(method="POST", url=url, headers=headers, data=body, auth=self.auth)
            url, headers, body = prep.url or url, dict(prep.headers), prep.body  # type: ignore[assignment]
        import urllib3

        return self._pool(url).urlopen(
            "POST", url, body=body, headers=headers, retries=False, redirect=False,
            timeout=urllib3.Timeout(connect=connect, read=read), preload_content=False)

    def _send_error(self, exc: Exception, url: str) -> Exception:
        """The typed error for a request that got no response (urllib3's
        errors, or requests' around them from a caller's session)."""
        chain = _chain(exc)
        # NewConnectionError (refused, no such host) is a ConnectTimeoutError
        # in urllib3's class tree, for history's sake: not a timeout
        failed = any(isinstance(e, u3.NewConnectionError) for e in chain)
        if not failed and any(isinstance(e, u3.ConnectTimeoutError) for e in chain):
            return APITimeoutError(f"timed out connecting to {url}")
        if not failed and any(isinstance(e, (u3.TimeoutError, socket.timeout)) for e in chain):
            if "handshake" in _chain_text(exc):
                # TLS spoken to a plain-HTTP server that waits for a request:
                # the handshake times out (urllib3 applies the connect timeout
                # to it), and would do so again on every retry
                connect = self.timeout[0] if isinstance(self.timeout, tuple) else self.timeout
                err = APITimeoutError(f"no TLS handshake from {url} within {connect}s: "
                                      "is the server http or https?")
                err.should_retry = False
                return err
            return APITimeoutError(f"{url} sent no response within the read timeout "
                                   f"({_read_timeout(self.timeout)}s)")
        if isinstance(exc, ValueError):  # a URL or header urllib3 or requests refused
            return ValueError(f"cannot send to {url}: {type(exc).__name__}")
        proxy = _env_proxy(url) if self._session is None else None
        if proxy and any(isinstance(e, u3.ProxyError) for e in chain):
            return APIConnectionError(
                f"could not connect to {url} through the proxy {_safe_url(proxy)} "
                "(HTTP_PROXY, HTTPS_PROXY or ALL_PROXY; "
                f"NO_PROXY={urlsplit(url).hostname} goes around it): {_cause(exc)}")
        if isinstance(exc, (OSError, u3.HTTPError)):  # requests' errors are OSErrors
            return APIConnectionError(f"could not connect to {url}: {_cause(exc)}")
        return exc

    def _check(self, resp: _Response, req: _Request) -> bool:
        """Raise for an error response; True if the body is one JSON document."""
        if resp.status >= 300:
            if 300 <= resp.status < 400:
                where = resp.headers.get("location", "?")
                raise APIError(
                    f"{resp.status} redirect from {self.name} to {where} not followed "
                    "(credentials stay on the configured host); set base_url to the "
                    "final URL", status=resp.status, provider=self.name,
                    request_id=_request_id(resp.headers))
            raise _http_error(resp, self.name, self.key_envs[0])
        ctype = resp.headers.get("content-type", "").lower()
        if ctype.startswith("text/html"):
            raise APIError(
                f"expected Content-Type text/event-stream from {self.name}, got "
                f"{ctype!r}: is base_url {_safe_url(req.url, self._secrets())!r} right?",
                status=resp.status,
                provider=self.name, request_id=_request_id(resp.headers))
        # a server that ignored stream=true sends the whole answer as JSON
        return ctype.startswith("application/json")

    def _events(self, chunks: Iterable[bytes], st: _State, whole: bool = False,
                control: Optional[_Control] = None) -> Generator[Event, None, None]:
        """Body bytes in, events out, the last one ``done``. No I/O of its own:
        every low-level exception that reading or parsing raises leaves as a
        typed ``LLMStreamerError``."""
        parser = self._parser(st)
        control = control or _Control(None, None)
        control.st = st
        try:
            if whole:
                yield from parser.body(_json_body(chunks))
                st.ended = st.done = True
            else:
                decoder = _SSEDecoder(MAX_EVENT_BYTES)
                parse = parser.event
                watch = control.deadline is not None or control.stall is not None
                for chunk in chunks:
                    for sse in decoder.feed(chunk):
                        if st.done:  # nothing after the terminal event is read
                            break
                        yield from parse(sse)
                    if st.done:
                        break
                    if watch:
                        self._check_clock(st, control)
                if not st.ended:
                    where = "in the middle of an event" if decoder.pending else "between events"
                    raise IncompleteStreamError(
                        f"{self.name} stream ended {where} before its final event; "
                        "the answer is cut off (see .partial)")
        except LLMStreamerError:
            raise
        except Exception as exc:
            if exc is control.thrown:  # Stream.throw(): the caller's own exception
                raise
            err = self._wire_error(exc)
            if err is None:
                raise
            if not (st.ended and isinstance(err, (APIConnectionError, IncompleteStreamError))):
                raise err from exc
            # the answer is complete; only what follows its end broke (a reset
            # instead of the chunked terminator): not an error, and the
            # connection is not pooled (close() drops it)
            log.debug("%s: connection broke after the end of the answer: %s", self.name, err)
        control.completion = st.completion()
        yield Event("done", completion=control.completion)

    def _check_clock(self, st: _State, control: _Control) -> None:
        """After each read when a limit is set: the stall clock restarts on
        content, and a limit already past (keep-alives keep the reads coming)
        ends the call as the watchdog would, final like its."""
        now = time.monotonic()
        if st.deltas != st.deltas_seen:
            st.deltas_seen, st.t_content = st.deltas, now
        why = control.expired(now)
        if why:
            control.kill(why)
            raise control.error(self.name)

    def _broken(self, exc: Exception) -> LLMStreamerError:
        text = str(exc)
        if "IncompleteRead" in text or "prematurely" in text or "InvalidChunkLength" in text:
            return IncompleteStreamError(
                f"{self.name} connection closed in the middle of the response "
                f"({text[:200]}); the answer is cut off (see .partial)")
        return APIConnectionError(f"connection to {self.name} broke: {text[:200]}")

    def _wire_error(self, exc: Exception) -> Optional[LLMStreamerError]:
        """Translate the low-level exceptions reading can raise, or None."""
        if isinstance(exc, u3.ReadTimeoutError):
            return APITimeoutError(f"{self.name} sent nothing for the read timeout "
                                   f"({_read_timeout(self.timeout)}s)")
        if isinstance(exc, u3.ProtocolError):
            return self._broken(exc)
        if isinstance(exc, (u3.HTTPError, OSError)):
            return APIConnectionError(f"connection to {self.name} failed: {exc}")
        if isinstance(exc, _StreamTooLarge):
            return APIError(f"{self.name} sent an event of {exc.args[0]} bytes, over the "
                            f"{MAX_EVENT_BYTES}-byte limit", provider=self.name)
        if isinstance(exc, ValueError):  # JSONDecodeError and friends
            return APIError(f"malformed data from {self.name}: {exc}", provider=self.name)
        if isinstance(exc, (KeyError, TypeError, AttributeError, IndexError, RecursionError)):
            # JSON of a shape the protocol does not allow, or nested absurdly deep
            return APIError(f"unexpected data from {self.name}: {exc!r}", provider=self.name)
        return None


def _texts(events: Iterator[Event]) -> Generator[str, None, Optional[Completion]]:
    completion = None
    try:
        for ev in events:  # on to the end, past "done", so the connection is reused
            if ev.type == "text":
                yield ev.text
            elif ev.type == "done":
                completion = ev.completion
    finally:
        _close(events)
    if completion is None and not getattr(events, "closed", False):
        raise IncompleteStreamError("stream ended without a done event")
    return completion


def _close(it: Any) -> None:
    """Close an event iterator we stop reading, and with it the HTTP response."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _json_body(chunks: Iterable[bytes]) -> Any:
    """A whole JSON body, read up to the event size limit."""
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_EVENT_BYTES:
            raise _StreamTooLarge(size)
    return json.loads(b"".join(parts).decode("utf-8", "replace"))


# what json.loads ends in; typeshed types its argument as the scanner itself
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _json_object(data: str, provider: str) -> Dict[str, Any]:
    """The JSON object in an event's data; anything else is an APIError.

    The scanner is called without json.loads's Python layers (~0.7 us an
    event); what it does not take whole (whitespace around the value, or
    not JSON) goes to json.loads, which decides."""
    try:
        try:
            obj, end = _scan(data, 0)
            if end != len(data):
                obj = json.loads(data)
        except StopIteration:
            obj = json.loads(data)
    except ValueError:
        raise APIError(f"malformed data from {provider}: expected JSON, got "
                       f"{data[:200]!r}", provider=provider) from None
    if not isinstance(obj, dict):
        raise APIError(f"malformed data from {provider}: expected a JSON object, got "
                       f"{data[:200]!r}", provider=provider)
    return obj


# ---------------------------------------------------------------- OpenAI ---

_OPENAI_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",  # some compatible servers
    "eos_token": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "error": "error",
}


class _OpenAIParser(_Parser):
    """Chat Completions chunks; the same code reads a whole JSON completion."""

    def __init__(self, st: _State) -> None:
        super().__init__(st)
        self.reasoning_content = False  # reasoning arrived as "reasoning_content"
        # OpenRouter reasoning_details items being assembled, by their "index"
        self.reasoning_details: Dict[Any, Dict[str, Any]] = {}

    def details(self, items: Any) -> str:
        """Keep OpenRouter ``reasoning_details`` fragments, joined per item, in
        ``signatures`` (they go back on the next request); their readable text."""
        texts = []
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            text = item.get("text") if kind == "reasoning.text" else (
                item.get("summary") if kind == "reasoning.summary" else None)
            if isinstance(text, str):
                texts.append(text)
            key = (item.get("index"), kind)
            kept = self.reasoning_details.get(key) if key[0] is not None else None
            if kept is None:
                kept = dict(item)
                self.st.signatures.append(kept)
                if key[0] is not None:
                    self.reasoning_details[key] = kept
                continue
            for k, v in item.items():  # a later fragment of the same item
                if k in ("text", "summary", "data") and isinstance(v, str):
                    kept[k] = (kept.get(k) or "") + v
                elif v is not None:
                    kept[k] = v
        return "".join(texts)

    def event(self, event: sseclient.Event) -> Sequence[Event]:
        data = event.data
        if data == "[DONE]":
            self.st.ended = self.st.done = True
            return ()
        return self.chunk(_json_object(data, self.st.provider), "delta")

    def body(self, body: Any) -> Sequence[Event]:
        if not isinstance(body, dict):
            raise APIError(f"unexpected JSON from {self.st.provider}: {str(body)[:200]}",
                           provider=self.st.provider)
        return self.chunk(body, "message")

    def chunk(self, obj: Dict[str, Any], key: str) -> List[Event]:
        st = self.st
        if obj.get("error") is not None or obj.get("object") == "error":
            raise _stream_error(obj, st.provider)
        if st.id is None:
            st.id = obj.get("id")
        if obj.get("model"):
            st.model = obj["model"]
        events: List[Event] = []
        for choice in obj.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # with n > 1 the Completion is choice 0
            delta = choice.get(key) or {}
            content = delta.get("content")
            if len(delta) == 1 and isinstance(content, str):  # most chunks: text alone
                if content:
                    events.append(st.delta("text", content, obj))
            elif delta:
                events += self.delta(delta, obj)
            reason = choice.get("finish_reason")
            if reason:
                st.stop_reason = reason
                st.finish_reason = _OPENAI_FINISH.get(reason, "other")
                st.ended = True  # usage and [DONE] may follow, but need not
        usage = obj.get("usage")
        if usage:
            events.append(st.set_usage(_openai_usage(usage), obj))
        return events

    def delta(self, delta: Dict[str, Any], raw: Any) -> List[Event]:
        """A delta that carries more than text: reasoning (three shapes), text
        (a str or typed parts), a refusal, citations, tool call fragments."""
        st = self.st
        events: List[Event] = []
        reasoning = delta.get("reasoning_content")
        if reasoning and not self.reasoning_content:
            # DeepSeek & co. want it back in this field on tool-call turns
            self.reasoning_content = True
            st.signatures.append({"type": "reasoning_content"})
        reasoning = reasoning or delta.get("reasoning")
        if delta.get("reasoning_details"):
            # OpenRouter sends the same text in "reasoning": count it once
            text = self.details(delta["reasoning_details"])
            reasoning = reasoning or text
        if reasoning and isinstance(reasoning, str):
            events.append(st.delta("reasoning", reasoning, raw))
        content = delta.get("content")
        if isinstance(content, str):
            if content:
                events.append(st.delta("text", content, raw))
        elif content:  # typed parts: Mistral's "thinking" items beside "text" ones
            for kind, text in _typed_parts(content):
                events.append(st.delta(kind, text, raw))
        if delta.get("refusal"):
            st.refusal.append(delta["refusal"])
        if isinstance(delta.get("annotations"), list):  # url_citation, search models
            st.citations.extend(delta["annotations"])
        for tc in delta.get("tool_calls") or ():
            events.append(self.tool_fragment(tc, raw))
        return events

    def tool_fragment(self, tc: Dict[str, Any], raw: Any) -> Event:
        st = self.st
        fn = tc.get("function") or {}
        id, name = tc.get("id"), fn.get("name")
        index = tc.get("index")
        if not isinstance(index, int):
            # Some compatible servers leave out "index": a new id starts a
            # new call, anything else continues the latest one.
            index = next((i for i, c in st.calls.items() if id and c.id == id), None)
            if index is None:
                index = len(st.calls) if id or not st.calls else max(st.calls)
        return st.tool(index, id, name, fn.get("arguments") or "", raw)


class OpenAI(_Provider):
    """OpenAI Chat Completions, and every server that speaks it (``base_url``).

        local = ls.OpenAI(base_url="http://127.0.0.1:8080/v1")
        print(local.chat("Hi").text)
    """

    name = "openai"
    key_envs = ("OPENAI_API_KEY",)
    base_env = "OPENAI_BASE_URL"
    model_env = "OPENAI_MODEL"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"
    _parser = _OpenAIParser
    _options = frozenset({"include_usage", "stream_options", "top_p", "seed", "n",
                          "max_completion_tokens", "reasoning_effort", "parallel_tool_calls",
                          "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs"})
    _body_fields = frozenset({
        # the Chat Completions API reference
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier",
        "seed", "service_tier", "stop", "store", "stream", "stream_options", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
        # the extensions of the compatible servers people point base_url at
        # (vLLM, llama.cpp, Ollama, OpenRouter, Mistral, DeepSeek, Qwen)
        "top_k", "min_p", "typical_p", "top_a", "repetition_penalty", "min_tokens",
        "ignore_eos", "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
        "skip_special_tokens", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
        "structured_outputs", "grammar", "json_schema", "cache_prompt", "reasoning",
        "include_reasoning", "provider", "models", "transforms", "random_seed", "safe_prompt",
        "enable_thinking", "thinking",
    })

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        include_usage = options.pop("include_usage", True)
        send_reasoning = options.pop("send_reasoning", None)
        host = urlsplit(base_url).hostname or ""
        azure = host.endswith(_AZURE_HOSTS)
        if send_reasoning is None and (host == "api.openai.com" or azure):
            send_reasoning = False  # they reject unknown message fields
        messages = [_openai_turn(m, send_reasoning) if m["role"] == "assistant" else m
                    for m in messages]
        body: Dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if include_usage and base_url not in self._no_stream_options:
            body["stream_options"] = {"include_usage": True}
        if "max_tokens" in options and urlsplit(base_url).hostname == "api.openai.com":
            # OpenAI's reasoning models reject max_tokens; every model accepts
            # max_completion_tokens there. Compatible servers know max_tokens.
            options["max_completion_tokens"] = options.pop("max_tokens")
        body.update({k: v for k, v in options.items() if v is not None})
        headers = {"Accept": "text/event-stream", **self.headers}
        if key and azure:  # Azure OpenAI (v1 and deployment URLs) takes its key so
            headers["api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        return _Request(_endpoint(base_url, "/chat/completions"), headers, body, model)

    def _fallback(self, req: _Request, base_url: str, exc: LLMStreamerError,
                  st: _State) -> Optional[_Request]:
        # Groq and several gateways reject stream_options: without it, usage
        # is whatever the server sends. Remembered for this base URL.
        if (isinstance(exc, BadRequestError) and not st.deltas and "stream_options" in req.body
                and re.search(r"stream_options|include_usage", exc.message)):
            log.info("%s: %s rejects stream_options; sending without it", self.name,
                     _safe_url(base_url, self._secrets()))
            self._no_stream_options.add(base_url)
            body = {k: v for k, v in req.body.items() if k != "stream_options"}
            return _Request(req.url, req.headers, body, req.model)
        return None


_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def _openai_turn(m: Mapping[str, Any], send_reasoning: Optional[bool]) -> Dict[str, Any]:
    """An assistant message as Chat Completions takes it.

    What ``Completion.message`` keeps for other protocols stays home. Reasoning
    goes back in the field the server sent it in: DeepSeek's thinking mode
    answers 400 without ``reasoning_content`` on turns that made tool calls,
    OpenRouter asks for ``reasoning_details``; Groq and Cerebras reject both,
    and never sent them. ``send_reasoning``: None for tool-call turns and the
    field the server used, True for every turn and field, False never.
    """
    out = {k: v for k, v in m.items() if k not in ("reasoning", "signatures", "native")}
    if out.get("tool_calls") and out.get("content") is None:
        out["content"] = ""  # llama-cpp-python rejects null; every server takes ""
    if send_reasoning is False or not (send_reasoning or m.get("tool_calls")):
        return out
    kept = [s for s in m.get("signatures") or () if isinstance(s, Mapping)]
    details = [s for s in kept if str(s.get("type", "")).startswith("reasoning.")]
    if details:
        out.setdefault("reasoning_details", details)
    if m.get("reasoning") and (send_reasoning or
                               any(s.get("type") == "reasoning_content" for s in kept)):
        out.setdefault("reasoning_content", m["reasoning"])
    return out


def _openai_usage(u: Dict[str, Any]) -> Usage:
    prompt = u.get("prompt_tokens") or 0
    completion = u.get("completion_tokens") or 0
    details = u.get("completion_tokens_details") or {}
    cached = u.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=u.get("total_tokens") or prompt + completion,
        reasoning_tokens=details.get("reasoning_tokens") or 0,
        cached_tokens=cached.get("cached_tokens") or 0,
    )


# ------------------------------------------------------ translation helpers ---


def _merge_turns(turns: List[Dict[str, Any]], key: str) -> List[Dict[str, Any]]:
    """Join consecutive turns of one role: Anthropic and Gemini want alternation."""
    out: List[Dict[str, Any]] = []
    for turn in turns:
        if not turn[key]:
            continue
        if out and out[-1]["role"] == turn["role"]:
            out[-1][key] = out[-1][key] + turn[key]
        else:
            out.append(turn)
    return out


def _data_url(url: str) -> Optional[Tuple[str, str]]:
    """Split ``data:image/png;base64,XXXX`` into (mime type, base64 data)."""
    m = re.match(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)\Z", url, re.S)
    return (m.group(1), m.group(2)) if m else None


def _image_url(part: Mapping[str, Any]) -> str:
    image = part.get("image_url")
    return str(image.get("url", "") if isinstance(image, Mapping) else image)


def _call_args(tc: Mapping[str, Any]) -> Dict[str, Any]:
    fn = tc.get("function") or {}
    return ToolCall(tc.get("id", ""), fn.get("name", ""), fn.get("arguments") or "").args


def _tool_output(content: Any) -> str:
    return content if isinstance(content, str) else _text_of(content) or json.dumps(content)


def _function_tools(tools: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """(name, description, parameters) from OpenAI-style tool schemas."""
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        out.append({"name": fn["name"], "description": fn.get("description", ""),
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
    return out


def _choice_name(choice: Any) -> Optional[str]:
    """The function name of an OpenAI tool_choice that forces one function."""
    if isinstance(choice, Mapping):
        fn = choice.get("function") or {}
        return str(fn.get("name") or choice.get("name") or "") or None
    return None


def _stop_list(stop: Any) -> List[str]:
    return [stop] if isinstance(stop, str) else list(stop)


def _native(m: Mapping[str, Any], protocol: str) -> bool:
    """Whether an assistant message carries its turn in ``protocol``'s own format
    (``Completion.native``), to be sent back verbatim instead of translated."""
    native = m.get("native")
    return (m.get("role") == "assistant" and isinstance(native, Mapping)
            and native.get("protocol") == protocol and isinstance(native.get("content"), list))


def _json_format(fmt: Any) -> Tuple[Optional[str], Dict[str, Any]]:
    """An OpenAI-style ``response_format`` as (kind, its json_schema object):
    kind is ``json_schema``, ``json_object`` or None (plain text)."""
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None, {}
    if kind == "json_object":
        return kind, {}
    spec = fmt.get("json_schema") if isinstance(fmt, Mapping) else None
    if kind == "json_schema" and isinstance(spec, Mapping) and isinstance(
            spec.get("schema"), Mapping):
        return kind, dict(spec)
    raise ValueError(
        "response_format must be {'type': 'json_schema', 'json_schema': {'name': ..., "
        "'schema': {...}}}, {'type': 'json_object'} or {'type': 'text'}; got " + repr(fmt))


# ------------------------------------------------------------- Anthropic ---

_ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# blocks read into text, reasoning and client tool calls; any other block
# (server tools and their results, MCP, types newer than this code) is kept
# whole and makes the turn native, so it goes back to Anthropic verbatim
_ANTHROPIC_OWN = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})

# The forced tool that carries response_format's JSON on models without
# structured outputs: its input is the answer's text, never a tool call.
_JSON_TOOL = "json_answer"


def _anthropic_json_outputs(model: str) -> bool:
    """Whether the model has structured outputs: Claude 4.5 and later (and
    names we do not know), not Claude 3, Sonnet 4 or Opus 4 / 4.1."""
    m = re.search(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d)(?!\d))?", model)
    if m:
        return (int(m.group(1)), int(m.group(2) or 0)) >= (4, 5)
    return not re.search(r"claude-(?:\d|instant)", model)


class _AnthropicParser(_Parser):
    """Messages API events: content blocks opened, filled and closed by index."""

    def __init__(self, st: _State) -> None:
        super().__init__(st)
        self.tools: Dict[Any, int] = {}  # client tool_use block index -> tool call ordinal
        # every open block by index: (the block as it goes back, its streamed fragments)
        self.open: Dict[Any, Tuple[Dict[str, Any], List[str]]] = {}
        self.content: List[Dict[str, Any]] = []  # the turn's blocks in order
        self.json_blocks: Set[Any] = set()  # blocks of the _JSON_TOOL: text
        self.usage: Dict[str, int] = {}  # message_delta carries running totals

    def event(self, event: sseclient.Event) -> Sequence[Event]:
        st = self.st
        obj = _json_object(event.data, st.provider)
        # the JSON "type" is authoritative: some proxies drop the event: lines
        kind = obj.get("type") or event.event
        if kind == "content_block_delta":
            delta = obj["delta"]
            if delta.get("type") == "text_delta":  # nearly every event: no call
                text = delta["text"]
                block = self.open.get(obj.get("index"))
                if block is not None:
                    block[1].append(text)
                return (st.delta("text", text, obj),)
            return self.delta(obj)
        if kind == "content_block_start":
            return self.block_start(obj)
        if kind == "content_block_stop":
            self.block_stop(obj.get("index"))
            return ()
        if kind == "message_start":
            msg = obj.get("message") or {}
            st.id = msg.get("id") or st.id
            st.model = msg.get("model") or st.model
            return self.set_usage(msg.get("usage"), obj)
        if kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                st.stop_reason = reason
                st.finish_reason = self.finish(reason)
            return self.set_usage(obj.get("usage"), obj)
        if kind == "message_stop":
            st.ended = st.done = True
        elif kind == "error":
            raise _stream_error(obj, st.provider)
        return ()  # ping, and event types newer than this code

    def delta(self, obj: Dict[str, Any]) -> Sequence[Event]:
        st = self.st
        delta = obj["delta"]  # text_delta never gets here: event() answers it first
        kind = delta.get("type")
        index = obj.get("index")
        block = self.open.get(index)
        if kind == "input_json_delta" and index in self.json_blocks:
            return (st.delta("text", delta["partial_json"], obj),) if delta[
                "partial_json"] else ()
        if kind == "thinking_delta":
            if block is not None:
                block[1].append(delta["thinking"])
            return (st.delta("reasoning", delta["thinking"], obj),)
        if kind == "input_json_delta":
            # server_tool_use and mcp_tool_use blocks stream their input too
            if block is not None:
                block[1].append(delta["partial_json"])
            if index in self.tools:
                return (st.tool(self.tools[index], None, None, delta["partial_json"], obj),)
        elif kind == "signature_delta" and block is not None:
            block[0]["signature"] = block[0].get("signature", "") + delta["signature"]
        elif kind == "citations_delta":
            st.citations.append(delta["citation"])
            if block is not None:
                block[0]["citations"] = (block[0].get("citations") or []) + [delta["citation"]]
        return ()  # delta types newer than this code

    def block_start(self, obj: Dict[str, Any]) -> Sequence[Event]:
        st = self.st
        block = dict(obj["content_block"])
        kind = block.get("type")
        index = obj.get("index")
        if kind == "tool_use" and block.get("name") == _JSON_TOOL:
            self.json_blocks.add(index)
            if block.get("input"):  # a whole JSON body; streamed input starts as {}
                return (st.delta("text", json.dumps(block["input"], ensure_ascii=False), obj),)
            return ()
        self.open[index] = (block, [])
        self.content.append(block)
        if kind not in _ANTHROPIC_OWN:
            st.native = self.content  # the whole turn goes back, in order
        if kind == "tool_use":
            ordinal = self.tools[index] = len(self.tools)
            args = json.dumps(block["input"]) if block.get("input") else ""
            return (st.tool(ordinal, block.get("id"), block.get("name"), args, obj),)
        if kind == "thinking":
            if block.get("thinking"):
                return (st.delta("reasoning", block["thinking"], obj),)
        elif kind == "redacted_thinking":
            st.signatures.append({"type": "redacted_thinking", "data": block.get("data", "")})
        elif kind == "text":
            st.citations.extend(block.get("citations") or ())
            if block.get("text"):
                return (st.delta("text", block["text"], obj),)
        return ()

    def finish(self, reason: str) -> str:
        if reason == "tool_use" and self.json_blocks and not self.tools:
            return "stop"  # the forced JSON tool was the answer
        return _ANTHROPIC_STOP.get(reason, "other")

    def block_stop(self, index: Any) -> None:
        opened = self.open.pop(index, None)
        if opened is None:
            return
        block, parts = opened
        kind = block.get("type")
        if kind == "text":
            block["text"] = block.get("text", "") + "".join(parts)
            if block.get("citations") is None:
                block.pop("citations", None)  # the request's text block wants a list or none
        elif kind == "thinking":  # kept whole, signed, for the next request
            block["thinking"] = block.get("thinking", "") + "".join(parts)
            self.st.signatures.append({"type": "thinking", "thinking": block["thinking"],
                                       "signature": block.get("signature", "")})
        elif parts:  # input_json_delta fragments: the input as the next request sends it
            try:
                block["input"] = json.loads("".join(parts))
            except ValueError:  # cut by max_tokens: the start's input stays
                pass

    def set_usage(self, usage: Any, raw: Any) -> Sequence[Event]:
        if not usage:
            return ()
        seen = self.usage
        seen.update({k: v for k, v in usage.items() if isinstance(v, int)})
        inp, out = seen.get("input_tokens", 0), seen.get("output_tokens", 0)
        read = seen.get("cache_read_input_tokens", 0)
        write = seen.get("cache_creation_input_tokens", 0)
        # input_tokens excludes cache reads and writes (Anthropic's meaning, kept)
        u = Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + read + write + out,
                  cached_tokens=read)
        return (self.st.set_usage(u, raw),)

    def body(self, body: Any) -> Sequence[Event]:
        st = self.st
        if not isinstance(body, dict) or body.get("type") == "error":
            raise _stream_error(body if isinstance(body, dict) else {"error": body},
                                st.provider)
        events: List[Event] = []
        st.id, st.model = body.get("id"), body.get("model") or st.model
        for index, block in enumerate(body.get("content") or ()):
            start = {"type": "content_block_start", "index": index, "content_block": block}
            events += self.block_start(start)
            self.block_stop(index)
        reason = body.get("stop_reason")
        if reason:
            st.stop_reason, st.finish_reason = reason, self.finish(reason)
        return events + list(self.set_usage(body.get("usage"), body))


class Anthropic(_Provider):
    """Anthropic Messages API (``POST /v1/messages``).

        claude = ls.Anthropic()
        print(claude.chat("Hi", max_tokens=100).text)
    """

    name = "anthropic"
    key_envs = ("ANTHROPIC_API_KEY",)
    base_env = "ANTHROPIC_BASE_URL"
    model_env = "ANTHROPIC_MODEL"
    default_base_url = "https://api.anthropic.com"
    default_model = "claude-sonnet-4-5"
    default_max_tokens = 4096  # the API requires max_tokens; every model allows this
    version = "2023-06-01"
    _parser = _AnthropicParser
    _options = frozenset({"top_p", "top_k", "thinking", "metadata", "stop_sequences",
                          "output_config"})
    _body_fields = frozenset({  # the Messages API reference
        "container", "context_management", "max_tokens", "mcp_servers", "messages",
        "metadata", "model", "output_config", "output_format", "service_tier",
        "stop_sequences", "stream", "system", "temperature", "thinking", "tool_choice",
        "tools", "top_k", "top_p",
    })

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        system: List[str] = []
        turns: List[Dict[str, Any]] = []
        for m in messages:
            role = m["role"]
            if role in ("system", "developer"):
                system.append(_text_of(m.get("content")))
            elif role == "tool":
                turns.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": m["tool_call_id"],
                    "content": _tool_output(m.get("content"))}]})
            elif _native(m, self.name):  # server-tool blocks and all, as Anthropic sent them
                turns.append({"role": role, "content": list(m["native"]["content"])})
            else:
                # thinking blocks go back first, signed, as the API requires
                blocks = [dict(b) for b in m.get("signatures") or ()
                          if b.get("type") in ("thinking", "redacted_thinking")]
                blocks += self._content(m.get("content"))
                blocks += [{"type": "tool_use", "id": tc["id"],
                            "name": tc["function"]["name"], "input": _call_args(tc)}
                           for tc in m.get("tool_calls") or ()]
                turns.append({"role": role, "content": blocks})
        body: Dict[str, Any] = {
            "model": model,
            "max_tokens": options.pop("max_tokens", None) or self.default_max_tokens,
            "messages": _merge_turns(turns, "content"),
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if options.get("stop") is not None:
            body["stop_sequences"] = _stop_list(options.pop("stop"))
        if options.get("tools") is not None:
            body["tools"] = [{"name": t["name"], "description": t["description"],
                              "input_schema": t["parameters"]}
                             for t in _function_tools(options.pop("tools"))]
        if options.get("tool_choice") is not None:
            choice = options.pop("tool_choice")
            name = _choice_name(choice)
            body["tool_choice"] = ({"type": "tool", "name": name} if name else
                                   {"type": {"required": "any"}.get(choice, choice)})
        if options.get("response_format") is not None:
            self._json_output(body, model, options)
        body.update({k: v for k, v in options.items() if v is not None})
        headers = {"Accept": "text/event-stream", "anthropic-version": self.version,
                   **self.headers}
        if key:
            headers["x-api-key"] = key
        base, query = base_url.partition("?")[::2]
        root = base[:-3] if base.endswith("/v1") else base
        return _Request(_endpoint(root + (f"?{query}" if query else ""), "/v1/messages"),
                        headers, body, model)

    @staticmethod
    def _json_output(body: Dict[str, Any], model: str, options: Dict[str, Any]) -> None:
        """``response_format`` as structured outputs (``output_config.format``)
        where the model has them (a json_schema on Claude 4.5 and later, and
        on model names we do not know); else a forced tool whose input the
        parser turns into the answer's text (json_object, which has no schema,
        and older models)."""
        kind, spec = _json_format(options.pop("response_format"))
        if kind is None:
            return
        if kind == "json_schema" and _anthropic_json_outputs(model):
            config = dict(options.pop("output_config", None) or {})
            config["format"] = {"type": "json_schema", "schema": spec["schema"]}
            body["output_config"] = config
            return
        if "tool_choice" in body:
            raise ValueError(f"response_format on {model} uses a forced tool, which "
                             "cannot be combined with tool_choice: leave one out")
        thinking = options.get("thinking")
        if isinstance(thinking, Mapping) and thinking.get("type", "disabled") != "disabled":
            raise ValueError(f"response_format on {model} uses a forced tool, which "
                             "Anthropic does not allow with thinking: leave one out")
        about = spec.get("description") or spec.get("name") or "the answer"
        body["tools"] = [*body.get("tools", []), {
            "name": _JSON_TOOL, "description": f"Give {about} as a JSON object.",
            "input_schema": spec.get("schema") or {"type": "object"}}]
        body["tool_choice"] = {"type": "tool", "name": _JSON_TOOL}

    @staticmethod
    def _content(content: Any) -> List[Dict[str, Any]]:
        if content is None or content == "":
            return []
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        blocks: List[Dict[str, Any]] = []
        for part in content:
            if part.get("type") == "image_url":
                url = _image_url(part)
                data = _data_url(url)
                source = ({"type": "base64", "media_type": data[0], "data": data[1]}
                          if data else {"type": "url", "url": url})
                blocks.append({"type": "image", "source": source})
            else:  # text parts have the same shape; native blocks pass through
                blocks.append(dict(part))
        return blocks


# ---------------------------------------------------------------- Gemini ---

_GEMINI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}


class _GeminiParser(_Parser):
    """streamGenerateContent chunks: whole parts, each chunk repeating usage."""

    def __init__(self, st: _State) -> None:
        super().__init__(st)
        self.usage: Any = None  # the last usageMetadata seen, and its total
        self.total: Any = -1
        # the turn's parts, for the round trip: a run of text fragments is one
        # part, whose texts are kept in `run` until flush() joins them (a dict
        # a fragment held ~300 bytes an event for the whole stream)
        self.parts: List[Dict[str, Any]] = []
        self.run: List[str] = []
        self.held = 0  # fragments in `run` not yet joined into a block of them
        st.flush = self.flush

    def event(self, event: sseclient.Event) -> Sequence[Event]:
        return self.chunk(_json_object(event.data, self.st.provider))

    def body(self, body: Any) -> Sequence[Event]:
        # without alt=sse the API answers with a JSON array of chunks
        events: List[Event] = []
        for chunk in body if isinstance(body, list) else [body]:
            if not isinstance(chunk, dict):
                raise APIError(f"malformed data from gemini: expected a JSON object, got "
                               f"{str(chunk)[:200]!r}", provider=self.st.provider)
            events += self.chunk(chunk)
        return events

    def chunk(self, obj: Dict[str, Any]) -> List[Event]:
        st = self.st
        if "error" in obj:
            raise _stream_error(obj, st.provider)
        if st.id is None:
            st.id = obj.get("responseId")
        st.model = obj.get("modelVersion") or st.model
        events: List[Event] = []
        calls = len(st.calls)
        for cand in obj.get("candidates") or ():
            if cand.get("index", 0) != 0:
                continue
            for part in (cand.get("content") or {}).get("parts") or ():
                # every part is kept for the round trip; a kind that is not
                # text, thought or functionCall (executableCode,
                # codeExecutionResult, kinds newer than this code) makes the
                # turn native
                text = part.get("text")
                if len(part) == 1 and isinstance(text, str):  # most parts: a text fragment
                    if not self.run:
                        self.parts.append({"text": ""})
                    self.run.append(text)
                    self.held += 1
                    if self.held == _BLOCK:  # a str per fragment costs ~60 bytes
                        self.run[-_BLOCK:] = ["".join(self.run[-_BLOCK:])]
                        self.held = 0
                    if text:
                        events.append(st.delta("text", text, obj))
                    continue
                if self.run:
                    self.flush()
                    self.run, self.held = [], 0
                self.parts.append(part)
                if not ("text" in part or "functionCall" in part
                        or part.keys() <= _GEMINI_OWN):  # one data field per part
                    st.native = self.parts
                sig = part.get("thoughtSignature")
                if "functionCall" in part:
                    fc = part["functionCall"]
                    # Gemini may send no id; ours must be unique across turns
                    id = fc.get("id") or f"call_{st.id or os.urandom(8).hex()}_{calls}"
                    events.append(st.tool(calls, id, fc.get("name"),
                                          json.dumps(fc.get("args") or {}), obj))
                    calls += 1
                    if sig:
                        st.signatures.append({"thoughtSignature": sig, "tool_call_id": id})
                    continue
                if part.get("text"):
                    kind = "reasoning" if part.get("thought") else "text"
                    events.append(st.delta(kind, part["text"], obj))
                if sig:
                    st.signatures.append({"thoughtSignature": sig})
            if "groundingMetadata" in cand or "citationMetadata" in cand:  # Search grounding
                for key in ("groundingMetadata", "citationMetadata"):
                    cited = cand.get(key)
                    if cited and {key: cited} not in st.citations:
                        st.citations.append({key: cited})
            reason = cand.get("finishReason")
            if reason:
                st.stop_reason = reason
                # Gemini says STOP after function calls too
                st.finish_reason = ("tool_calls" if calls and reason == "STOP"
                                    else _GEMINI_FINISH.get(reason, "other"))
                st.ended = True  # usage may still follow, until EOF
        feedback = obj.get("promptFeedback")
        if feedback and feedback.get("blockReason"):
            st.block_reason = st.stop_reason = feedback["blockReason"]
            st.finish_reason = "content_filter"
            st.ended = True
        usage = obj.get("usageMetadata")
        # every chunk repeats it: while the answer streams, what changes
        # (candidates, thoughts) moves the total, a cheaper test than the
        # nested dict's ~0.1 us; once the answer has ended, all of it counts
        if usage and (usage.get("totalTokenCount") != self.total
                      or (st.ended and usage != self.usage)):
            self.usage, self.total = usage, usage.get("totalTokenCount")
            u = Usage(
                input_tokens=usage.get("promptTokenCount", 0),  # includes cached tokens
                output_tokens=usage.get("candidatesTokenCount", 0),  # excludes thoughts
                total_tokens=usage.get("totalTokenCount", 0),
                reasoning_tokens=usage.get("thoughtsTokenCount", 0),
                cached_tokens=usage.get("cachedContentTokenCount", 0),
            )
            if u != st.usage:  # every chunk repeats it; report changes only
                events.append(st.set_usage(u, obj))
        return events

    def flush(self) -> None:
        """Join the run of text fragments that ends the parts into its part."""
        if self.run:
            self.parts[-1]["text"] = "".join(self.run)


_GEMINI_TEXT = frozenset({"text", "thought"})
_GEMINI_OWN = frozenset({"text", "thought", "thoughtSignature", "functionCall"})


def _joined(parts: Iterable[Any]) -> List[Any]:
    """Gemini parts with each run of streamed text fragments (same ``thought``,
    nothing else on them) joined into one part, in one pass."""
    out: List[Any] = []
    run: List[str] = []

    def flush() -> None:
        if run:
            out[-1] = {**out[-1], "text": "".join(run)}
            run.clear()

    for part in parts:
        last = out[-1] if out else None
        if (run and isinstance(part, dict) and isinstance(last, dict)
                and part.keys() <= _GEMINI_TEXT and isinstance(part.get("text"), str)
                and part.get("thought") == last.get("thought")):
            run.append(part["text"])
            continue
        flush()
        out.append(part)
        if (isinstance(part, dict) and part.keys() <= _GEMINI_TEXT
                and isinstance(part.get("text"), str)):
            run.append(part["text"])
    flush()
    return out


class Gemini(_Provider):
    """Google Gemini (``models/{model}:streamGenerateContent?alt=sse``).

        print(ls.Gemini().chat("Hi").text)
    """

    name = "gemini"
    key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    base_env = "GEMINI_BASE_URL"
    model_env = "GEMINI_MODEL"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    default_model = "gemini-2.5-flash"
    _parser = _GeminiParser
    _options = frozenset({"generationConfig", "safetySettings", "toolConfig", "cachedContent"})
    _body_fields = frozenset({  # generateContent's request body, and its snake_case spelling
        "contents", "tools", "toolConfig", "tool_config", "safetySettings", "safety_settings",
        "systemInstruction", "system_instruction", "generationConfig", "generation_config",
        "cachedContent", "cached_content", "labels",
    })

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        system: List[str] = []
        contents: List[Dict[str, Any]] = []
        names: Dict[str, str] = {}  # tool_call_id -> function name
        for i, m in enumerate(messages):
            role = m["role"]
            if role in ("system", "developer"):
                system.append(_text_of(m.get("content")))
            elif role == "tool":
                name = names.get(m["tool_call_id"]) or m.get("name")
                if not name:
                    raise ValueError(
                        f"messages[{i}] answers tool call {m['tool_call_id']!r}, which no "
                        "earlier assistant message made; Gemini needs the function name "
                        '(add "name" to the tool message)')
                contents.append({"role": "user", "parts": [{"functionResponse": {
                    "name": name, "response": self._response(m.get("content"))}}]})
            elif _native(m, self.name):  # code execution parts and all, as Gemini sent them
                self._calls(m, names)
                contents.append({"role": "model", "parts": _joined(m["native"]["content"])})
            else:
                parts = self._parts(m.get("content"))
                if role == "assistant":
                    parts += self._calls(m, names)
                contents.append({"role": "model" if role == "assistant" else "user",
                                 "parts": parts})
        body: Dict[str, Any] = {"contents": _merge_turns(contents, "parts")}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        config: Dict[str, Any] = {}
        for ours, theirs in (("max_tokens", "maxOutputTokens"), ("temperature", "temperature")):
            if options.get(ours) is not None:
                config[theirs] = options.pop(ours)
        if options.get("stop") is not None:
            config["stopSequences"] = _stop_list(options.pop("stop"))
        if options.get("response_format") is not None:
            kind, spec = _json_format(options.pop("response_format"))
            if kind:
                config["responseMimeType"] = "application/json"
            if "schema" in spec:  # full JSON Schema, unlike the subset responseSchema takes
                config["responseJsonSchema"] = spec["schema"]
        config.update(options.pop("generationConfig", None) or {})
        if config:
            body["generationConfig"] = config
        if options.get("tools") is not None:
            # parametersJsonSchema takes full JSON Schema (additionalProperties
            # and all), unlike the OpenAPI subset that "parameters" accepts
            body["tools"] = [{"functionDeclarations": [
                {"name": t["name"], "description": t["description"],
                 "parametersJsonSchema": t["parameters"]}
                for t in _function_tools(options.pop("tools"))]}]
        if options.get("tool_choice") is not None:
            choice = options.pop("tool_choice")
            name = _choice_name(choice)
            mode = "ANY" if name else {"required": "ANY", "none": "NONE"}.get(choice, "AUTO")
            fcc: Dict[str, Any] = {"mode": mode}
            if name:
                fcc["allowedFunctionNames"] = [name]
            body["toolConfig"] = {"functionCallingConfig": fcc}
        body.update({k: v for k, v in options.items() if v is not None})
        headers = {"Accept": "text/event-stream", **self.headers}
        if key:
            headers["x-goog-api-key"] = key  # never in the URL, where logs would see it
        model_path = model if model.startswith("models/") else f"models/{model}"
        return _Request(_endpoint(base_url, f"/{model_path}:streamGenerateContent?alt=sse"),
                        headers, body, model)

    @staticmethod
    def _parts(content: Any) -> List[Dict[str, Any]]:
        if content is None or content == "":
            return []
        if isinstance(content, str):
            return [{"text": content}]
        parts: List[Dict[str, Any]] = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append({"text": part.get("text", "")})
            elif kind == "image_url":
                url = _image_url(part)
                data = _data_url(url)
                parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}} if data
                             else {"fileData": {"fileUri": url}})
            else:  # native Gemini parts pass through
                parts.append(dict(part))
        return parts

    @staticmethod
    def _calls(m: Mapping[str, Any], names: Dict[str, str]) -> List[Dict[str, Any]]:
        """functionCall parts, each with its thoughtSignature when we kept one."""
        sigs = {s.get("tool_call_id"): s["thoughtSignature"]
                for s in m.get("signatures") or () if "thoughtSignature" in s}
        parts = []
        for tc in m.get("tool_calls") or ():
            name = tc["function"]["name"]
            names[tc["id"]] = name
            part: Dict[str, Any] = {"functionCall": {"name": name, "args": _call_args(tc)}}
            if tc["id"] in sigs:
                part["thoughtSignature"] = sigs[tc["id"]]
            parts.append(part)
        return parts

    @staticmethod
    def _response(content: Any) -> Dict[str, Any]:
        """functionResponse.response must be an object: JSON objects pass as is."""
        text = _tool_output(content)
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        return value if isinstance(value, dict) else {"result": text}


# ----------------------------------------------------------- partial JSON ---

_WS = re.compile(r"[ \t\n\r]*")
# json's C string decoder, which typeshed does not list: (str, end) from the
# character after the opening quote
_scanstring: Callable[[str, int], Tuple[str, int]] = vars(json.decoder)["scanstring"]
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_NUMBER_CHARS = re.compile(r"[-+.eE0-9]*")
# what a number cut off at the end of the text can look like: "-", "1.", "2e-"
_NUMBER_START = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.(?:[0-9]+(?:[eE][-+]?[0-9]*)?)?"
                           r"|[eE][-+]?[0-9]*)?)?")
# a string's characters and complete escapes, the opening quote included
_STRING_START = re.compile(r'"(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_CUT_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?")
# json.loads takes these too (its allow_nan default)
_LITERALS = (("true", True), ("false", False), ("null", None), ("NaN", float("nan")),
             ("Infinity", float("inf")), ("-Infinity", float("-inf")))
_VALUE, _FIRST_VALUE, _KEY, _FIRST_KEY, _COLON, _AFTER = range(6)
_MAX_MISSES = 16  # one per nesting level of the cut-off value: deeper, no C scanner
_NOTHING = object()


def partial_json(text: str) -> Any:
    """The value a JSON document cut off at the end of ``text`` would have
    if it were closed now: to show streamed tool arguments or structured
    output while they arrive.

    Open strings, arrays and objects are closed; an unfinished number,
    literal, escape or object key, and a key with no value yet, are left
    out. Blank text gives None; a complete document gives exactly
    ``json.loads(text)`` (so a bare ``12`` is 12, though it may grow).
    Time is linear in ``len(text)``. Text that no more characters could
    make JSON raises ``json.JSONDecodeError`` (a ValueError).

        partial_json('{"city": "Par')      # {'city': 'Par'}
        partial_json('[1, 2, {"a": tr')    # [1, 2, {}]
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass  # cut off, not JSON, or nested too deep for json: the scan below says
    s, n = text, len(text)
    root: Any = _NOTHING
    stack: List[Any] = []  # the open arrays and objects, innermost last
    keys: List[Any] = []  # for each: the key whose value comes next
    expect = _VALUE
    misses = 0  # arrays and objects the C scanner failed on: each cost a scan to the end
    pos = _skip(s, 0)
    while pos < n:
        c = s[pos]
        if expect <= _FIRST_VALUE:  # a value (or, first in an array, "]")
            if c == "]" and expect == _FIRST_VALUE:
                stack.pop()
                keys.pop()
                expect, pos = _AFTER, pos + 1
            else:
                end = -1  # for an array or object: still open
                if c == "{" or c == "[":
                    if stack and misses < _MAX_MISSES:
                        # a whole array or object, read at the speed of json's C
                        # scanner; only those the end of the text cuts fail
                        try:
                            value, end = _scan(s, pos)
                        except (ValueError, StopIteration, RecursionError):
                            misses += 1
                    if end < 0:
                        value = {} if c == "{" else []
                elif c == '"':
                    try:
                        value, end = _scanstring(s, pos + 1)
                    except ValueError:
                        value, end = _cut_string(s, pos), n
                        if value is None:
                            raise
                else:
                    value, end = _scalar(s, pos)
                    if end < 0:
                        break  # an unfinished number or literal: left out
                if not stack:
                    root = value
                elif keys[-1] is None:
                    stack[-1].append(value)
                else:
                    stack[-1][keys[-1]] = value
                if end >= 0:
                    expect, pos = _AFTER, end
                else:  # its items come next
                    stack.append(value)
                    keys.append(None)
                    expect, pos = (_FIRST_KEY if c == "{" else _FIRST_VALUE), pos + 1
        elif expect <= _FIRST_KEY:  # a key (or, first in an object, "}")
            if c == "}" and expect == _FIRST_KEY:
                stack.pop()
                keys.pop()
                expect, pos = _AFTER, pos + 1
            elif c == '"':
                try:
                    keys[-1], pos = _scanstring(s, pos + 1)
                except ValueError:
                    if _cut_string(s, pos) is None:
                        raise
                    break  # an unfinished key: left out
                expect = _COLON
            else:
                raise json.JSONDecodeError("Expecting property name enclosed in double "
                                           "quotes", s, pos)
        elif expect == _COLON:
            if c != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", s, pos)
            expect, pos = _VALUE, pos + 1
        else:  # after a value: "," or the end of its array or object
            if not stack:
                raise json.JSONDecodeError("Extra data", s, pos)
            if c == ",":
                expect = _VALUE if keys[-1] is None else _KEY
            elif c == ("]" if keys[-1] is None else "}"):
                stack.pop()
                keys.pop()
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", s, pos)
            pos += 1
        pos = _skip(s, pos)
    return None if root is _NOTHING else root


def _skip(s: str, pos: int) -> int:
    """Where the whitespace at ``s[pos]`` ends."""
    m = _WS.match(s, pos)
    return m.end() if m else pos


def _cut_string(s: str, pos: int) -> Optional[str]:
    """The string that starts at ``s[pos]`` and is cut off by the end of the
    text, as far as it goes; None if it is not cut off but invalid."""
    end = _STRING_START.match(s, pos).end()  # type: ignore[union-attr]  # always matches '"'
    if end < len(s) and not _CUT_ESCAPE.fullmatch(s, end):
        return None
    value: str = json.loads(s[pos:end] + '"')
    if value and "\ud800" <= value[-1] <= "\udbff":
        value = value[:-1]  # half a surrogate pair: its other half is not here yet
    return value


def _scalar(s: str, pos: int) -> Tuple[Any, int]:
    """The number or literal at ``s[pos]`` and where it ends; an end of -1
    if the text ends before it does."""
    for name, value in _LITERALS:
        if s.startswith(name, pos):
            return value, pos + len(name)
        if len(s) - pos < len(name) and name.startswith(s[pos:]):
            return None, -1
    if _NUMBER_CHARS.match(s, pos).end() == len(s):  # type: ignore[union-attr]
        if _NUMBER_START.fullmatch(s, pos):
            return None, -1
    m = _NUMBER.match(s, pos)
    if m is None:
        raise json.JSONDecodeError("Expecting value", s, pos)
    integer, frac, exp = m.groups()
    return (float(m.group()) if frac or exp else int(integer)), m.end()


# ------------------------------------------------------- OpenAI Responses ---

_RESPONSES_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
# output items that Completion.text / tool_calls describe completely; any
# other item (reasoning, built-in tool calls, types newer than this code)
# makes the turn's items go back verbatim through Completion.native
_RESPONSES_PLAIN = frozenset({"message", "function_call"})


def _str(value: Any) -> str:
    """A text field of an event: a string, else the event is malformed."""
    if value.__class__ is not str:
        raise TypeError(f"expected a string, got {str(value)[:100]!r}")
    return str(value)


class _ResponsesParser(_Parser):
    """Responses API events: output items added, filled by deltas, done; the
    response object itself arrives in ``response.completed`` (or
    ``.incomplete`` / ``.failed``)."""

    def __init__(self, st: _State) -> None:
        super().__init__(st)
        self.calls: Dict[Any, int] = {}  # item id and output_index -> tool call ordinal
        self.items: List[Dict[str, Any]] = []  # output items done, in order
        self.summary: Any = None  # the reasoning summary part being streamed
        self.stored = True  # the response's "store": false means ids cannot be looked up

    def event(self, event: sseclient.Event) -> Sequence[Event]:
        st = self.st
        data = event.data
        if data == "[DONE]":  # some compatible servers add it; response.completed decides
            return ()
        obj = _json_object(data, st.provider)
        kind = obj.get("type") or event.event
        if kind == "response.output_text.delta":  # nearly every event: no call
            return (st.delta("text", _str(obj["delta"]), obj),)
        if kind == "response.function_call_arguments.delta":
            return (st.tool(self.ordinal(obj), None, None, _str(obj["delta"]), obj),)
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return self.reasoning(obj)
        if kind == "response.output_item.added":
            return self.item_added(obj["item"], obj.get("output_index"), obj)
        if kind == "response.output_item.done":
            return self.item_done(obj["item"], obj.get("output_index"), obj)
        if kind == "response.refusal.delta":
            st.refusal.append(_str(obj["delta"]))
        elif kind == "response.output_text.annotation.added":
            self.cite(obj.get("annotation"))
        elif kind in ("response.created", "response.in_progress"):
            self.head(obj.get("response") or {})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            return self.end(obj["response"], obj)
        elif kind == "error" or (obj.get("error") and not kind.startswith("response.")):
            raise _stream_error(obj, st.provider)
        return ()  # keep-alives, *.done echoes, built-in tool progress, newer types

    def head(self, resp: Dict[str, Any]) -> None:
        self.st.id = resp.get("id") or self.st.id
        self.st.model = resp.get("model") or self.st.model
        if "store" in resp:
            self.stored = resp["store"] is not False

    def ordinal(self, obj: Dict[str, Any]) -> int:
        """The tool call an arguments delta belongs to, by item id or output index."""
        for key in (obj.get("item_id"), obj.get("output_index")):
            if key is not None and key in self.calls:
                return self.calls[key]
        index = self.calls[obj.get("item_id")] = len(set(self.calls.values()))
        return index

    def reasoning(self, obj: Dict[str, Any]) -> Sequence[Event]:
        text = _str(obj["delta"])
        part = (obj.get("item_id"), obj.get("summary_index"), obj.get("content_index"))
        if part != self.summary:  # summary parts are paragraphs: keep them apart
            if self.summary is not None and text:
                text = "\n\n" + text
            self.summary = part
        return (self.st.delta("reasoning", text, obj),) if text else ()

    def item_added(self, item: Dict[str, Any], output_index: Any, raw: Any) -> Sequence[Event]:
        if item.get("type") != "function_call":
            return ()
        index = len(set(self.calls.values()))
        for key in (item.get("id"), output_index):
            if key is not None:
                self.calls[key] = index
        # call_id is what a function_call_output answers: the tool call's id
        return (self.st.tool(index, item.get("call_id") or item.get("id"), item.get("name"),
                             _str(item.get("arguments") or ""), raw),)

    def item_done(self, item: Dict[str, Any], output_index: Any, raw: Any
                  ) -> Sequence[Event]:
        events = self.call_done(item, output_index, raw)
        self.finished(item)
        return events

    def call_done(self, item: Dict[str, Any], output_index: Any, raw: Any
                  ) -> Sequence[Event]:
        """A finished function_call item: what its events did not already say."""
        if item.get("type") != "function_call":
            return ()
        index = next((self.calls[k] for k in (item.get("id"), output_index)
                      if k is not None and k in self.calls), None)
        if index is None:  # a server that sent no output_item.added
            return self.item_added(item, output_index, raw)
        if item.get("arguments") and not "".join(self.st.calls[index].parts):
            # arguments only in the finished item, never as deltas
            return (self.st.tool(index, None, None, _str(item["arguments"]), raw),)
        return ()

    def finished(self, item: Dict[str, Any]) -> None:
        """An output item is whole: keep it, and its message's citations."""
        if item.get("type") == "message":
            for part in item.get("content") or ():
                for annotation in part.get("annotations") or ():
                    self.cite(annotation)
        self.keep([*self.items, item])

    def keep(self, items: List[Dict[str, Any]]) -> None:
        """The turn's output items; they go back verbatim when not all plain."""
        self.items = items
        if not self.stored:
            # not stored: a reasoning item without its encrypted_content is an
            # id the server cannot look up (the next request would be a 400)
            items = [i for i in items if i.get("type") != "reasoning" or i.get("encrypted_content")]
        if any(i.get("type") not in _RESPONSES_PLAIN for i in items):
            self.st.native = list(items)

    def cite(self, annotation: Any) -> None:
        if (isinstance(annotation, dict) and str(annotation.get("type")).endswith("citation")
                and annotation not in self.st.citations):
            self.st.citations.append(annotation)

    def end(self, resp: Dict[str, Any], raw: Any) -> Sequence[Event]:
        """The final response object: status, usage, and every output item."""
        st = self.st
        self.head(resp)
        events: List[Event] = []
        if resp.get("output"):
            self.keep(list(resp["output"]))
            for index, item in enumerate(self.items):
                events += self.call_done(item, index, raw)
        status = resp.get("status")
        if status == "failed":
            st.finish_reason, st.stop_reason = "error", "failed"
            error = resp.get("error") or {"message": "the response failed", "type": "server_error"}
            raise _stream_error({"error": error}, st.provider)
        if status == "incomplete":
            reason = (resp.get("incomplete_details") or {}).get("reason") or "incomplete"
            st.stop_reason = reason
            st.finish_reason = _RESPONSES_INCOMPLETE.get(reason, "other")
        else:
            st.stop_reason = status or "completed"
            st.finish_reason = "tool_calls" if st.calls else "stop"
        st.ended = st.done = True
        usage = resp.get("usage")
        if not usage:
            return events
        inp, out = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
        return [*events, st.set_usage(Usage(
            input_tokens=inp,  # includes cached tokens (OpenAI's meaning, kept)
            output_tokens=out,  # includes reasoning tokens
            total_tokens=usage.get("total_tokens") or inp + out,
            reasoning_tokens=(usage.get("output_tokens_details") or {}).get(
                "reasoning_tokens") or 0,
            cached_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        ), raw)]

    def body(self, body: Any) -> Sequence[Event]:
        st = self.st
        if not isinstance(body, dict) or (body.get("error") and body.get("status") != "failed"):
            raise _stream_error(body if isinstance(body, dict) else {"error": body},
                                st.provider)
        events: List[Event] = []
        for index, item in enumerate(body.get("output") or ()):
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or ():
                    if part.get("type") == "refusal":
                        st.refusal.append(_str(part.get("refusal") or ""))
                    elif part.get("text"):
                        events.append(st.delta("text", _str(part["text"]), body))
            elif kind == "reasoning":
                parts = [*(item.get("summary") or ()), *(item.get("content") or ())]
                text = "\n\n".join(_str(p["text"]) for p in parts if p.get("text"))
                if text:
                    events.append(st.delta("reasoning", text, body))
            elif kind == "function_call":
                events += self.item_added(item, index, body)
            self.finished(item)
        return events + list(self.end(body, body))


class OpenAIResponses(_Provider):
    """OpenAI Responses API (``POST {base}/responses``), and every server that
    speaks it (vLLM, llama.cpp, Ollama, LM Studio, OpenRouter, Azure ``/openai/v1``).

        r = ls.OpenAIResponses()
        print(r.chat("Hi", reasoning={"effort": "low"}).reasoning)
    """

    name = "openai-responses"
    key_envs = ("OPENAI_API_KEY",)
    base_env = "OPENAI_BASE_URL"
    model_env = "OPENAI_MODEL"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"
    _parser = _ResponsesParser
    _options = frozenset({"max_output_tokens", "reasoning", "include", "store", "text",
                          "previous_response_id", "instructions", "parallel_tool_calls",
                          "top_p", "truncation"})
    _body_fields = frozenset({
        "background", "conversation", "include", "input", "instructions",
        "max_output_tokens", "max_tool_calls", "metadata", "model", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_retention",
        "reasoning", "safety_identifier", "service_tier", "store", "stream",
        "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs",
        "top_p", "truncation", "user",
    })

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        if options.get("stop") is not None:
            raise ValueError(
                "the Responses API has no stop sequences: leave out stop=, or use "
                "provider 'openai' (Chat Completions), which has them")
        options.pop("stop", None)
        instructions: List[str] = []
        items: List[Dict[str, Any]] = []
        for m in messages:
            role = m["role"]
            if role in ("system", "developer"):
                instructions.append(_text_of(m.get("content")))
            elif role == "tool":
                items.append({"type": "function_call_output", "call_id": m["tool_call_id"],
                              "output": _tool_output(m.get("content"))})
            elif role == "user":
                items.append({"type": "message", "role": "user",
                              "content": self._content(m.get("content"))})
            else:
                items += self._assistant(m)
        body: Dict[str, Any] = {"model": model, "input": items, "stream": True}
        if instructions:
            body["instructions"] = "\n\n".join(instructions)
        if options.get("max_tokens") is not None:
            body["max_output_tokens"] = options.pop("max_tokens")
        options.pop("max_tokens", None)
        if options.get("tools") is not None:
            body["tools"] = [self._tool(t) for t in options.pop("tools")]
        if options.get("tool_choice") is not None:
            choice = options.pop("tool_choice")
            name = _choice_name(choice)
            body["tool_choice"] = {"type": "function", "name": name} if name else choice
        if options.get("response_format") is not None:
            text = dict(options.pop("text", None) or {})
            text["format"] = self._format(options.pop("response_format"))
            body["text"] = text
        body.update({k: v for k, v in options.items() if v is not None})
        headers = {"Accept": "text/event-stream", **self.headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return _Request(_endpoint(base_url, "/responses"), headers, body, model)

    def _assistant(self, m: Mapping[str, Any]) -> List[Dict[str, Any]]:
        native = m.get("native")
        if isinstance(native, Mapping) and native.get("protocol") == self.name:
            # the turn as the server sent it: reasoning (encrypted or by id),
            # built-in tool items, messages and calls, in their order
            return [dict(i) for i in native.get("content") or ()]
        items: List[Dict[str, Any]] = []
        text = _text_of(m.get("content")) or m.get("refusal") or ""
        if text:
            # EasyInputMessage: a plain string is how every server takes an
            # assistant turn (an output_text part wants its item's id and status)
            items.append({"type": "message", "role": "assistant", "content": text})
        items += [{"type": "function_call", "call_id": tc["id"],
                   "name": tc["function"]["name"],
                   "arguments": tc["function"].get("arguments") or "{}"}
                  for tc in m.get("tool_calls") or ()]
        return items

    @staticmethod
    def _content(content: Any) -> Any:
        """A user turn's content: a string as is, parts as input_text/input_image."""
        if content is None or isinstance(content, str):
            return content or ""
        parts: List[Dict[str, Any]] = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "input_text", "text": part.get("text", "")})
            elif kind == "image_url":
                image = part.get("image_url")
                detail = image.get("detail") if isinstance(image, Mapping) else None
                parts.append({"type": "input_image", "image_url": _image_url(part),
                              "detail": detail or "auto"})
            else:  # input_file, input_image, ...: native parts pass through
                parts.append(dict(part))
        return parts

    @staticmethod
    def _tool(tool: Mapping[str, Any]) -> Dict[str, Any]:
        """A chat-style function schema, flattened; built-in tools pass as given."""
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            return dict(tool)  # web_search, file_search, mcp, or a flat function
        out = {"type": "function", "name": fn["name"],
               "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
               # Responses functions are strict unless told; Chat Completions'
               # are not, and a strict schema must list every property as required
               "strict": bool(fn.get("strict", False))}
        if fn.get("description"):
            out["description"] = fn["description"]
        return out

    @staticmethod
    def _format(fmt: Any) -> Dict[str, Any]:
        """Chat Completions' response_format as Responses' text.format."""
        kind, spec = _json_format(fmt)
        if kind != "json_schema":
            return {"type": kind or "text"}
        out: Dict[str, Any] = {"type": "json_schema", "name": spec.pop("name", "response")}
        out.update(spec)
        return out


# ------------------------------------------------------------------ fake ---

@dataclass(frozen=True)
class _Finish:
    reason: str


_Reply = Union[str, Sequence[Union[str, float, Event, BaseException, _Finish]]]


def _words(text: str) -> List[str]:
    """Word-sized pieces, each with the spaces before it, as tokens come."""
    return re.findall(r"\s*\S+|\s+$", text)


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh copy to raise, so the script's own instance gets no ``.partial``
    or traceback and can be raised again on the next call."""
    try:
        return copy.copy(exc)
    except Exception:  # an exception class copy cannot rebuild from its args
        return exc


class FakeProvider(_Provider):
    """A provider that streams scripted replies, for testing your own code.

    Each call (each attempt, retries included) takes the next reply; the
    last one repeats. A reply is a ``str`` (word-sized text deltas, finish
    ``stop``) or a list of items:

    - ``str``: one text delta;
    - ``Event("reasoning", text=...)``, ``Event("tool_call", index=, id=,
      name=, arguments=)`` (arguments sent in word-sized fragments, as the
      real servers split them), ``Event("usage", usage=Usage(...))`` (sent
      after the finish chunk, as OpenAI does);
    - ``FakeProvider.finish("length")``: the finish reason (default
      ``tool_calls`` if the reply has a tool call, else ``stop``);
    - a float: the server is silent that many seconds (``stall_timeout``,
      ``deadline`` and ``Stream.close()`` interrupt it);
    - an exception instance: raised there (a copy), with ``.partial``; an
      error before any delta is retried as a real one is (``max_retries``);
      an ``IncompleteStreamError`` cuts the stream, which the core reports.
      Other exceptions meet the core as a transport's would (an ``OSError``
      becomes ``APIConnectionError``; ``KeyboardInterrupt`` passes through).

    The replies are rendered as Chat Completions SSE and read by the same
    core and parser as ``OpenAI``'s, so events, accumulation, retries and
    errors are the real ones. ``.requests`` lists what each attempt sent:
    dicts with ``messages`` (OpenAI-style), ``model`` and ``options``.

        fake = ls.FakeProvider("Hello there", [ls.RateLimitError("slow", status=429), "ok"])
        assert fake.chat("Hi").text == "Hello there"
    """

    name = "fake"
    default_base_url = "http://fake.invalid/v1"
    default_model = "fake-model"
    _parser = _OpenAIParser
    _retry_base = 0.01  # tests should not wait half a second per scripted retry
    _options = OpenAI._options
    _body_fields = OpenAI._body_fields

    def __init__(self, *replies: _Reply, model: Optional[str] = None, max_retries: int = 2,
                 stall_timeout: Optional[float] = None,
                 deadline: Optional[float] = None) -> None:
        """replies: what successive calls stream (the last repeats).
        model, max_retries, stall_timeout, deadline: as for real providers."""
        super().__init__(model=model, max_retries=max_retries,
                         stall_timeout=stall_timeout, deadline=deadline)
        if not replies:
            raise ValueError("FakeProvider needs at least one reply, e.g. FakeProvider('Hi')")
        for reply in replies:
            for item in [reply] if isinstance(reply, str) else reply:
                known = isinstance(item, (str, Event, BaseException, _Finish)) or (
                    isinstance(item, (int, float)) and not isinstance(item, bool))
                if not known or (isinstance(item, Event) and item.type == "done"):
                    raise TypeError(f"FakeProvider cannot stream {item!r}: a reply is a str or "
                                    "a list of str, Event, float (a stall), exception "
                                    "or FakeProvider.finish(reason)")
        self.replies = list(replies)
        self.requests: List[Dict[str, Any]] = []
        self._calls = 0
        self._script_lock = threading.Lock()

    @staticmethod
    def finish(reason: str) -> Any:
        """A reply item that ends it with this Chat Completions finish reason."""
        return _Finish(reason)

    def _require_key(self, base_url: str) -> Optional[str]:
        return None

    def _build(self, messages: List[Dict[str, Any]], model: str, base_url: str,
               key: Optional[str], options: Dict[str, Any]) -> _Request:
        messages = [_openai_turn(m, None) if m["role"] == "assistant" else m
                    for m in messages]
        return _Request(_endpoint(base_url, "/chat/completions"), {},
                        {"messages": messages, "model": model, "options": options}, model)

    def _send(self, req: _Request, control: _Control
              ) -> Tuple[bool, Iterator[bytes], Callable[[bool], None]]:
        with self._script_lock:
            self.requests.append(copy.deepcopy(req.body))  # later changes do not show
            reply = self.replies[min(self._calls, len(self.replies) - 1)]
            self._calls += 1
            head = {"id": f"chatcmpl-fake-{self._calls}", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": req.model}
        chunks = self._play(_words(reply) if isinstance(reply, str) else list(reply),
                            head, control)
        return False, chunks, lambda read: chunks.close()

    @staticmethod
    def _play(items: List[Any], head: Dict[str, Any], control: _Control
              ) -> Generator[bytes, None, None]:
        """The reply as the bytes of a Chat Completions stream, one event a read."""

        def sse(delta: Optional[Dict[str, Any]], finish: Optional[str] = None,
                **extra: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta,
                                                 "finish_reason": finish}]
            return b"data: " + json.dumps({**head, "choices": choices, **extra}).encode() + b"\n\n"

        yield sse({"role": "assistant", "content": ""})
        usage, reason = None, None
        calls = any(isinstance(i, Event) and i.type == "tool_call" for i in items)
        for item in items:
            if isinstance(item, _Finish):
                reason = item.reason
            elif isinstance(item, BaseException):
                if isinstance(item, IncompleteStreamError):
                    return  # cut: the core sees a stream without its end
                raise _copy_error(item)
            elif isinstance(item, (int, float)):
                if control.wake.wait(item):  # killed: past a limit, or closed
                    raise APIConnectionError("the fake stream was interrupted")
            elif isinstance(item, str):
                yield sse({"content": item})
            elif item.type in ("text", "reasoning"):
                yield sse({"content" if item.type == "text" else "reasoning_content": item.text})
            elif item.type == "usage":
                usage = item.usage or Usage()
            else:  # tool_call: a head with id and name, then argument fragments
                index = {"index": item.index}
                if item.name is not None or item.id is not None:
                    yield sse({"tool_calls": [{**index, "id": item.id or f"call_{item.index}",
                                               "type": "function",
                                               "function": {"name": item.name or "",
                                                            "arguments": ""}}]})
                for piece in _words(item.arguments):
                    yield sse({"tool_calls": [{**index, "function": {"arguments": piece}}]})
        yield sse({}, reason or ("tool_calls" if calls else "stop"))
        if usage is not None:
            yield sse(None, usage={
                "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}})
        yield b"data: [DONE]\n\n"


# ------------------------------------------------------------ public API ---

openai = OpenAI()
anthropic = Anthropic()
gemini = Gemini()
openai_responses = OpenAIResponses()

_PROVIDERS: Dict[str, _Provider] = {"openai": openai, "anthropic": anthropic, "gemini": gemini,
                                   "openai-responses": openai_responses}


def _provider(name: Optional[str]) -> _Provider:
    name = name or os.environ.get("LLM_PROVIDER") or "openai"
    try:
        return _PROVIDERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; expected one of: "
                         f"{', '.join(sorted(_PROVIDERS))}") from None


def stream_chat(messages: Messages, model: Optional[str] = None, *,
                provider: Optional[str] = None,
                **options: Any) -> Stream[str]:
    """Stream text deltas from ``provider`` (default: $LLM_PROVIDER or openai).

        for text in ls.stream_chat("Hi", provider="anthropic"):
            print(text, end="")
    """
    return _provider(provider).stream_chat(messages, model, **options)


def stream_events(messages: Messages, model: Optional[str] = None, *,
                  provider: Optional[str] = None, **options: Any) -> Stream[Event]:
    """Stream typed events from ``provider``; the last one is ``done``."""
    return _provider(provider).stream_events(messages, model, **options)


def chat(messages: Messages, model: Optional[str] = None, *,
         provider: Optional[str] = None, **options: Any) -> Completion:
    """Return the whole ``Completion`` from ``provider``."""
    return _provider(provider).chat(messages, model, **options)


def stream_with_callbacks(
    events: Iterable[Event],
    *,
    on_content: Optional[Callable[[str], Any]] = None,
    on_reasoning: Optional[Callable[[str], Any]] = None,
    on_tool_call: Optional[Callable[[Event], Any]] = None,
    on_finish: Optional[Callable[[Completion], Any]] = None,
    on_error: Optional[Callable[[Exception], Any]] = None,
) -> Optional[Completion]:
    """Drive a ``stream_events`` iterator with Go-style callbacks.

    Exactly one of ``on_finish(completion)`` / ``on_error(exc)`` is called.
    Without ``on_error`` the error propagates. An exception raised by a
    callback closes the stream and propagates; it is never swallowed.

        ls.stream_with_callbacks(ls.stream_events("Hi"),
                                 on_content=print, on_finish=lambda c: None)
    """
    completion: Optional[Completion] = None
    it = iter(events)
    try:
        while True:
            try:
                ev = next(it)
            except StopIteration:
                break
            except LLMStreamerError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                return None
            if ev.type == "text" and on_content is not None:
                on_content(ev.text)
            elif ev.type == "reasoning" and on_reasoning is not None:
                on_reasoning(ev.text)
            elif ev.type == "tool_call" and on_tool_call is not None:
                on_tool_call(ev)
            elif ev.type == "done":
                completion = ev.completion
    finally:
        _close(it)
    if completion is None:
        missing = IncompleteStreamError("the event stream ended without a done event")
        if on_error is None:
            raise missing
        on_error(missing)
        return None
    if on_finish is not None:
        on_finish(completion)
    return completion


# ------------------------------------------------------------------- CLI ---

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPT = 0, 1, 2, 3, 130


def _cli_parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="llmstreamer",
        description="Stream a chat completion to stdout. The prompt comes from the "
                    "arguments, else from stdin.",
        epilog="exit codes: 0 ok, 1 API or connection error, 2 usage or configuration "
               "error, 3 incomplete stream, 130 interrupted")
    p.add_argument("prompt", nargs="*", help="the prompt (default: read stdin)")
    p.add_argument("-p", "--provider",
                   help=f"{', '.join(sorted(_PROVIDERS))} (default: $LLM_PROVIDER or openai)")
    p.add_argument("-m", "--model", help="default: $<PROVIDER>_MODEL or the provider's")
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument("--base-url", help="server URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--timeout", type=float,
                   help="read timeout in seconds (and connect, up to 10)")
    p.add_argument("--stats", action="store_true",
                   help="time to first token, tokens/s, usage, finish reason on stderr")
    p.add_argument("--json", action="store_true", help="one JSON object per event (JSON Lines)")
    p.add_argument("--reasoning", action="store_true", help="show reasoning on stderr")
    p.add_argument("--chat", action="store_true",
                   help="multi-turn chat; history is kept; Ctrl-C stops an answer, "
                        "Ctrl-D or Ctrl-C at the prompt ends")
    p.add_argument("--version", action="version", version=f"llmstreamer {__version__}")
    return p


class _Stopped(KeyboardInterrupt):
    """Ctrl-C during an answer, with the text that had arrived."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class _Out:
    """The CLI's writes: what the terminal cannot encode (a lone surrogate a
    server sent) is replaced, never a crash; reasoning is set apart."""

    def __init__(self, args: Any) -> None:
        self.json, self.show_reasoning = args.json, args.reasoning
        self.dim = not args.json and _isatty(sys.stderr)
        self.in_reasoning = False

    @staticmethod
    def write(stream: Any, text: str) -> None:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            enc = getattr(stream, "encoding", None) or "utf-8"
            text = _SURROGATE.sub("\ufffd", text)
            stream.write(text.encode(enc, "replace").decode(enc))
        stream.flush()

    def jsonl(self, obj: Dict[str, Any]) -> None:
        self.write(sys.stdout, json.dumps(_json_safe(obj), ensure_ascii=False,
                                          allow_nan=False) + "\n")

    def event(self, ev: Event) -> None:
        if self.json:
            self.jsonl(_event_dict(ev))
        elif ev.type == "reasoning" and self.show_reasoning:
            if not self.in_reasoning:
                self.in_reasoning = True
                self.write(sys.stderr, "\x1b[2m" if self.dim else "[reasoning]\n")
            self.write(sys.stderr, ev.text)
        elif ev.type == "text":
            self.end_reasoning()
            self.write(sys.stdout, ev.text)

    def end_reasoning(self) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self.write(sys.stderr, "\x1b[0m\n" if self.dim else "\n[end of reasoning]\n")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_safe(value: Any) -> Any:
    """JSON every parser takes: NaN and infinities become null, lone
    surrogates U+FFFD."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _event_dict(ev: Event) -> Dict[str, Any]:
    """One event as ``--json`` prints it."""
    out: Dict[str, Any] = {"type": ev.type}
    if ev.type in ("text", "reasoning"):
        out["text"] = ev.text
    elif ev.type == "tool_call":
        out.update(index=ev.index, id=ev.id, name=ev.name, arguments=ev.arguments)
    elif ev.type == "usage" and ev.usage is not None:
        out["usage"] = ev.usage.__dict__
    elif ev.type == "done" and ev.completion is not None:
        c = ev.completion
        out.update(finish_reason=c.finish_reason, stop_reason=c.stop_reason, model=c.model,
                   id=c.id, usage=c.usage.__dict__ if c.usage else None, ttft=c.ttft,
                   elapsed=c.elapsed, retries=c.retries,
                   tool_calls=[c.__dict__ for c in c.tool_calls])
    return out


def _cli_turn(provider: _Provider, messages: List[Dict[str, Any]], args: Any,
              options: Dict[str, Any]) -> Completion:
    out = _Out(args)
    completion: Optional[Completion] = None
    texts: List[str] = []
    usage: Optional[Usage] = None
    t0, ttft = time.monotonic(), None
    events = provider.stream_events(messages, args.model, **options)
    try:
        for ev in events:
            if ev.type in ("text", "reasoning", "tool_call") and ttft is None:
                ttft = time.monotonic() - t0
            if ev.type == "text":
                texts.append(ev.text)
            elif ev.type == "usage":
                usage = ev.usage
            elif ev.type == "done":
                completion = ev.completion
            out.event(ev)
    except KeyboardInterrupt:
        _close(events)  # first: the server sees the connection close at once
        out.end_reasoning()
        text = "".join(texts)
        out.write(sys.stderr, "\n")  # after the ^C the terminal echoed, or the open line
        if args.stats:
            partial = Completion(text=text, usage=usage, ttft=ttft, provider=provider.name,
                                 elapsed=time.monotonic() - t0, finish_reason="interrupted")
            out.write(sys.stderr, _stats(partial) + "\n")
        raise _Stopped(text) from None
    except LLMStreamerError:
        out.end_reasoning()
        raise
    finally:
        _close(events)
    assert completion is not None
    out.end_reasoning()
    if not args.json and completion.text and not completion.text.endswith("\n"):
        out.write(sys.stdout, "\n")
    if args.stats:
        out.write(sys.stderr, _stats(completion) + "\n")
    return completion


def _stats(c: Completion) -> str:
    parts = [f"ttft {c.ttft * 1000:.0f} ms" if c.ttft is not None else "ttft -",
             f"total {c.elapsed:.2f} s"]
    u = c.usage
    if u is not None:
        streamed = c.elapsed - (c.ttft or 0)
        if streamed > 0 and u.output_tokens:
            parts.append(f"{u.output_tokens / streamed:.1f} tokens/s")
        prompt = u.input_tokens
        if c.provider == "anthropic":  # its input_tokens leave out cache reads and writes
            prompt = max(prompt, u.total_tokens - u.output_tokens)
        tokens = f"tokens in {prompt}"
        if u.cached_tokens:
            tokens += f" ({u.cached_tokens} cached)"
        tokens += f" out {u.output_tokens}"
        if u.reasoning_tokens:
            tokens += f" ({u.reasoning_tokens} reasoning)"
        parts.append(tokens)
    if c.finish_reason == "interrupted":
        parts.append("interrupted")
    else:
        parts += [f"finish {c.finish_reason} ({c.stop_reason})", f"retries {c.retries}"]
    return "[" + ", ".join(parts) + "]"


# The library's messages name Python arguments; the command line names its own.
_CLI_WORDS = (
    (" (see .partial)", ""),
    ("pass api_key= or set ", "set "),
    ("(api_key= or ", "(set "),
    ("base_url", "--base-url"),
)
# What a client sees when TLS meets a plain-HTTP server, or plain HTTP a TLS server
_TLS_MISMATCH = {
    "https": re.compile(r"wrong.version.number|record layer failure|packet length too long",
                        re.I),
    "http": re.compile(r"Connection reset by peer|Remote end closed connection without "
                       r"response|BadStatusLine|\\x15\\x03", re.I),
}


def _cli_message(exc: BaseException, base_url: str) -> str:
    """``exc`` as one line that says what to do on the command line."""
    text = _one_line(exc)
    for old, new in _CLI_WORDS:
        text = text.replace(old, new)
    wait = getattr(exc, "retry_after", None)
    slow = "slow down, or wait for retry_after seconds"
    if wait is not None:
        after = f"retry after {wait:.0f} s"
        text = text.replace(slow, after) if slow in text else f"{text} ({after})"
    text = text.replace(slow, "slow down and try again later")
    scheme = urlsplit(base_url).scheme
    mismatch = _TLS_MISMATCH.get(scheme)
    if isinstance(exc, APITimeoutError):
        # a plain-HTTP server may wait for the rest of a TLS hello that holds
        # no newline: the handshake times out (after the connect timeout)
        if scheme == "https" and "sent no response" in text:
            text += " (is the server http or https?)"
    elif isinstance(exc, APIConnectionError):
        if mismatch is not None and mismatch.search(text):
            text += " (is the server http or https?)"
        elif "Connection refused" in text and "through the proxy" not in text:
            text += " (is the server running? check --base-url)"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: ``llmstreamer [options] [PROMPT...]``; returns the exit code."""
    args = _cli_parser().parse_args(argv)
    base_url = ""
    try:
        base = _provider(args.provider)
        provider = type(base)(base_url=args.base_url,
                              timeout=(min(10.0, args.timeout), args.timeout) if args.timeout
                              else DEFAULT_TIMEOUT)
        base_url = provider._base_url()
        if urlsplit(base_url).scheme not in ("http", "https"):  # nothing sent, no retries
            where = "--base-url" if args.base_url else f"${provider.base_env}"
            raise ValueError(f"{where} {base_url} has no scheme: write http://{base_url} "
                             f"or https://{base_url}")
        options = {k: v for k, v in (("system", args.system), ("max_tokens", args.max_tokens),
                                     ("temperature", args.temperature)) if v is not None}
        if args.chat:
            return _cli_chat(provider, args, options)
        prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read().rstrip("\n")
        if not prompt.strip():
            raise ValueError("no prompt: pass it as arguments or on stdin")
        _cli_turn(provider, [{"role": "user", "content": prompt}], args, options)
        return EXIT_OK
    except KeyboardInterrupt as stop:
        return _cli_error(args, "interrupted", "interrupted", EXIT_INTERRUPT,
                          newline=not isinstance(stop, _Stopped))
    except BrokenPipeError:
        # stdout's reader went away (`llmstreamer ... | head -1`); the stream is
        # closed already. Point stdout at devnull so the flush at exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_API
    except LLMStreamerError as exc:
        return _cli_error(args, _cli_message(exc, base_url), type(exc).__name__,
                          _exit_code(exc), exc=exc)
    except (ValueError, TypeError) as exc:  # arguments the call rejected
        return _cli_error(args, _one_line(exc), "usage", EXIT_USAGE)


def _exit_code(exc: LLMStreamerError) -> int:
    if isinstance(exc, IncompleteStreamError):
        return EXIT_INCOMPLETE
    if isinstance(exc, AuthenticationError) and exc.status is None:
        return EXIT_USAGE  # no key configured: nothing was sent
    return EXIT_API


def _cli_error(args: Any, message: str, kind: str, code: int, newline: bool = False,
               exc: Optional[LLMStreamerError] = None) -> int:
    """One line on stderr; with --json also a ``{"type": "error"}`` line on stdout."""
    partial = exc.partial if exc is not None else None
    cut = partial is not None and partial.text and not partial.text.endswith("\n")
    if args.json:
        line: Dict[str, Any] = {"type": "error", "error": kind, "message": message,
                                "exit_code": code}
        if isinstance(exc, APIError):
            line.update(status=exc.status, retry_after=exc.retry_after)
        _Out(args).jsonl(line)
    newline = newline or bool(cut and not args.json)  # the answer's line is open
    _Out.write(sys.stderr, ("\n" if newline else "") + f"llmstreamer: {message}\n")
    return code


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # a server's message may hold newlines


def _cli_chat(provider: _Provider, args: Any, options: Dict[str, Any]) -> int:
    """Ask, answer, repeat. An error or Ctrl-C ends a turn, not the session;
    what arrived stays on screen and in the history."""
    history: List[Dict[str, Any]] = []
    read = _prompt_reader()
    if args.prompt:
        history.append({"role": "user", "content": " ".join(args.prompt)})
    while True:
        if not history or history[-1]["role"] != "user":
            try:
                line = read()
            except (KeyboardInterrupt, EOFError):
                _Out.write(sys.stderr, "\n")
                return EXIT_OK
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
        try:
            history.append(_cli_turn(provider, history, args, options).message)
        except _Stopped as stop:
            if stop.text:
                history.append({"role": "assistant", "content": stop.text})
            else:
                history.pop()  # nothing came: the question may be asked again
            _Out.write(sys.stderr, "[stopped]\n")
        except LLMStreamerError as exc:
            if _exit_code(exc) == EXIT_USAGE:
                raise  # asking again cannot help: fix the setup
            _cli_error(args, _cli_message(exc, provider._base_url()), type(exc).__name__,
                       _exit_code(exc), exc=exc)
            if exc.partial is not None and exc.partial.text:
                history.append({"role": "assistant", "content": exc.partial.text})
            else:
                history.pop()


def _prompt_reader() -> Callable[[], str]:
    """``> `` prompts: with line editing and history (readline) on a terminal."""
    if _isatty(sys.stdin) and _isatty(sys.stdout):
        try:
            import readline  # noqa: F401  (input() uses it once imported)
        except ImportError:  # Windows, or a Python built without it
            pass
        return lambda: input("> ")

    def read() -> str:
        _Out.write(sys.stderr, "> ")
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


if __name__ == "__main__":
    raise SystemExit(main())
