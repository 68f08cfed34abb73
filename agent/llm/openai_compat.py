"""A backend for any server that speaks the OpenAI chat completions API.

vLLM, SGLang, llama.cpp's `llama-server`, Ollama, LM Studio and OpenAI itself
all accept `POST {base_url}/chat/completions`. This backend streams the answer
over server-sent events, turns `reasoning_content` / `reasoning` deltas into
thinking, reassembles tool calls that arrive in pieces, and falls back to
parsing `<tool_call>` / `<think>` text for servers started without a tool
parser.

Failed requests are retried with exponential backoff on 429 and 5xx answers and
on network errors, but only while nothing has been streamed to the caller yet:
a stream that breaks off half way raises instead of repeating text. A reply
that is not a valid chat completion (a field of the wrong type, an HTML page,
a body that cannot be decoded) raises `LLMResponseError` at once, naming what
is wrong: asking again would get the same.

The server's context window is learned once, when first asked for (see
`OpenAICompatLLM.learn_context_window`), from `max_model_len` in
`GET /v1/models` (vLLM, SGLang, `agent serve`) or llama.cpp's `GET /props`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime
import email.utils
import json
import logging
import math
import os
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..events import ModelDelta, ModelResponse
from ..types import Message, ToolCallRequest, Usage, new_call_id
from .base import ContextLengthError, LLMError, LLMRequest, joined_turns
from .formats import split_all_thinking
from .formats.base import THINK_CLOSE, THINK_OPEN
from .formats.jsonfix import json_problem
from .parse import has_markup, loads_lenient, parse_output, parse_text_only, stream_splitter

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
#: Seconds the one-off context-window lookup may take; a server that is slower tells nothing.
WINDOW_LOOKUP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (capped by the request's timeout)


class LLMHTTPError(LLMError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, url: str = "", server_message: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url
        self.server_message = server_message

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Server trouble and rate limits pass; a refused key, a wrong model or a bad request do not,
        nor a server error that says the request can never work (llama.cpp answers 500 to tools
        without --jinja)."""
        if self.status_code >= 500:
            return _PERMANENT.search(self.server_message) is None
        return self.status_code in (408, 409, 425, 429)


# A server error that asking again cannot mend: the server's setup or the request's shape.
_PERMANENT = re.compile(r"--jinja|\bnot supported\b|\bunsupported\b", re.I)


class PromptTooLongError(LLMHTTPError, ContextLengthError):
    """The server refused the request because the prompt does not fit its context window."""


# A call the model tried to write (a tag opening JSON), not prose that names a format's markers.
_CALL_ATTEMPT = re.compile(r"<tool_call>\s*\{")

# How vLLM, SGLang, llama.cpp, TGI and OpenAI say a prompt is too long.
_TOO_LONG = re.compile(
    r"context[ _-]?(?:length|size|window)|maximum context|max_model_len|exceed_context|"
    r"tokens? \+ `?max_new_tokens`? must be",
    re.I,
)


class LLMConnectionError(LLMError):
    """The server could not be reached, or the connection failed or timed out."""


class LLMStreamError(LLMError):
    """The server broke off or reported an error in the middle of a stream."""


class LLMResponseError(LLMError):
    """The server's reply is not a valid chat completion; asking again would get the same."""

    retryable = False


class _BadReply(Exception):
    """Internal: where the reply breaks the chat completions format."""


class _Retry(Exception):
    """Internal: this attempt failed in a way worth trying again."""

    def __init__(self, error: LLMError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


# --------------------------------------------------------------------------- wire format


def message_to_wire(message: Message) -> dict[str, Any]:
    """One `Message` in the OpenAI chat format. Thinking is never sent back.

    A call whose arguments could not be read goes back with `{}`: vLLM decodes
    every call's arguments in the history and rejects the request otherwise,
    and the model sees what it wrote in the tool message that answers the call.
    """
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments or {}, ensure_ascii=False),
                },
            }
            for call in message.tool_calls
        ]
    return out


def decode_arguments(name: str, raw: str, call_id: str | None = None) -> ToolCallRequest:
    """Build a call from streamed argument text, forgiving small JSON mistakes."""
    call_id = call_id or new_call_id()
    if not raw.strip():
        return ToolCallRequest(id=call_id, name=name, arguments={})
    try:
        args = json.loads(raw)
    except json.JSONDecodeError:
        try:
            args = loads_lenient(raw)
        except json.JSONDecodeError as e:
            return ToolCallRequest(
                id=call_id,
                name=name,
                raw_arguments=raw,
                parse_error=f"the arguments are not valid JSON ({json_problem(e)})",
            )
    if not isinstance(args, dict):
        return ToolCallRequest(
            id=call_id, name=name, raw_arguments=raw, parse_error="the arguments must be a JSON object"
        )
    return ToolCallRequest(id=call_id, name=name, arguments=args)


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)[:60]


def _object(value: Any, where: str) -> dict[str, Any]:
    """A JSON object of the reply; missing or null reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadReply(f"{where} is {_shown(value)}, not an object")
    return value


def _array(value: Any, where: str) -> list[Any]:
    """A JSON array of the reply; missing or null reads as empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _BadReply(f"{where} is {_shown(value)}, not an array")
    return value


def _string(value: Any, where: str) -> str:
    """A string of the reply; missing or null reads as empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadReply(f"{where} is {_shown(value)}, not a string")
    return value


async def _drain(rest: AsyncIterator[str], seconds: float = 0.5) -> None:
    """Read what follows `[DONE]` (the body's end), so the connection goes back to the pool
    for the next request instead of being closed; a server that sends more, or never ends
    the body, only costs the connection."""
    try:
        async with asyncio.timeout(seconds):
            async for _ in rest:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


def _flushed(splitter: Any, *, more: bool) -> list[ModelDelta]:
    """What a stream splitter still holds. When `more` text follows (the server turned
    out to parse, and its text now comes as it is), the white space it held back too:
    the deltas add up to the reply, whose ends are trimmed."""
    pieces = splitter.finish()
    pending = getattr(getattr(splitter, "content", None), "pending", "")
    if more and pending:
        pieces.append(ModelDelta(content=pending))
        splitter.content.pending = ""
    return pieces


def _content(value: Any, where: str) -> tuple[str, str]:
    """A message's content as (text, thinking): a string, or a list of typed parts as
    Mistral's API sends them (`text` parts, `thinking` parts holding text parts)."""
    if not isinstance(value, list):
        return _string(value, where), ""
    text: list[str] = []
    thinking: list[str] = []
    for i, part in enumerate(value):
        part = _object(part, f"{where}[{i}]")
        kind = part.get("type")
        if kind == "text":
            text.append(_string(part.get("text"), f"{where}[{i}].text"))
        elif kind == "thinking":
            inner = part.get("thinking")
            thinking.append(_content(inner, f"{where}[{i}].thinking")[0])
    return "".join(text), "".join(thinking)


def _count(value: Any, where: str) -> int:
    """A token count of the reply; missing or null reads as 0."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadReply(f"{where} is {_shown(value)}, not a count")
    return value


def _usage(data: Any) -> Usage | None:
    if not data:
        return None
    data = _object(data, "usage")
    details = _object(data.get("completion_tokens_details"), "usage.completion_tokens_details")
    return Usage(
        prompt_tokens=_count(data.get("prompt_tokens"), "usage.prompt_tokens"),
        completion_tokens=_count(data.get("completion_tokens"), "usage.completion_tokens"),
        thinking_tokens=_count(
            details.get("reasoning_tokens"), "usage.completion_tokens_details.reasoning_tokens"
        ),
    )


def _error_message(body: Any) -> str:
    """The human part of an error body: OpenAI, FastAPI or plain text shapes."""
    if isinstance(body, (bytes, bytearray, str)):
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            return text.strip()[:500]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err.get("msg") or json.dumps(err)
        if isinstance(err, list):  # FastAPI's 422: each problem with where it is (body.reasoning_effort)
            err = "; ".join(_problem(e) for e in err)
        if err:
            return str(err)[:500]
        return json.dumps(body)[:500]
    return str(body)[:500]


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = item.get("loc")
    place = ".".join(map(str, where)) + ": " if isinstance(where, list) and where else ""
    return f"{place}{item.get('msg', item)}"


def _model_entry(listing: Any, model: str) -> dict[str, Any]:
    """Our model's entry in a `/models` answer: the one with its id, else the only one there."""
    data = listing.get("data") if isinstance(listing, dict) else None
    entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    for entry in entries:
        if entry.get("id") == model:
            return entry
    return entries[0] if len(entries) == 1 else {}


def _failed_choice(event: dict[str, Any]) -> bool:
    """Whether a chunk or completion ends its choice with finish_reason "error"."""
    choices = event.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") == "error" for c in choices
    )


def _tokens(value: Any) -> int | None:
    """A window size as a server states it: a positive integer, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _retry_after(headers: httpx.Headers) -> float | None:
    """How long the server asks us to wait: `retry-after-ms` (OpenAI's), or `Retry-After` in
    seconds or as an HTTP date; None when it does not say (the normal backoff then)."""
    seconds: float | None = None
    try:
        if headers.get("retry-after-ms") is not None:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after") is not None:
            value = headers["retry-after"].strip()
            try:
                seconds = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                if when.tzinfo is None:  # an HTTP date is GMT, whether or not it says so
                    when = when.replace(tzinfo=datetime.UTC)
                seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    except (ValueError, TypeError, OverflowError):  # a value that is neither: ignored
        return None
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_LINE_END = re.compile(r"\r\n|\r|\n")


async def _sniff_stream(chunks: AsyncIterator[bytes], ctype: str) -> tuple[AsyncIterator[bytes], str]:
    """A body labelled JSON that is an event stream after all (it starts with `data:`
    or a `:` comment): the chunks, the first one put back, and the type it really is."""
    first = b""
    async for piece in chunks:
        first += piece
        if first.strip():
            break

    async def again() -> AsyncIterator[bytes]:
        yield first
        async for piece in chunks:
            yield piece

    head = first.lstrip()
    if head.startswith((b"data:", b":")):
        return again(), "text/event-stream"
    if head.startswith(b"{"):  # a whole chat completion, whatever the label says
        return again(), "application/json"
    return again(), ctype


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream, which end only at CRLF, LF or CR.

    Not `str.splitlines`: servers write U+2028, U+0085 and kin unescaped
    inside their JSON, and splitting there broke the event. A CR that ends one
    chunk may have its LF at the start of the next; a character may be cut
    between chunks too.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    line: list[str] = []
    after_cr = False
    async for chunk in chunks:
        text = decoder.decode(chunk)
        if not text:
            continue
        if after_cr and text.startswith("\n"):
            text = text[1:]
        after_cr = text.endswith("\r")
        *ended, rest = _LINE_END.split(text)
        for piece in ended:
            line.append(piece)
            yield "".join(line)
            line = []
        line.append(rest)
    tail = "".join(line) + decoder.decode(b"", final=True)
    if tail:
        yield tail


def _whole(slot: dict[str, Any]) -> bool:
    """Whether a call being streamed has its name and arguments that parse."""
    if not slot["name"]:
        return False
    try:
        json.loads("".join(slot["arguments"]))
    except ValueError:
        return False
    return True


class _Accumulator:
    """Collects one streamed turn: content, thinking, tool call pieces, usage."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self._slots: dict[int, int] = {}  # the server's index -> its call's key in `calls`
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def add_tool_call_delta(self, tc: dict[str, Any]) -> None:
        fn = _object(tc.get("function"), "tool_calls[].function")
        name = _string(fn.get("name"), "tool_calls[].function.name")
        index = tc.get("index")
        if not isinstance(index, int):
            # Some servers leave out the index: a new id starts a new call, and so
            # does a name without an id once the last call is whole (two in one chunk).
            known = {c["id"] for c in self.calls.values()}
            new_id = tc.get("id") and tc["id"] not in known
            new_name = name and not tc.get("id") and self.calls and _whole(self.calls[max(self.calls)])
            index = len(self.calls) if not self.calls or new_id or new_name else max(self.calls)
        else:
            # A new id at an index in use starts a new call: Ollama numbers every call 0; so does
            # a name with arguments and no id once the call at that index is whole (a name
            # repeated alone, as some servers do chunk after chunk, is the same call).
            key = self._slots.get(index)
            if (
                key is None
                or (tc.get("id") and self.calls[key]["id"] not in (None, tc["id"]))
                or (
                    name
                    and str(fn.get("arguments") or "").lstrip().startswith("{")  # a call's arguments begin
                    and not tc.get("id")
                    and _whole(self.calls[key])
                )
            ):
                key = self._slots[index] = max(self.calls, default=-1) + 1
            index = key
        slot = self.calls.setdefault(index, {"id": None, "name": "", "arguments": []})
        if tc.get("id"):
            slot["id"] = _string(tc["id"], "tool_calls[].id")
        if name and name != slot["name"]:
            # Normally sent once; a server that repeats the whole name each chunk is ignored.
            slot["name"] += name
        args = fn.get("arguments")
        if isinstance(args, str):
            slot["arguments"].append(args)
        elif isinstance(args, dict):  # a few servers send an object, not a string
            slot["arguments"].append(json.dumps(args))

    def tool_calls(self) -> list[ToolCallRequest]:
        return [
            decode_arguments(slot["name"], "".join(slot["arguments"]), slot["id"])
            for _, slot in sorted(self.calls.items())
        ]


# --------------------------------------------------------------------------- backend


class OpenAICompatLLM:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    ```python
    llm = OpenAICompatLLM("Qwen/Qwen3-8B", base_url="http://127.0.0.1:8000/v1")
    response = await complete(llm, LLMRequest(messages=[Message(role="user", content="hi")]))
    await llm.aclose()
    ```

    `extra_body` is merged into every request body last, so it can add
    server-specific fields (`top_k`, `chat_template_kwargs`, ...) or override
    ours; a key set to None there is removed from the body (e.g.
    `{"reasoning_effort": None}` for servers that reject it).

    `context_window` is the server's window in tokens, for `ContextBudget`;
    left out, it is asked of the server once (`learn_context_window`).

    A request's `thinking_budget` is not sent: the chat completions API has no
    such field, a strict server rejects unknown ones, and servers that take a
    budget each name it their own way. Put it in `extra_body` the server's way;
    otherwise the first request that has one logs a warning saying so.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        stream: bool = True,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
        context_window: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens  # a reply's limit when a request names none (else the server's)
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get("OPENAI_API_KEY") or None)
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.streaming = stream
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.context_window = context_window
        self._window_asked = context_window is not None
        self._window_lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._budget_said = False
        self._effort_refused = False  # the server refused reasoning_effort for this model: not sent again
        self._required_refused = False  # the server refused tool_choice "required": "auto" from then on
        # The chat template opens <think> in the prompt (Qwen3, DeepSeek-R1 on a server that
        # parses no reasoning): learnt from a reply that closes a block it never opened, so
        # the next replies stream their thinking as thinking from the first token.
        self._prompt_opens_thinking = False

    def __repr__(self) -> str:
        return f"OpenAICompatLLM(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    # -- context window ----------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """False until the context window is known or was asked for.

        The loop prepares a run's context budget on a worker thread while the
        backend is not `loaded`, so the blocking lookup below never stalls the
        event loop (other runs, or `agent serve` in the same process, keep
        going); once it was asked, the answer is cached and costs nothing.
        A sync lookup there is simpler and as correct as learning the window
        at the first request: the budget must fit the very first prompt.
        """
        return self._window_asked

    def learn_context_window(self) -> int | None:
        """The server's context window: the one given, else asked of the server once (blocking).

        Tried in turn: `max_model_len` on our model's entry in `GET
        {base_url}/models` (vLLM, SGLang, `agent serve`), then llama.cpp's
        runtime `n_ctx` in `GET /props` at the server root, then the
        `meta.n_ctx_train` of its model entry. A server that tells none of
        these, or cannot be reached, gives None and a log line; the run goes
        on, and a real request reports a real connection error.
        """
        if self._window_asked:
            return self.context_window
        with self._window_lock:  # concurrent runs sharing this backend ask once
            if not self._window_asked:
                self.context_window = self._ask_context_window()
                self._window_asked = True
        return self.context_window

    def _ask_context_window(self) -> int | None:
        misses: list[str] = []
        timeout = httpx.Timeout(min(self.timeout, WINDOW_LOOKUP_TIMEOUT))
        with httpx.Client(timeout=timeout, headers=self._headers()) as client:

            def get(url: str) -> dict[str, Any]:
                """The JSON object at `url`; {} for anything else (noting an error status or bad JSON)."""
                response = client.get(url)
                if response.status_code >= 400:
                    misses.append(f"HTTP {response.status_code} from {url}")
                    return {}
                try:
                    body = response.json()
                except ValueError:
                    misses.append(f"{url} is not JSON")
                    return {}
                return body if isinstance(body, dict) else {}

            def field(obj: Any, key: str) -> Any:
                return obj.get(key) if isinstance(obj, dict) else None

            try:
                entry = _model_entry(get(f"{self.base_url}/models"), self.model)
                props = f"{self.base_url.removesuffix('/v1')}/props"
                found = (  # vLLM and SGLang; then llama.cpp's runtime window, then its trained one
                    ("max_model_len", lambda: field(entry, "max_model_len")),
                    (
                        "n_ctx of /props",
                        lambda: field(get(props).get("default_generation_settings"), "n_ctx"),
                    ),
                    ("meta.n_ctx_train", lambda: field(entry.get("meta"), "n_ctx_train")),
                )
                for source, read in found:  # asked in turn: /props only when /models did not tell
                    window = _tokens(read())
                    if window is not None:
                        log.info(
                            "%s: context window of %d tokens (%s at %s)",
                            self.name,
                            window,
                            source,
                            self.base_url,
                        )
                        return window
            except (httpx.TransportError, httpx.InvalidURL) as e:
                # Not a warning: the run's first request reports the same fault, and fails.
                log.info("%s: could not ask %s for its context window: %r", self.name, self.base_url, e)
                return None
        log.warning(
            "%s: the server at %s does not report its context window%s, so prompts are not fitted to it; "
            "give one with --context-window or context_window=",
            self.name,
            self.base_url,
            f" ({'; '.join(misses)})" if misses else "",
        )
        return None

    # -- client ------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _get_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            # A client is bound to the loop that made it; a new loop needs a new one.
            # Connecting is capped: a server that takes the request at all does so at once, and a
            # connect timeout is retried, each time with the whole wait otherwise.
            timeout = httpx.Timeout(self.timeout, connect=self._connect_timeout)
            self._client = httpx.AsyncClient(timeout=timeout, headers=self._headers())
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client; a later call opens a new one."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    async def __aenter__(self) -> OpenAICompatLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- request -----------------------------------------------------------------

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body for one request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [message_to_wire(m) for m in joined_turns(request.messages)],
        }
        if request.tools:
            body["tools"] = request.tools
            refused = request.tool_choice == "required" and self._required_refused
            body["tool_choice"] = "auto" if refused else request.tool_choice
        if not self._effort_refused:
            body["reasoning_effort"] = request.effort
        limit = request.max_new_tokens if request.max_new_tokens is not None else self.max_new_tokens
        if limit is not None:
            body["max_tokens"] = limit
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        if request.thinking_budget is not None and not self._budget_said:
            self._say_budget_is_not_sent(request.thinking_budget)
        if self.streaming:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body["stream"] = False
        for key, value in self.extra_body.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def _say_budget_is_not_sent(self, budget: int) -> None:
        self._budget_said = True
        # Already sent the server's way (vLLM's thinking_token_budget, a template's thinking_budget)?
        template = self.extra_body.get("chat_template_kwargs")
        named = [*self.extra_body, *(template if isinstance(template, dict) else ())]
        if any("budget" in key for key in named):
            return
        log.warning(
            "%s: thinking_budget=%d is not sent to the server, as the chat completions API has no such field; "
            'send it the server\'s way with extra_body, e.g. {"thinking_token_budget": %d} (vLLM) '
            'or {"chat_template_kwargs": {"thinking_budget": %d}} (SGLang, Qwen3 templates)',
            self.name,
            budget,
            budget,
            budget,
        )

    def _http_error(self, status: int, content: bytes) -> LLMHTTPError:
        server = _error_message(content) if content else ""
        hint = {
            400: "the server rejected the request",
            401: "check --api-key",
            403: "check --api-key",
            404: "check --base-url and model name",
            413: "the prompt is too large for the server",
            422: "the server rejected the request",
            429: "rate limited",
        }.get(status, "server error" if status >= 500 else "")
        too_long = status in (400, 413, 422) and _TOO_LONG.search(server) is not None
        if too_long:
            hint = "the prompt does not fit the model's context window"
        msg = f"{self.name}: HTTP {status} from {self.url}"
        if server:
            msg += f": {server}"
        if hint:
            msg += f" ({hint})"
        kind = PromptTooLongError if too_long else LLMHTTPError
        return kind(msg, status_code=status, url=self.url, server_message=server)

    @property
    def _connect_timeout(self) -> float:
        return min(self.timeout, CONNECT_TIMEOUT)

    def _transport_error(self, e: httpx.TransportError) -> LLMConnectionError:
        if isinstance(e, httpx.ConnectError):
            return LLMConnectionError(
                f"{self.name}: the server at {self.base_url} is unreachable ({e or 'connection failed'}); "
                "is it running, and is --base-url right?"
            )
        if isinstance(e, httpx.TimeoutException):
            if isinstance(e, httpx.ConnectTimeout):
                return LLMConnectionError(
                    f"{self.name}: could not connect to {self.base_url} within {self._connect_timeout:g} s "
                    "(ConnectTimeout)"
                )
            return LLMConnectionError(
                f"{self.name}: request to {self.url} timed out after {self.timeout:g} s ({type(e).__name__}); "
                "a slow server needs a longer timeout (timeout=, or --request-timeout)"
            )
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return LLMConnectionError(f"{self.name}: request to {self.url} failed: {why}")

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        body = self.build_body(request)
        attempt = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._attempt(body, request)) as items:
                    async for item in items:
                        if isinstance(item, ModelDelta):
                            yielded = True
                        yield item
                return
            except LLMHTTPError as e:
                if self._blames(e, body, "reasoning_effort", r"(?i)think|reason"):
                    # Ollama with a model that does not think: "... does not support thinking".
                    log.warning("%s; sending requests without reasoning_effort from now on", e)
                    self._effort_refused = True
                    body.pop("reasoning_effort")
                # "tool_choice" named: FastAPI's "Field required" about another field is no refusal.
                elif self._blames(e, body, "tool_choice", r"(?i)tool_choice", value="required"):
                    # vLLM before 0.8.3: 'tool_choice = "required" is not supported!'
                    log.warning('%s; sending tool_choice "auto" instead of "required" from now on', e)
                    self._required_refused = True
                    body["tool_choice"] = "auto"
                else:
                    raise
            except _Retry as r:
                error = r.error
                if yielded:  # never repeat text the caller has already seen
                    raise LLMStreamError(f"{error} (after part of the answer was streamed)") from error
                if attempt >= self.max_retries:
                    if self.max_retries:
                        error = self._gave_up(error)
                    raise error from r.__cause__
                delay = r.retry_after if r.retry_after is not None else self.backoff * 2**attempt
                log.warning("%s; retrying in %.2f s (%d/%d)", error, delay, attempt + 1, self.max_retries)
                attempt += 1
                if delay > 0:
                    await asyncio.sleep(delay)

    def _blames(
        self, error: LLMHTTPError, body: dict[str, Any], field: str, words: str, value: Any = None
    ) -> bool:
        """A 400 that blames a field we sent of our own accord (with `value`, when given), not
        one the user asked for in extra_body: its message says `words`."""
        return (
            error.status_code in (400, 422)
            and field in body
            and field not in self.extra_body
            and (value is None or body[field] == value)
            and re.search(words, error.server_message) is not None
        )

    def _gave_up(self, error: LLMError) -> LLMError:
        message = f"{error} (gave up after {self.max_retries} retries)"
        if isinstance(error, LLMHTTPError):
            return LLMHTTPError(
                message, status_code=error.status_code, url=error.url, server_message=error.server_message
            )
        return type(error)(message)

    async def _attempt(
        self, body: dict[str, Any], request: LLMRequest
    ) -> AsyncIterator[ModelDelta | ModelResponse]:
        client = self._get_client()
        yielded = False
        try:
            async with client.stream("POST", self.url, json=body) as response:
                if response.status_code >= 400:
                    content = await response.aread()
                    error = self._http_error(response.status_code, content)
                    if response.status_code in RETRY_STATUSES and error.retryable:
                        raise _Retry(error, _retry_after(response.headers))
                    raise error
                ctype = response.headers.get("content-type", "")
                if self.streaming and "html" in ctype:
                    content = await response.aread()
                    raise _BadReply(
                        f"it is an HTML page, not an event stream (check --base-url): {content[:200]!r}"
                    )
                chunks = response.aiter_bytes()
                if self.streaming and "event-stream" not in ctype:
                    # Ignored `stream: true`, or a body mislabelled (text/plain, no type at all).
                    chunks, ctype = await _sniff_stream(chunks, ctype)
                    if "event-stream" not in ctype and "json" not in ctype:
                        body = b""
                        async for chunk in chunks:  # enough of it to show
                            body += chunk
                            if len(body) >= 200:
                                break
                        raise _BadReply(
                            f"it is neither an event stream nor JSON ({ctype or 'no content type'}): {body[:200]!r}"
                        )
                if self.streaming and "json" not in ctype:
                    async with contextlib.aclosing(self._read_sse(response, request, chunks)) as items:
                        async for item in items:
                            if isinstance(item, ModelDelta):
                                yielded = True
                            yield item
                else:
                    # Non-streaming, or a server that ignored `stream: true`.
                    content = b"".join([chunk async for chunk in chunks])
                    try:
                        try:
                            data = json.loads(content)
                        except UnicodeDecodeError:  # a stray byte: shown as U+FFFD, as a stream shows it
                            data = json.loads(content.decode("utf-8", "replace"))
                    except ValueError:
                        raise _BadReply(f"the body is not JSON: {content[:200]!r}") from None
                    final = self._from_message(data, request)
                    if final.content or final.thinking:
                        yield ModelDelta(content=final.content, thinking=final.thinking)
                    yield final
        except httpx.TransportError as e:
            error = self._transport_error(e)
            if yielded:
                raise LLMStreamError(f"{error} (the stream broke off part way)") from e
            if isinstance(e, httpx.ReadTimeout):  # the server took the request and did not answer in time:
                raise error from e  # asking again waits as long again, or starts a long generation over
            raise _Retry(error) from e
        except httpx.DecodingError as e:
            raise self._bad_reply(f"the body could not be decoded ({e})") from e
        except _BadReply as e:
            raise self._bad_reply(str(e)) from None

    def _bad_reply(self, why: str) -> LLMResponseError:
        return LLMResponseError(
            f"{self.name}: the reply from {self.url} is not a valid chat completion: {why}"
        )

    async def _read_sse(
        self, response: httpx.Response, request: LLMRequest, chunks: AsyncIterator[bytes] | None = None
    ) -> AsyncIterator[ModelDelta | ModelResponse]:
        acc = _Accumulator()
        done = False
        pending: list[str] = []
        # A server without a reasoning or tool parser leaves <think> and call markup in the
        # text: the deltas are split as the final reply will be (thinking apart, calls held
        # back), as the in-process backend streams. Once the server shows it parses (a
        # reasoning field, structured calls), its text is passed on as it comes.
        # JSON is not held back: a server with a tool parser sends its calls only at the end,
        # and an answer's ```json block would stop streaming until then.
        splitter: Any = stream_splitter(
            calls=request.may_call, hold_json=False, in_thinking=self._prompt_opens_thinking
        )

        def events_from(line: str | None) -> list[dict[str, Any]]:
            """Feed one line (None: the body ended); return the events it completes (usually 0 or 1)."""
            nonlocal done
            if line is None:  # the end of the body: a last event with no blank line after it
                if not pending:
                    return []
                text = "\n".join(pending)
                pending.clear()
                try:
                    return [json.loads(text)]
                except ValueError:  # cut off: the stream broke off inside it
                    if acc.finish_reason is not None:  # after the answer ended (a usage event): kept
                        return []
                    raise _Retry(
                        LLMStreamError(f"{self.name}: the stream from {self.url} broke off inside an event")
                    ) from None
            if not line:
                if not pending:
                    return []
                text = "\n".join(pending)
                pending.clear()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    return []
                if pending:
                    pending.append(data)
                    return []
                try:
                    return [json.loads(data)]  # the common one-line event
                except ValueError:
                    pending.append(data)
                    return []
            elif line.startswith("error:"):
                # llama.cpp before PR #16109 reports a failure this way, then ends with [DONE].
                raise self._stream_error(line[6:].strip())
            else:
                return []  # comments (":"), "event:", "id:", "retry:"
            try:
                return [json.loads(text)]
            except ValueError as e:
                raise LLMStreamError(
                    f"{self.name}: bad event in the stream from {self.url}: {text[:200]!r}"
                ) from e

        async def lines() -> AsyncIterator[str | None]:
            try:
                source = chunks if chunks is not None else response.aiter_bytes()
                async with contextlib.aclosing(sse_lines(source)) as stream_lines:
                    async for line in stream_lines:
                        yield line
            except httpx.TransportError:
                # Some servers drop the connection once the answer is complete, without [DONE].
                if acc.finish_reason is None:
                    raise
            yield None  # the body ended: a last event without a blank line after it is flushed

        async with contextlib.aclosing(lines()) as stream_lines:
            async for line in stream_lines:
                for event in events_from(line):
                    if not isinstance(event, dict):
                        continue
                    # Older vLLM sends the error object itself; OpenRouter an error beside a choice
                    # that ends with finish_reason "error" (its provider failed mid-reply; the
                    # choice loop below stops at that finish_reason when no error object came).
                    if event.get("error") or event.get("object") == "error":
                        raise self._stream_error(event)
                    if event.get("usage"):
                        acc.usage = _usage(event["usage"])
                    for i, choice in enumerate(_array(event.get("choices"), "choices")):
                        choice = _object(choice, f"choices[{i}]")
                        if choice.get("index", 0) != 0:
                            continue
                        delta = _object(choice.get("delta"), "delta")
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                        thinking = _string(reasoning, "delta.reasoning")
                        content, more = _content(delta.get("content"), "delta.content")
                        thinking += more
                        calls = _array(delta.get("tool_calls"), "delta.tool_calls")
                        if thinking:
                            acc.thinking.append(thinking)
                        if content:
                            acc.content.append(content)
                        if splitter is not None and calls:  # the server parses calls (and so all of it)
                            for piece in _flushed(splitter, more=True):
                                yield piece
                            splitter = None
                        if splitter is not None:
                            if thinking:  # a reasoning parser without a tool parser: calls are still text
                                yield ModelDelta(thinking=thinking)
                            for piece in splitter.feed(content):
                                yield piece
                        elif thinking or content:
                            yield ModelDelta(content=content, thinking=thinking)
                        for tc in calls:
                            acc.add_tool_call_delta(_object(tc, "delta.tool_calls[]"))
                        if choice.get("finish_reason"):
                            acc.finish_reason = _string(choice["finish_reason"], "finish_reason")
                            if acc.finish_reason == "error":
                                raise self._stream_error(event)
                if done:
                    await _drain(stream_lines)
                    break
        if not done and acc.finish_reason is None:
            raise _Retry(
                LLMStreamError(f"{self.name}: the stream from {self.url} ended before the answer did")
            )
        if splitter is not None:
            for piece in _flushed(splitter, more=False):
                yield piece
            self._learn_thinking_opener("".join(acc.content))
        if not (acc.content or acc.thinking or acc.calls or acc.finish_reason):
            raise LLMStreamError(
                f"{self.name}: the stream from {self.url} ended with no answer "
                "(no content, tool call or finish_reason)"
            )
        yield self._finish(
            "".join(acc.content),
            "".join(acc.thinking),
            acc.tool_calls(),
            acc.usage,
            acc.finish_reason,
            request,
        )

    def _learn_thinking_opener(self, text: str) -> None:
        """After a reply the server left unparsed: whether the prompt opens the thinking block."""
        close = text.find(THINK_CLOSE)
        if close >= 0:
            opened = text.find(THINK_OPEN)
            self._prompt_opens_thinking = opened < 0 or close < opened
        elif self._prompt_opens_thinking:  # no block at all (thinking switched off): not from now on
            self._prompt_opens_thinking = False

    def _stream_error(self, body: Any) -> LLMError:
        server = _error_message(body)
        message = f"{self.name}: the server at {self.url} reported an error in the stream: {server}"
        if _TOO_LONG.search(server):  # SGLang and older vLLM answer 200, then say so in the stream
            message += " (the prompt does not fit the model's context window)"
            return PromptTooLongError(message, status_code=400, url=self.url, server_message=server)
        return LLMStreamError(message)

    def _from_message(self, data: Any, request: LLMRequest) -> ModelResponse:
        if isinstance(data, dict) and (data.get("error") or _failed_choice(data)):
            raise LLMError(f"{self.name}: the server at {self.url} reported an error: {_error_message(data)}")
        choices = _array(data.get("choices"), "choices") if isinstance(data, dict) else None
        if not choices:
            raise _BadReply(f"it returned no choices: {json.dumps(data)[:200]}")
        choice = _object(choices[0], "choices[0]")
        message = _object(choice.get("message"), "message")
        calls: list[ToolCallRequest] = []
        for i, tc in enumerate(_array(message.get("tool_calls"), "message.tool_calls")):
            where = f"message.tool_calls[{i}]"
            fn = _object(_object(tc, where).get("function"), f"{where}.function")
            args = fn.get("arguments")
            raw = json.dumps(args) if isinstance(args, dict) else _string(args, f"{where}.function.arguments")
            name = _string(fn.get("name"), f"{where}.function.name")
            calls.append(decode_arguments(name, raw, _string(tc.get("id"), f"{where}.id") or None))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        content, thinking = _content(message.get("content"), "message.content")
        return self._finish(
            content,
            _string(reasoning, "message.reasoning") + thinking,
            calls,
            _usage(data.get("usage")),
            _string(choice.get("finish_reason"), "finish_reason") or None,
            request,
        )

    def _finish(
        self,
        content: str,
        thinking: str,
        calls: list[ToolCallRequest],
        usage: Usage | None,
        finish_reason: str | None,
        request: LLMRequest,
    ) -> ModelResponse:
        may_call = request.may_call
        if not calls and has_markup(content) and not (thinking and not may_call):
            # A server without a tool/reasoning parser: read the raw text ourselves. When no
            # tools were offered, only thinking is split off: a call-like text is the text.
            parsed = parse_output(content) if may_call else parse_text_only(content)
            # A server that split off the reasoning itself has its parsers: the text is its
            # answer, which may well talk about <think> or [TOOL_CALLS]; only a readable call
            # in it (a server with no tool parser) is taken.
            readable = any(c.parse_error is None for c in parsed.tool_calls)
            if not thinking or readable or _CALL_ATTEMPT.search(content):
                content = parsed.content
                thinking = "\n".join(t for t in (thinking, parsed.thinking) if t)
                calls = parsed.tool_calls
            if calls and finish_reason in (None, "stop"):
                finish_reason = "tool_calls"
        elif calls:
            # A server with a tool parser but no reasoning parser leaves the thinking in the text.
            found, rest = split_all_thinking(content)
            if found:
                content = rest.strip()
                thinking = "\n".join(t for t in (thinking, found) if t)
        return ModelResponse(
            purpose=request.purpose,
            content=content.strip(),  # as the streamed deltas give it
            thinking=thinking,
            tool_calls=calls,
            usage=usage or Usage(),
            effort=request.effort,
            finish_reason=finish_reason or ("tool_calls" if calls else "stop"),
            model=self.name,
        )
