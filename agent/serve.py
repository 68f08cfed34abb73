"""`agent serve`: an OpenAI-compatible HTTP server over any `LLM`.

`ChatServer` puts one model (the in-process `TransformersLLM` by default)
behind `POST /v1/chat/completions`, so several processes or hosts can share
one loaded model, and `OpenAICompatLLM` talks to it as it talks to vLLM or
SGLang. Thinking goes out as `reasoning_content`, tool calls as `tool_calls`,
streams as server-sent events ending in `data: [DONE]`.

The HTTP/1.1 handling is small and built on asyncio streams: bodies come with
a Content-Length (capped), connections are kept alive, and a malformed
request gets a 4xx answer in the OpenAI error shape. Requests are served
concurrently; a client that hangs up stops its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import hmac
import http
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

from .errors import AgentError
from .events import ModelResponse
from .llm.base import LLM, ContextLengthError, InvalidRequestError, LLMError, LLMRequest
from .llm.openai_compat import decode_arguments
from .types import Effort, Message, ToolCallRequest, Usage

log = logging.getLogger(__name__)

API_KEY_ENV = "AGENT_SERVE_API_KEY"
# Bodies larger than this are read and checked on a worker thread: a 15 MB request took the
# event loop for seconds (every other client, /health too, waited).
OFF_LOOP_BYTES = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
PROBE_EVERY = 0.25  # seconds between probes of a client whose input ended while it waits for an answer
ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",),
    "/v1/models": ("GET",),
    "/v1/chat/completions": ("POST",),
}

T = TypeVar("T")


class HTTPError(Exception):
    """A request the server answers with an error status and OpenAI error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.close = close
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Drop(Exception):
    """End the connection without a (further) answer: the client hung up, or an answer broke off."""


# --------------------------------------------------------------------------- request bodies


class _Wire(BaseModel):
    # Clients send fields this server does not use (top_p, seed, user...): they are ignored.
    model_config = ConfigDict(extra="ignore")


class WireFunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] = "{}"


class WireToolCall(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: WireFunctionCall


class WireMessage(_Wire):
    """A chat message as OpenAI clients send it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None  # a string, a list of text parts, or null (checked in `to_message`)
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class WireFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class WireTool(_Wire):
    type: Literal["function"]
    function: WireFunction


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    """The body of `POST /v1/chat/completions` (the fields this server reads)."""

    model: str | None = None
    messages: list[WireMessage] = Field(min_length=1)
    tools: list[WireTool] | None = None
    tool_choice: Any = None  # "auto" | "required" | "none" | {"type": "function", "function": {"name": ...}}
    # OpenAI's "minimal" is the least this server has: low. Null is the default, as for every field.
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    # Strict: `true` is no token count, nor "10"; a JSON integer may be written 10.0.
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = 1
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None

    def to_llm_request(self, default_effort: Effort | None = None) -> LLMRequest:
        """The backend request; raises `HTTPError` for what this server cannot honour."""
        if self.n not in (1, None):
            raise HTTPError(
                400, "this server returns one choice per request: n must be 1", code="unsupported", param="n"
            )
        if self.logprobs:
            raise HTTPError(400, "this server does not return logprobs", code="unsupported", param="logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise HTTPError(
                400,
                "response_format other than text is not supported",
                code="unsupported",
                param="response_format",
            )
        tools = [t.model_dump(exclude_none=True) for t in self.tools or []]
        tools, choice = _tool_choice(self.tool_choice, tools)
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return LLMRequest(
            messages=[to_message(m, i) for i, m in enumerate(self.messages)],
            tools=tools,
            tool_choice=choice,
            effort=_effort(self.reasoning_effort) or default_effort or "medium",
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            # Below 1e-5 sampling divides by next to nothing (1e-38 gave inf): greedy is what it means.
            temperature=0.0 if self.temperature is not None and self.temperature < 1e-5 else self.temperature,
            stop=[s for s in stop if s],
        )


def _effort(asked: str | None) -> Effort | None:
    """OpenAI's "minimal" is the least this server has: low."""
    return "low" if asked == "minimal" else asked  # type: ignore[return-value]


def _tool_choice(
    value: Any, tools: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], Literal["auto", "required", "none"]]:
    """(tools, choice): a named function narrows the tools to it and requires a call."""
    if value is None:
        return tools, "auto"
    if value in ("auto", "required", "none"):
        if value == "required" and not tools:
            raise HTTPError(
                400, "tool_choice 'required' needs tools", code="invalid_value", param="tool_choice"
            )
        return tools, value
    name = None
    if (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
    ):
        name = value["function"].get("name")
    if not isinstance(name, str):
        raise HTTPError(
            400,
            "tool_choice must be 'auto', 'required', 'none' or "
            '{"type": "function", "function": {"name": "..."}}',
            code="invalid_value",
            param="tool_choice",
        )
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        raise HTTPError(
            400,
            f"tool_choice names {name!r}, which is not in tools",
            code="invalid_value",
            param="tool_choice",
        )
    return chosen, "required"


def to_message(m: WireMessage, index: int = 0) -> Message:
    """One wire message as a `Message` (developer becomes system)."""
    content = m.content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise HTTPError(
                    400,
                    f"messages[{index}].content: only text parts are supported, got {kind or type(part).__name__!r}",
                    code="unsupported",
                    param=f"messages.{index}.content",
                )
            texts.append(part["text"])
        content = "\n".join(texts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise HTTPError(
            400,
            f"messages[{index}].content must be a string or a list of text parts",
            code="invalid_type",
            param=f"messages.{index}.content",
        )
    if m.tool_calls and m.role != "assistant":
        raise HTTPError(
            400,
            f"messages[{index}]: only assistant messages carry tool_calls",
            code="invalid_value",
            param=f"messages.{index}.tool_calls",
        )
    calls = [
        decode_arguments(
            c.function.name,
            c.function.arguments
            if isinstance(c.function.arguments, str)
            else json.dumps(c.function.arguments),
            c.id,
        )
        for c in m.tool_calls or []
    ]
    return Message(
        role="system" if m.role == "developer" else m.role,
        content=content,
        thinking=m.reasoning_content,
        tool_calls=calls,
        tool_call_id=m.tool_call_id if m.role == "tool" else None,
        name=m.name,
    )


def _validation_error(e: ValidationError) -> HTTPError:
    errors = e.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    param = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    return HTTPError(
        400, "invalid request: " + "; ".join(parts) + more, code="invalid_request", param=param or None
    )


# --------------------------------------------------------------------------- response bodies


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _readable_calls(response: ModelResponse) -> tuple[list[ToolCallRequest], str, str]:
    """The calls a client can run, the text of those it cannot, and the finish reason.

    A call the parser could not read (bad JSON, a `<tool_call>` that is prose)
    is not sent as a call a client would try to run: its text goes back as
    content, as a server whose tool parser fails returns the text.
    """
    readable = [c for c in response.tool_calls if c.parse_error is None]
    unread = "\n".join(
        c.raw_arguments for c in response.tool_calls if c.parse_error is not None and c.raw_arguments
    )
    finish = response.finish_reason
    if not readable and finish == "tool_calls":
        finish = "stop"
    return readable, unread, finish


def _wire_tool_calls(calls: list[ToolCallRequest], *, indexed: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        if call.arguments is not None:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
        else:
            arguments = call.raw_arguments if call.raw_arguments is not None else "{}"
        wire: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }
        out.append({"index": i, **wire} if indexed else wire)
    return out


def _wire_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": usage.thinking_tokens},
    }


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class _Connection:
    """One client connection: a read buffer over the stream, and its writer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytearray = field(default_factory=bytearray)
    busy: bool = False  # a request has arrived and is being answered
    answering: bool = False  # the status line of the current answer is sent
    chunked: bool = False
    write_timeout: float = 60.0  # a client that reads none of the answer for this long is dropped

    async def fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        data = await self.reader.read(65536)
        if not data:
            return False
        self.buffer += data
        return True

    async def read_head(self, limit: int) -> bytes:
        """A request's head, up to the empty line that ends it: CRLF CRLF, or LF LF (lines
        that end with a bare LF, which RFC 9112 lets a server take)."""
        while True:
            ends = [(i, m) for m in (b"\r\n\r\n", b"\n\n") if (i := self.buffer.find(m, 0, limit + 4)) >= 0]
            if ends:
                end, marker = min(ends)
                data = bytes(self.buffer[:end])
                del self.buffer[: end + len(marker)]
                return data
            if len(self.buffer) >= limit + 4:
                raise HTTPError(
                    431,
                    f"the request head is larger than {limit // 1024} KiB",
                    code="head_too_large",
                    close=True,
                )
            if not await self.fill():
                raise _Drop

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self.fill():
                raise _Drop
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def end_of_input(self) -> bool:
        """Return once the client closes its side of the connection (True), or floods
        it while we answer (False)."""
        while len(self.buffer) <= MAX_HEAD_BYTES:
            if not await self.fill():
                return True
        return False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.writer.drain()
        except TimeoutError:
            # A client that stopped reading: its buffers are full and the model would go on
            # to max_tokens for nobody. The connection goes, and with it the generation.
            self.writer.transport.abort()
            raise ConnectionError(f"the client read nothing for {self.write_timeout:g} s") from None

    async def send_head(self, status: int, headers: dict[str, str]) -> None:
        self.answering = True
        lines = [
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send_chunk(self, data: bytes) -> None:
        await self.send(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)


def _parse_head(head: bytes) -> _Request:
    try:
        text = head.decode("latin-1").lstrip("\r\n")
        request_line, *header_lines = (line.removesuffix("\r") for line in text.split("\n"))
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HTTPError(400, "malformed request line", code="bad_request", close=True) from None
    if not method.isalpha() or not method.isupper() or not target.startswith("/"):
        raise HTTPError(
            400, f"malformed request line: {request_line[:100]!r}", code="bad_request", close=True
        )
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(
            400, f"unsupported protocol {version[:20]!r}; use HTTP/1.1", code="bad_request", close=True
        )
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HTTPError(400, f"malformed header line: {line[:100]!r}", code="bad_request", close=True)
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return _Request(method=method, path=target.split("?", 1)[0], version=version, headers=headers)


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise HTTPError(
            411,
            "send the body with a Content-Length header; chunked request bodies are not supported",
            code="length_required",
            close=True,
        )
    values = {v.strip() for v in headers.get("content-length", "0").split(",")}
    if len(values) != 1 or not ((value := values.pop()).isascii() and value.isdigit() and len(value) <= 18):
        raise HTTPError(400, "invalid Content-Length header", code="bad_request", close=True)
    return int(value)


# --------------------------------------------------------------------------- the server


class ChatServer:
    """An OpenAI-compatible HTTP server over one `LLM`.

    ```python
    async with ChatServer(TransformersLLM(), port=0) as server:
        llm = OpenAICompatLLM("any", base_url=server.base_url)
        ...
    ```

    `effort` is the reasoning effort for requests that name none; `api_key`,
    when set, must come as `Authorization: Bearer KEY` on every `/v1` route.
    The model name a client sends is not checked: the server has one model,
    named `model_name` (default `llm.name`) in `/v1/models` and in answers.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        effort: Effort | None = None,
        model_name: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        keep_alive_timeout: float = 60.0,
        read_timeout: float = 30.0,
        write_timeout: float = 60.0,
    ) -> None:
        self.llm = llm
        self.host = host
        self.port = port
        self.api_key = api_key or None
        self.effort = effort
        self.model_name = model_name or llm.name
        self.max_body_bytes = max_body_bytes
        self.keep_alive_timeout = keep_alive_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.created = int(time.time())
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._closing = False

    # -- life cycle

    async def start(self, sock: socket.socket | None = None) -> ChatServer:
        """Start listening on `host:port`, or on an already bound `sock`."""
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        address = self._server.sockets[0].getsockname()
        self.host, self.port = address[0], address[1]
        return self

    @property
    def base_url(self) -> str:
        """The URL clients use as `base_url`, e.g. `http://127.0.0.1:8000/v1`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, let requests in flight finish for up to `grace` seconds, then cancel them."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, conn in list(self._connections.items()):
            if not conn.busy:  # waiting for a next request that will not be served
                task.cancel()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def abort(self) -> None:
        """Cancel every request in flight now (a second Ctrl-C)."""
        for task in list(self._connections):
            task.cancel()

    async def __aenter__(self) -> ChatServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_until_signal(self, grace: float = 5.0) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (a second signal cuts it short)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                self.abort()
            stop.set()

        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        try:
            await stop.wait()
            await self.close(grace)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer, write_timeout=self.write_timeout)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = conn
        try:
            while not self._closing:
                try:
                    request = await self._read_request(conn)
                except HTTPError as e:
                    await self._send_error(conn, e, keep_alive=False)
                    await self._linger(conn)
                    break
                if request is None:
                    break
                conn.busy = True
                keep_alive = await self._respond(conn, request) and not self._closing
                conn.busy = False
                if not keep_alive:
                    break
        except (_Drop, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Cancelled by close() or abort(). Ending normally keeps asyncio from
            # logging the cancellation as an error of the connection callback.
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            try:
                async with asyncio.timeout(2.0):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError):
                writer.transport.abort()

    async def _read_request(self, conn: _Connection) -> _Request | None:
        """The next request, or None when the client closed or went quiet between requests."""
        try:
            async with asyncio.timeout(self.keep_alive_timeout):
                if not conn.buffer and not await conn.fill():
                    return None
        except TimeoutError:
            return None
        try:
            async with asyncio.timeout(self.read_timeout):
                request = _parse_head(await conn.read_head(MAX_HEAD_BYTES))
                length = _content_length(request.headers)
                if length > self.max_body_bytes:
                    raise HTTPError(
                        413,
                        f"the request body is {length} bytes; this server accepts at most {self.max_body_bytes}",
                        code="body_too_large",
                        close=True,
                    )
                if length and request.headers.get("expect", "").lower() == "100-continue":
                    await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.body = await conn.read_exactly(length)
                return request
        except TimeoutError:
            raise HTTPError(408, "the request took too long to arrive", code="timeout", close=True) from None

    async def _linger(self, conn: _Connection) -> None:
        """After an error answer, read and drop what the client still sends, so
        closing does not reset the connection before it reads the answer."""
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            if conn.writer.can_write_eof():
                conn.writer.write_eof()
            async with asyncio.timeout(2.0):
                while await conn.reader.read(65536):
                    pass

    async def _respond(self, conn: _Connection, request: _Request) -> bool:
        """Answer one request; True when the connection may serve another."""
        started = time.perf_counter()
        keep_alive = request.keep_alive
        status = 200
        conn.answering = False
        try:
            methods = ROUTES.get(request.path)
            if methods is None:
                raise HTTPError(
                    404,
                    f"no route {request.method} {request.path}; this server answers GET /v1/models, "
                    "POST /v1/chat/completions and GET /health",
                    code="not_found",
                )
            if request.method not in methods:
                raise HTTPError(
                    405,
                    f"{request.path} answers {', '.join(methods)}, not {request.method}",
                    code="method_not_allowed",
                    headers={"Allow": ", ".join(methods)},
                )
            if request.path.startswith("/v1/"):
                self._check_key(request)
            if request.path == "/health":
                await self._send_json(conn, 200, {"status": "ok"}, keep_alive)
            elif request.path == "/v1/models":
                await self._send_json(conn, 200, self._models(), keep_alive)
            else:
                keep_alive = await self._chat(conn, request)
        except HTTPError as e:
            status = e.status
            keep_alive = keep_alive and not e.close
            await self._send_error(conn, e, keep_alive)
        except (_Drop, ConnectionError):
            log.info("%s %s: the client hung up", request.method, request.path)
            raise
        except Exception as e:
            log.exception("%s %s failed", request.method, request.path)
            if conn.answering:  # too late for an error status
                raise _Drop from e
            status, keep_alive = 500, False
            await self._send_error(
                conn,
                HTTPError(500, "internal server error", code="internal_error", type="server_error"),
                False,
            )
        log.info("%s %s %d %.2fs", request.method, request.path, status, time.perf_counter() - started)
        return keep_alive

    def _check_key(self, request: _Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise HTTPError(
                401,
                "missing or wrong API key: send it as 'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _models(self) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "agent",
        }
        # As vLLM does, so clients (`OpenAICompatLLM`) fit their prompts to our window. A
        # backend that is not loaded yet would load (or ask a server) here, on the event loop:
        # it tells nothing until it is.
        if getattr(self.llm, "loaded", True):
            from memory.context import model_context_window

            window = model_context_window(self.llm)
            if window is not None:
                model["max_model_len"] = window
        return {"object": "list", "data": [model]}

    async def _send_json(
        self,
        conn: _Connection,
        status: int,
        body: Any,
        keep_alive: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        head = {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "Connection": "keep-alive" if keep_alive else "close",
            **(headers or {}),
        }
        await conn.send_head(status, head)
        await conn.send(data)

    async def _send_error(self, conn: _Connection, error: HTTPError, keep_alive: bool) -> None:
        await self._send_json(conn, error.status, error.body(), keep_alive, error.headers)

    # -- chat completions

    async def _chat(self, conn: _Connection, request: _Request) -> bool:
        if len(request.body) > OFF_LOOP_BYTES:  # read on a thread: others are served meanwhile
            chat, llm_request = await asyncio.to_thread(self._read_chat, request)
        else:
            chat, llm_request = self._read_chat(request)
        answer = self._stream_answer if chat.stream else self._json_answer
        probe = request.version == "HTTP/1.1"
        return await self._until_hang_up(conn, answer(conn, request, chat, llm_request), probe=probe)

    def _read_chat(self, request: _Request) -> tuple[ChatCompletionRequest, LLMRequest]:
        """The request body, checked, and the backend request made of it (`HTTPError` if bad)."""
        try:
            body = json.loads(request.body)
        except ValueError as e:
            raise HTTPError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise HTTPError(400, "the body nests too deeply to read", code="invalid_json") from None
        # A lone surrogate is valid JSON and no text a model can read. It can only come from a
        # \\uD800-\\uDFFF escape, so only a body with one is encoded again to look.
        if _SURROGATE_ESCAPE.search(request.body):
            try:
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPError(
                    400,
                    "the body holds a lone surrogate (\\ud800-\\udfff), which is not text",
                    code="invalid_json",
                ) from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object", code="invalid_json")
        try:
            chat = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise _validation_error(e) from None
        return chat, chat.to_llm_request(self.effort)

    async def _until_hang_up(self, conn: _Connection, work: Coroutine[Any, Any, T], *, probe: bool) -> T:
        """Run `work`, cancelling it (and so closing the model's stream) if the
        client hangs up first."""
        task = asyncio.create_task(work)
        watch = asyncio.create_task(self._gone(conn, probe))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, watch):
                if not t.done():
                    t.cancel()
            await asyncio.gather(task, watch, return_exceptions=True)
        if task.cancelled():  # the client hung up
            raise _Drop
        return task.result()  # re-raises HTTPError and friends

    async def _gone(self, conn: _Connection, probe: bool) -> None:
        """Return once the client has gone while its answer is being made.

        The end of the client's input may be a hang-up or a half-close (a client
        that shuts down its sending side and waits for the answer). An HTTP/1.1
        client is probed to tell them apart: an interim `100 Continue`, which
        clients read past, every `PROBE_EVERY` seconds until the answer's head is
        sent; a client that has gone resets the connection, and the next probe
        fails. Once the head is sent, the answer's own writes notice.
        """
        if not await conn.end_of_input() or not probe:
            return
        while not conn.answering:
            try:
                await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except (ConnectionError, RuntimeError):  # reset, or the transport closed under us
                return
            await asyncio.sleep(PROBE_EVERY)
        await asyncio.Event().wait()  # cancelled when the answer is done

    def _model_error(self, e: Exception) -> HTTPError:
        """What the client is told when the model fails (or its stream ends early)."""
        if isinstance(e, StopAsyncIteration):
            message = f"{self.llm.name}: the model stream ended without a response"
        elif isinstance(e, ContextLengthError):  # the request's fault, as vLLM answers it
            return HTTPError(400, str(e), code="context_length_exceeded")
        elif isinstance(e, InvalidRequestError):
            return HTTPError(400, str(e), code="invalid_value")
        elif isinstance(e, LLMError):
            message = str(e)
        else:
            log.error("the model failed", exc_info=e)
            message = f"internal error in the model: {type(e).__name__}: {e}"
        return HTTPError(500, message, code="model_error", type="server_error")

    async def _json_answer(
        self, conn: _Connection, request: _Request, chat: ChatCompletionRequest, llm_request: LLMRequest
    ) -> bool:
        response: ModelResponse | None = None
        async with contextlib.aclosing(self.llm.stream(llm_request)) as items:
            try:
                async for item in items:
                    if isinstance(item, ModelResponse):
                        response = item
                        break
            except Exception as e:
                raise self._model_error(e) from e
        if response is None:
            raise self._model_error(StopAsyncIteration())
        calls, unread, finish = _readable_calls(response)
        content = "\n".join(t for t in (response.content, unread) if t)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if response.thinking:
            message["reasoning_content"] = response.thinking
        if calls:
            message["content"] = content or None
            message["tool_calls"] = _wire_tool_calls(calls)
        body = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _wire_usage(response.usage),
        }
        await self._send_json(conn, 200, body, request.keep_alive)
        return request.keep_alive

    async def _stream_answer(
        self, conn: _Connection, request: _Request, chat: ChatCompletionRequest, llm_request: LLMRequest
    ) -> bool:
        """Server-sent events: role, reasoning_content / content deltas, tool call
        deltas, the finish reason, usage when asked, then `[DONE]`."""
        completion_id, created = _completion_id(), int(time.time())

        def event(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> bytes:
            choices = (
                []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            )
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": choices,
                **extra,
            }
            return _sse(body)

        async with contextlib.aclosing(self.llm.stream(llm_request)) as items:
            try:
                # Wait for the first item before answering, so an early failure is an error status.
                item = await anext(items)
            except Exception as e:
                raise self._model_error(e) from e
            # HTTP/1.0 has no chunked encoding: there the stream ends with the connection.
            conn.chunked = request.version == "HTTP/1.1"
            keep_alive = request.keep_alive and conn.chunked
            headers = {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive" if keep_alive else "close",
            }
            if conn.chunked:
                headers["Transfer-Encoding"] = "chunked"
            await conn.send_head(200, headers)
            await conn.send_chunk(event({"role": "assistant", "content": ""}))
            try:
                while not isinstance(item, ModelResponse):
                    delta = {"reasoning_content": item.thinking, "content": item.content}
                    delta = {k: v for k, v in delta.items() if v}
                    if delta:
                        await conn.send_chunk(event(delta))
                    item = await anext(items)
            except ConnectionError:
                raise
            except Exception as e:
                # Too late for an error status: the error goes into the stream, without [DONE].
                await conn.send_chunk(_sse(self._model_error(e).body()))
                await self._end_stream(conn)
                return keep_alive
        calls, unread, finish = _readable_calls(item)
        if unread:
            await conn.send_chunk(event({"content": ("\n" if item.content else "") + unread}))
        if calls:
            await conn.send_chunk(event({"tool_calls": _wire_tool_calls(calls, indexed=True)}))
        await conn.send_chunk(event({}, finish))
        if chat.stream_options and chat.stream_options.include_usage:
            await conn.send_chunk(event(None, usage=_wire_usage(item.usage)))
        await conn.send_chunk(b"data: [DONE]\n\n")
        await self._end_stream(conn)
        return keep_alive

    @staticmethod
    async def _end_stream(conn: _Connection) -> None:
        if conn.chunked:
            await conn.send(b"0\r\n\r\n")
        conn.chunked = False


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _sse(body: Any) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


# --------------------------------------------------------------------------- command line


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`; user mistakes become an `AgentError`."""
    if not 0 <= port <= 65535:
        raise AgentError(f"--port must be between 0 and 65535 (0 picks a free port), not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise AgentError(
            f"cannot listen on {host!r}: {e.strerror}; use an address such as 127.0.0.1 "
            "(this machine only) or 0.0.0.0 (all interfaces)"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise AgentError(
                f"port {port} on {host} is already in use: stop the other server or choose another --port "
                "(0 picks a free one)"
            ) from None
        if e.errno == errno.EACCES:
            raise AgentError(f"no permission to listen on port {port}: choose a --port above 1023") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise AgentError(
                f"{host} is not an address of this machine: use 127.0.0.1 (this machine only) "
                "or 0.0.0.0 (all interfaces)"
            ) from None
        raise AgentError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def run_cli(args: Any) -> int:
    """`agent serve`: bind, load the model, print the base URL, serve until Ctrl-C."""
    from .cli import make_model, usable_key
    from .render import Console

    err = Console(stderr=True, highlight=False)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not args.api_key:  # --api-key was checked by its parser already
        usable_key(api_key, f"${API_KEY_ENV}")  # no client could send a key with a line break in a header
    sock = bind(args.host, args.port)  # first, so a busy port fails before a slow model load
    try:
        llm = make_model(args)
    except BaseException:
        sock.close()
        raise
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def main() -> None:
        server = await ChatServer(llm, api_key=api_key, effort=args.effort).start(sock)
        print(server.base_url, flush=True)
        key = "an API key" if api_key else "no API key"
        err.print(
            f"serving {server.model_name} at {server.base_url} with {key}; Ctrl-C stops", soft_wrap=True
        )
        await server.serve_until_signal()

    try:
        asyncio.run(main())
    finally:
        sock.close()
        # A backend with worker threads stops them before the process exits;
        # exiting while one is inside a forward pass can abort the interpreter.
        close = getattr(llm, "close", None)
        if callable(close):
            close()
    err.print("stopped")
    return 0
