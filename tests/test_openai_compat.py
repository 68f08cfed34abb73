"""OpenAICompatLLM against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.events import ModelDelta, ModelResponse
from agent.llm.base import ContextLengthError, LLMError, LLMRequest, complete
from agent.llm.openai_compat import (
    LLMConnectionError,
    LLMHTTPError,
    LLMResponseError,
    LLMStreamError,
    OpenAICompatLLM,
    PromptTooLongError,
)
from agent.types import Message, ToolCallRequest

# --------------------------------------------------------------------------- fake server


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None  # sent as application/json
    events: list[Any] | None = None  # sent as SSE, each a dict (JSON) or a raw string
    done: bool = True  # end the SSE stream with `data: [DONE]`
    raw: list[bytes] | None = None  # the body as is, one write each (an event stream unless headers say)
    delay: float = 0.0  # seconds before the status line: a server that is slow to answer


class FakeServer:
    """Answers each POST with the next queued `Reply` and records the request."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.gets: dict[str, Reply] = {}  # GET path -> reply; any other path is a 404
        self.got: list[tuple[str, str | None]] = []  # (path, Authorization header) of each GET
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.got.append((self.path, self.headers.get("Authorization")))
                reply = server.gets.get(self.path, Reply(status=404, json_body={"detail": "Not Found"}))
                data = (
                    reply.json_body
                    if isinstance(reply.json_body, bytes)
                    else json.dumps(reply.json_body).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                server.headers.append(dict(self.headers))
                server.paths.append(self.path)
                reply = server.replies.pop(0) if server.replies else Reply(status=500, json_body={})
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.raw is not None:
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in reply.raw:
                        self.wfile.write(piece)
                        self.wfile.flush()
                        time.sleep(0.005)  # so the client reads each piece on its own
                    return
                if reply.events is None:
                    data = json.dumps(reply.json_body).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                for event in reply.events:
                    text = event if isinstance(event, str) else json.dumps(event)
                    self.wfile.write(f"data: {text}\n\n".encode())
                    self.wfile.flush()
                if reply.done:
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01})
        self.thread.daemon = True

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
async def make_llm(server: FakeServer):
    made: list[OpenAICompatLLM] = []

    def make(**kwargs: Any) -> OpenAICompatLLM:
        kwargs.setdefault("backoff", 0.001)
        llm = OpenAICompatLLM("test-model", base_url=server.base_url, api_key="sk-test", **kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        event["choices"] = []
        event["usage"] = usage
    return event


def text_stream(*pieces: str, usage: dict[str, Any] | None = None) -> Reply:
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk(finish="stop"))
    if usage:
        events.append(chunk(usage=usage))
    return Reply(events=events)


async def collect(llm: OpenAICompatLLM, request: LLMRequest) -> tuple[list[ModelDelta], ModelResponse]:
    items = [item async for item in llm.stream(request)]
    assert isinstance(items[-1], ModelResponse)
    assert all(isinstance(i, ModelDelta) for i in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def user(text: str = "hi") -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=text)])


ADD_SCHEMA = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}


def user_with_tools(text: str = "hi") -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=text)], tools=[ADD_SCHEMA])


# --------------------------------------------------------------------------- streaming


async def test_streamed_content_arrives_in_order_with_usage(server: FakeServer, make_llm) -> None:
    server.queue(
        text_stream(
            "Hel",
            "lo, ",
            "wor",
            "ld!",
            usage={
                "prompt_tokens": 12,
                "completion_tokens": 4,
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        )
    )
    llm = make_llm()
    deltas, response = await collect(llm, user())
    # As it came (white space at a piece's end waits for the next: a reply's ends are trimmed).
    assert [d.content for d in deltas] == ["Hel", "lo,", " wor", "ld!"]
    assert response.content == "Hello, world!"
    assert response.tool_calls == []
    assert response.finish_reason == "stop"
    assert response.model == llm.name == "openai:test-model"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 4)
    assert response.usage.thinking_tokens == 2
    assert server.paths == ["/v1/chat/completions"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "test-model"
    assert "tools" not in body and "tool_choice" not in body


async def test_streamed_tool_calls_are_reassembled(server: FakeServer, make_llm) -> None:
    def tc(index: int, args: str, id_: str | None = None, name: str | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
        if id_:
            call["id"], call["type"] = id_, "function"
        if name:
            call["function"]["name"] = name
        return chunk({"tool_calls": [call]})

    events = [
        chunk({"role": "assistant", "content": None}),
        tc(0, "", "call_a", "read_file"),
        tc(0, '{"pa'),
        tc(0, 'th": "/tmp/'),
        tc(0, 'x.txt"}'),
        tc(1, "", "call_b", "add"),
        tc(1, '{"a": 2,'),
        tc(1, ' "b": 3'),
        tc(1, "}"),
        chunk(finish="tool_calls"),
    ]
    server.queue(Reply(events=events))
    _, response = await collect(make_llm(), user())
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "read_file", {"path": "/tmp/x.txt"}),
        ("call_b", "add", {"a": 2, "b": 3}),
    ]
    assert all(c.parse_error is None for c in response.tool_calls)


async def test_tool_calls_without_index_or_id_are_told_apart(server: FakeServer, make_llm) -> None:
    def call(name: str | None, args: str) -> dict[str, Any]:
        return {"type": "function", "function": {"arguments": args, **({"name": name} if name else {})}}

    events = [
        chunk({"tool_calls": [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 3, "b": 4}')]}),
        chunk({"tool_calls": [call("sub", '{"a": 5,')]}),
        chunk({"tool_calls": [call("sub", ' "b": 6}')]}),  # a server that repeats the name each chunk
        chunk({"tool_calls": [call("mul", "")]}),
        chunk({"tool_calls": [call(None, '{"a": 7, "b": 8}')]}),
        chunk(finish="tool_calls"),
    ]
    server.queue(Reply(events=events))
    _, response = await collect(make_llm(), user())
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("add", {"a": 1, "b": 2}),
        ("add", {"a": 3, "b": 4}),
        ("sub", {"a": 5, "b": 6}),
        ("mul", {"a": 7, "b": 8}),
    ]


async def test_bad_tool_arguments_keep_raw_text(server: FakeServer, make_llm) -> None:
    call = {"index": 0, "id": "call_x", "function": {"name": "f", "arguments": '{"a": 1,, oops'}}
    lenient = {"index": 1, "id": "call_y", "function": {"name": "g", "arguments": '{"a": 1,}'}}
    server.queue(Reply(events=[chunk({"tool_calls": [call, lenient]}), chunk(finish="tool_calls")]))
    _, response = await collect(make_llm(), user())
    bad, ok = response.tool_calls
    assert bad.arguments is None and bad.raw_arguments == '{"a": 1,, oops' and bad.parse_error
    assert ok.arguments == {"a": 1} and ok.parse_error is None


async def test_lines_end_only_at_cr_and_lf(server: FakeServer, make_llm) -> None:
    # JSON may hold U+2028, U+0085 or \x1c unescaped; str.splitlines would cut the event there.
    text = "line\u2028sep \u0085 nel \x1c fs \u00e9\u4e16\U0001f600"
    stream = b": ping\r\n\r\n"
    stream += f"data: {json.dumps(chunk({'content': text}), ensure_ascii=False)}\r\n\r\n".encode()
    stream += f"data: {json.dumps(chunk({'content': '!'}))}\r\rdata: {json.dumps(chunk(finish='stop'))}\n\n".encode()
    stream += b"data: [DONE]\r\n\r\n"
    # Cut after every CR (so its LF comes in the next piece) and inside each multi-byte character.
    cuts = [i + 1 for i, b in enumerate(stream) if b == 13 or b >= 0xC0]
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    server.queue(Reply(raw=pieces))
    deltas, response = await collect(make_llm(), user())
    assert [d.content for d in deltas] == [text, "!"]
    assert response.content == text + "!" and response.finish_reason == "stop"


async def test_reasoning_goes_to_thinking(server: FakeServer, make_llm) -> None:
    events = [
        chunk({"role": "assistant"}),
        chunk({"reasoning_content": "Let me "}),
        chunk({"reasoning": "think."}),  # the newer vLLM field name
        chunk({"content": "Answer."}),
        chunk(finish="stop"),
    ]
    server.queue(Reply(events=events))
    deltas, response = await collect(make_llm(), user())
    assert [(d.thinking, d.content) for d in deltas] == [("Let me ", ""), ("think.", ""), ("", "Answer.")]
    assert response.thinking == "Let me think."
    assert response.content == "Answer."


async def test_request_body_converts_history(server: FakeServer, make_llm) -> None:
    server.queue(text_stream("ok"))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers.",
                "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
            },
        }
    ]
    request = LLMRequest(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="2+3?"),
            Message(
                role="assistant",
                content="",
                thinking="I should call add.",
                tool_calls=[
                    ToolCallRequest(id="call_1", name="add", arguments={"a": 2, "b": 3}),
                    ToolCallRequest(id="call_2", name="add", raw_arguments="{bad", parse_error="x"),
                ],
            ),
            Message(role="tool", content="5", tool_call_id="call_1", name="add"),
        ],
        tools=tools,
        tool_choice="required",
        effort="high",
        max_new_tokens=64,
        temperature=0.2,
        stop=["</s>"],
    )
    await complete(make_llm(extra_body={"top_k": 20}), request)
    body = server.requests[0]
    assert body["tools"] == tools
    assert body["tool_choice"] == "required"
    assert body["reasoning_effort"] == "high"
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.2
    assert body["stop"] == ["</s>"]
    assert body["top_k"] == 20
    system, usr, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert usr == {"role": "user", "content": "2+3?"}
    assert "thinking" not in assistant and "reasoning_content" not in assistant
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": "{}"}},
    ]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "5"}


async def test_unreadable_arguments_go_back_as_valid_json(server: FakeServer, make_llm, tmp_path) -> None:
    # vLLM json.loads the arguments of every call in the history and answers 400 to a bad one;
    # the model still sees its mistake, in the tool message the loop adds.
    from helpers import add

    from agent import Agent

    call = {"index": 0, "id": "call_1", "function": {"name": "add", "arguments": "a=2, b=3"}}
    server.queue(Reply(events=[chunk({"tool_calls": [call]}), chunk(finish="tool_calls")]), text_stream("5"))
    agent = Agent(make_llm(context_window=4096), tools=[add], guards=None, run_dir=tmp_path / "runs")
    result = await agent.arun("2+3?")
    assert result.status == "completed" and result.answer == "5"
    history = server.requests[1]["messages"]
    sent = [tc for m in history for tc in m.get("tool_calls") or []]
    assert [(tc["id"], tc["function"]["arguments"]) for tc in sent] == [("call_1", "{}")]
    [observation] = [m for m in history if m["role"] == "tool"]
    assert observation["tool_call_id"] == "call_1" and "You wrote: a=2, b=3" in observation["content"]


async def test_user_messages_in_a_row_go_to_the_server_as_one(server: FakeServer, make_llm, tmp_path) -> None:
    # A plan note after the task, or a message after a cancelled turn, would be two user turns in
    # a row, which chat templates that need the roles to alternate (Mistral, Gemma) refuse.
    from agent import Agent

    bad = Reply(status=400, json_body={"error": {"message": "bad request"}})
    server.queue(text_stream("1. count"), text_stream("one"), bad, text_stream("two"))
    agent = Agent(make_llm(), strategy="plan-act-reflect", guards=None, run_dir=tmp_path / "runs")
    session = agent.session()
    assert (await session.asend("count")).answer == "one"
    roles = [[m["role"] for m in body["messages"]] for body in server.requests]
    assert roles[0] == ["system", "user"]  # the task and the instruction to plan, as one
    assert roles[1] == ["system", "user"]  # the task and the plan note
    assert server.requests[1]["messages"][1]["content"].startswith("count\n\n")
    assert (await session.asend("and then?")).status == "failed"  # a turn that got no answer
    assert (await session.asend("again")).answer == "two"
    last = server.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
    assert last[-1]["content"] == "and then?\n\nagain"


async def test_extra_body_none_removes_a_field(server: FakeServer, make_llm) -> None:
    server.queue(text_stream("ok"))
    await complete(make_llm(extra_body={"reasoning_effort": None}), user())
    assert "reasoning_effort" not in server.requests[0]
    assert "max_tokens" not in server.requests[0]


async def test_a_thinking_budget_the_server_is_not_told_is_said_once(
    server: FakeServer, make_llm, caplog: pytest.LogCaptureFixture
) -> None:
    # The chat completions API has no budget field and a strict server rejects unknown ones,
    # so it goes only where the user puts it (extra_body), and is otherwise named in one warning.
    budget = LLMRequest(messages=[Message(role="user", content="hi")], thinking_budget=64)
    told = make_llm(extra_body={"chat_template_kwargs": {"thinking_budget": 64}})
    untold = make_llm()
    server.queue(*[text_stream("ok")] * 4)
    with caplog.at_level("WARNING", logger="agent.llm.openai_compat"):
        await complete(told, budget)
        for request in (user(), budget, budget):
            await complete(untold, request)
    assert server.requests[0]["chat_template_kwargs"] == {"thinking_budget": 64}
    assert not [key for body in server.requests[1:] for key in body if "budget" in key or "template" in key]
    assert [r.getMessage() for r in caplog.records] == [
        "openai:test-model: thinking_budget=64 is not sent to the server, as the chat completions API "
        'has no such field; send it the server\'s way with extra_body, e.g. {"thinking_token_budget": 64} '
        '(vLLM) or {"chat_template_kwargs": {"thinking_budget": 64}} (SGLang, Qwen3 templates)'
    ]


async def test_tool_call_text_is_parsed_without_structured_calls(server: FakeServer, make_llm) -> None:
    server.queue(
        text_stream(
            "<think>need the sum</think>",
            'Sure. <tool_call>{"name": "add", ',
            '"arguments": {"a": 2, "b": 3}}</tool_call>',
        )
    )
    _, response = await collect(make_llm(), user_with_tools())
    assert response.content == "Sure."
    assert response.thinking == "need the sum"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert response.finish_reason == "tool_calls"


async def test_a_server_that_parses_reasoning_but_not_calls_streams_no_call_markup(
    server: FakeServer, make_llm
) -> None:
    # vLLM with --reasoning-parser and no tool parser: the calls are still text in the content.
    events = [
        chunk({"reasoning_content": "I need the sum."}),
        chunk({"content": "\n\n<tool_"}),
        chunk({"content": 'call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'}),
        chunk(finish="stop"),
    ]
    server.queue(Reply(events=events))
    deltas, response = await collect(make_llm(), user_with_tools())
    assert "".join(d.thinking for d in deltas) == response.thinking == "I need the sum."
    assert "".join(d.content for d in deltas) == response.content == ""
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("add", {"a": 1, "b": 2})]


async def test_raw_harmony_from_a_server_that_parses_nothing_streams_split(
    server: FakeServer, make_llm
) -> None:
    # llama.cpp serving gpt-oss with --reasoning-format none: the channels are in the text.
    text = (
        "<|channel|>analysis<|message|>Need the weather; call the tool.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>"
        '{"a": 2, "b": 3}<|call|>'
    )
    server.queue(text_stream(*[text[i : i + 5] for i in range(0, len(text), 5)]))
    deltas, response = await collect(make_llm(), user_with_tools())
    assert "".join(d.thinking for d in deltas) == response.thinking == "Need the weather; call the tool."
    assert not any("<|" in d.content + d.thinking for d in deltas)  # no markup shown live, no call text
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("add", {"a": 2, "b": 3})]
    server.queue(text_stream("<|chan", "nel|>final<|message|>It is ", "4.<|return|>"))
    deltas, response = await collect(make_llm(), user())
    assert "".join(d.content for d in deltas) == response.content == "It is 4."


@pytest.mark.parametrize("stream", [True, False])
async def test_think_text_goes_to_thinking_beside_structured_calls(
    server: FakeServer, make_llm, stream
) -> None:
    # A server with a tool parser but no reasoning parser leaves the thinking in the content.
    text = "<think>I should add</think>\n\nAdding."
    call = {"index": 0, "id": "call_1", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    if stream:
        events = [chunk({"content": text}), chunk({"tool_calls": [call]}), chunk(finish="tool_calls")]
        server.queue(Reply(events=events))
    else:
        server.queue(Reply(json_body=completion({"content": text, "tool_calls": [call]})))
    _, response = await collect(make_llm(stream=stream), user())
    assert (response.thinking, response.content) == ("I should add", "Adding.")
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("add", {"a": 1, "b": 2})]


# --------------------------------------------------------------------------- non-streaming


async def test_non_streaming_mode(server: FakeServer, make_llm) -> None:
    server.queue(
        Reply(
            json_body={
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": "Adding.",
                            "reasoning_content": "Simple.",
                            "tool_calls": [
                                {
                                    "id": "call_9",
                                    "type": "function",
                                    "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                                }
                            ],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3},
            }
        )
    )
    deltas, response = await collect(make_llm(stream=False), user())
    assert len(deltas) == 1 and deltas[0].content == "Adding."
    assert response.content == "Adding." and response.thinking == "Simple."
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [("call_9", "add", {"a": 1, "b": 2})]
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 3)
    assert response.finish_reason == "tool_calls"
    assert server.requests[0]["stream"] is False and "stream_options" not in server.requests[0]


# --------------------------------------------------------------------------- retries and errors


async def test_retries_on_503_then_succeeds(server: FakeServer, make_llm) -> None:
    busy = Reply(status=503, json_body={"error": {"message": "overloaded"}})
    server.queue(busy, busy, text_stream("fine"))
    items = [item async for item in make_llm(max_retries=3).stream(user())]
    responses = [i for i in items if isinstance(i, ModelResponse)]
    assert len(responses) == 1 and responses[0].content == "fine"
    assert len(server.requests) == 3


async def test_retry_after_header_on_429(server: FakeServer, make_llm) -> None:
    limited = Reply(status=429, headers={"Retry-After": "0"}, json_body={"error": {"message": "slow down"}})
    server.queue(limited, text_stream("ok"))
    start = time.monotonic()
    response = await complete(make_llm(backoff=5.0), user())  # Retry-After: 0 wins over the backoff
    assert response.content == "ok"
    assert len(server.requests) == 2
    assert time.monotonic() - start < 1.0


async def test_gives_up_after_max_retries(server: FakeServer, make_llm) -> None:
    server.queue(*[Reply(status=502, json_body={"error": {"message": "bad gateway"}})] * 3)
    with pytest.raises(LLMHTTPError) as info:
        await complete(make_llm(max_retries=2), user())
    assert info.value.status_code == 502
    assert "bad gateway" in str(info.value) and "2 retries" in str(info.value)
    assert len(server.requests) == 3


async def test_a_server_that_does_not_answer_in_time_is_not_asked_again(server: FakeServer, make_llm) -> None:
    # Asking again would wait as long again, or start a long generation over: (retries + 1) x timeout.
    server.queue(*[Reply(delay=1.0, events=[{"choices": [{"delta": {"content": "late"}}]}])] * 3)
    with pytest.raises(LLMConnectionError, match="timed out after 0.3 s"):
        await complete(make_llm(timeout=0.3, max_retries=2), user())
    assert len(server.requests) == 1


async def test_an_event_stream_labelled_json_is_read_as_one(server: FakeServer, make_llm) -> None:
    chunk = {"choices": [{"delta": {"content": "Hello"}, "finish_reason": "stop"}]}
    pieces = [f"data: {json.dumps(chunk)}\n\n".encode(), b"data: [DONE]\n\n"]
    server.queue(Reply(raw=pieces, headers={"Content-Type": "application/json"}))
    response = await complete(make_llm(), user())
    assert response.content == "Hello" and response.finish_reason == "stop"
    server.queue(Reply(json_body={"choices": [{"message": {"content": "Plain"}, "finish_reason": "stop"}]}))
    assert (await complete(make_llm(), user())).content == "Plain"  # a server that ignored stream: true


async def test_401_is_clear_and_not_retried(server: FakeServer, make_llm) -> None:
    server.queue(Reply(status=401, json_body={"error": {"message": "Incorrect API key provided"}}))
    llm = make_llm()
    with pytest.raises(LLMHTTPError) as info:
        await complete(llm, user())
    message = str(info.value)
    assert info.value.status_code == 401
    assert "401" in message and llm.url in message
    assert "Incorrect API key provided" in message and "--api-key" in message
    assert len(server.requests) == 1


async def test_404_names_base_url_and_model(server: FakeServer, make_llm) -> None:
    server.queue(Reply(status=404, json_body={"detail": "Not Found"}))
    with pytest.raises(LLMHTTPError, match=r"404.*Not Found.*--base-url and model name"):
        await complete(make_llm(), user())
    assert len(server.requests) == 1


async def test_no_retry_after_partial_stream(server: FakeServer, make_llm) -> None:
    # The server sends some text, then the connection closes without finish or [DONE].
    server.queue(Reply(events=[chunk({"content": "partial"})], done=False), text_stream("never"))
    seen: list[ModelDelta | ModelResponse] = []
    with pytest.raises(LLMError, match="ended before the answer"):
        async for item in make_llm().stream(user()):
            seen.append(item)
    assert [i.content for i in seen] == ["partial"]
    assert len(server.requests) == 1


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


async def test_a_connection_dropped_after_the_finish_keeps_the_answer(server: FakeServer, make_llm) -> None:
    # The body is cut short of its Content-Length: httpx sees a broken message, not a clean end.
    body = sse(chunk({"content": "complete"}), chunk(finish="stop"), chunk(usage={"prompt_tokens": 3}))
    server.queue(Reply(headers={"Content-Length": "100000"}, raw=[body]))
    _, response = await collect(make_llm(), user())
    assert (response.content, response.finish_reason, response.usage.prompt_tokens) == ("complete", "stop", 3)
    # Before the finish it is still a broken stream, and it is not repeated.
    server.queue(Reply(headers={"Content-Length": "100000"}, raw=[sse(chunk({"content": "part"}))]))
    with pytest.raises(LLMStreamError, match="broke off part way"):
        await collect(make_llm(), user())
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "event",
    [
        {"error": {"message": "context length exceeded"}},
        # older vLLM: the error object itself, then [DONE]
        {"object": "error", "message": "context length exceeded", "type": "BadRequestError", "code": 400},
    ],
)
async def test_error_event_in_stream(server: FakeServer, make_llm, event) -> None:
    # A prompt too long, said in the stream (SGLang, older vLLM): the loop's context error, not retried.
    server.queue(Reply(events=[event]))
    with pytest.raises(PromptTooLongError, match="error in the stream: context length exceeded") as info:
        await complete(make_llm(), user())
    assert isinstance(info.value, ContextLengthError) and not info.value.retryable
    assert len(server.requests) == 1
    server.queue(Reply(events=[{"error": {"message": "the engine died"}}]))
    with pytest.raises(LLMStreamError, match="error in the stream: the engine died"):
        await complete(make_llm(), user())


async def test_llama_cpp_error_field_in_stream(server: FakeServer, make_llm) -> None:
    # llama.cpp before PR #16109 reports a failure as an `error:` field, then ends the stream normally.
    error = {"code": 400, "message": "the request exceeds the available context size", "type": "x"}
    server.queue(Reply(raw=[f"error: {json.dumps(error)}\n\n".encode(), b"data: [DONE]\n\n"]))
    with pytest.raises(PromptTooLongError, match="error in the stream: the request exceeds the available"):
        await complete(make_llm(), user())
    assert len(server.requests) == 1


@pytest.mark.parametrize("events", [[], [chunk({"role": "assistant"})]])
async def test_a_stream_done_with_no_answer_is_an_error(server: FakeServer, make_llm, events) -> None:
    server.queue(Reply(events=events))
    with pytest.raises(LLMStreamError, match="no content, tool call or finish_reason"):
        await complete(make_llm(), user())
    assert len(server.requests) == 1


def completion(message: Any, usage: Any = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}


GZIP = {"Content-Encoding": "gzip"}
HTML = {"Content-Type": "text/html"}


@pytest.mark.parametrize(
    "stream, reply, why",
    [
        (True, Reply(events=[{"choices": ["x"]}]), 'choices[0] is "x", not an object'),
        (
            True,
            Reply(events=[chunk({"content": 5}), chunk(finish="stop")]),
            "delta.content is 5, not a string",
        ),
        (True, Reply(events=[chunk({"tool_calls": [{"function": "f"}]})]), 'function is "f", not an object'),
        (
            True,
            Reply(
                events=[
                    chunk({"content": "hi"}),
                    chunk(finish="stop"),
                    chunk(usage={"prompt_tokens": "many"}),
                ]
            ),
            'usage.prompt_tokens is "many", not a count',
        ),
        (True, Reply(headers=GZIP, raw=[sse(chunk({"content": "hi"}))]), "could not be decoded"),
        (True, Reply(headers=HTML, raw=[b"<html>Welcome</html>"]), "an HTML page, not an event stream"),
        (False, Reply(json_body={"choices": ["x"]}), 'choices[0] is "x", not an object'),
        (False, Reply(json_body=completion({"content": 5})), "message.content is 5, not a string"),
        (False, Reply(json_body=completion({"content": "hi"}, {"completion_tokens": [1]})), "not a count"),
        (False, Reply(json_body={"unexpected": True}), "returned no choices"),
        (
            False,
            Reply(headers={**GZIP, "Content-Type": "application/json"}, raw=[b"{}"]),
            "could not be decoded",
        ),
        (False, Reply(headers=HTML, raw=[b"<html>Welcome</html>"]), "not JSON"),
    ],
)
async def test_a_reply_that_is_not_a_chat_completion_is_one_clear_error(
    server: FakeServer, make_llm, stream, reply, why
) -> None:
    server.queue(reply, text_stream("never"))
    llm = make_llm(stream=stream)
    with pytest.raises(LLMResponseError) as info:
        await complete(llm, user())
    assert str(info.value).startswith(
        f"{llm.name}: the reply from {llm.url} is not a valid chat completion: "
    )
    assert why in str(info.value)
    assert len(server.requests) == 1  # the same request would get the same reply


async def test_connection_refused_is_quick_and_clear() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    llm = OpenAICompatLLM("m", base_url=base, max_retries=1, backoff=0.001)
    start = time.monotonic()
    try:
        with pytest.raises(LLMError, match="unreachable") as info:
            await complete(llm, user())
    finally:
        await llm.aclose()
    assert base in str(info.value)
    assert time.monotonic() - start < 1.0


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAICompatLLM("m").api_key == "sk-env"
    assert OpenAICompatLLM("m", api_key="sk-arg").api_key == "sk-arg"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert OpenAICompatLLM("m").api_key is None
    assert OpenAICompatLLM("m", name="local").name == "local"


# --------------------------------------------------------------------------- context window


VLLM_MODELS = {
    "object": "list",
    "data": [
        {"id": "other-model", "object": "model", "max_model_len": 1024},
        {"id": "test-model", "object": "model", "owned_by": "vllm", "max_model_len": 32768},
    ],
}
LLAMA_CPP_MODELS = {
    "object": "list",
    "data": [{"id": "qwen3-8b-q4_k_m.gguf", "meta": {"n_ctx_train": 40960}}],
}
LLAMA_CPP_PROPS = {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 1}


def test_context_window_is_learned_once_from_max_model_len(server: FakeServer) -> None:
    server.gets["/v1/models"] = Reply(json_body=VLLM_MODELS)
    llm = OpenAICompatLLM("test-model", base_url=server.base_url, api_key="sk-test")
    assert llm.context_window is None and not llm.loaded
    assert llm.learn_context_window() == 32768
    assert llm.learn_context_window() == 32768
    assert server.got == [("/v1/models", "Bearer sk-test")]
    assert llm.loaded and llm.context_window == 32768


@pytest.mark.parametrize("with_props, window", [(True, 8192), (False, 40960)])
def test_context_window_from_llama_cpp_prefers_the_runtime_n_ctx(
    server: FakeServer, with_props, window
) -> None:
    server.gets["/v1/models"] = Reply(json_body=LLAMA_CPP_MODELS)
    if with_props:
        server.gets["/props"] = Reply(json_body=LLAMA_CPP_PROPS)
    # The only model there is ours, whatever name we gave it.
    assert OpenAICompatLLM("default", base_url=server.base_url).learn_context_window() == window
    assert [path for path, _ in server.got] == ["/v1/models", "/props"]


@pytest.mark.parametrize(
    "models, why",
    [
        (None, "HTTP 404 from {base}/models; "),
        (Reply(json_body=b"<html>not json</html>"), "{base}/models is not JSON; "),
        (Reply(json_body={"data": [{"id": "a"}, {"id": "b", "max_model_len": 4096}]}), ""),  # not ours
        (Reply(json_body={"data": [{"id": "test-model", "max_model_len": "big"}]}), ""),
    ],
)
def test_a_server_that_tells_no_window_gives_none_and_one_log_line(
    server: FakeServer, caplog: pytest.LogCaptureFixture, models, why
) -> None:
    if models is not None:
        server.gets["/v1/models"] = models
    llm = OpenAICompatLLM("test-model", base_url=server.base_url)
    with caplog.at_level("WARNING", logger="agent.llm.openai_compat"):
        assert llm.learn_context_window() is None
        assert llm.learn_context_window() is None
    assert len(server.got) == 2  # /v1/models and /props, asked once
    base = server.base_url
    why = why.format(base=base) + f"HTTP 404 from {base.removesuffix('/v1')}/props"
    assert [r.getMessage() for r in caplog.records] == [
        f"openai:test-model: the server at {base} does not report its context window ({why}), "
        "so prompts are not fitted to it; give one with --context-window or context_window="
    ]
    assert llm.loaded


def test_an_unreachable_server_gives_no_window_quickly(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAICompatLLM("m", base_url=f"http://127.0.0.1:{port}/v1")
    start = time.monotonic()
    with caplog.at_level("INFO", logger="agent.llm.openai_compat"):
        assert llm.learn_context_window() is None
    assert time.monotonic() - start < 1.0
    # Said quietly: the run's first request reports the same fault loudly.
    assert [r.levelname for r in caplog.records] == ["INFO"] and "ConnectError" in caplog.text


def test_an_explicit_context_window_asks_nothing(server: FakeServer) -> None:
    server.gets["/v1/models"] = Reply(json_body=VLLM_MODELS)
    llm = OpenAICompatLLM("test-model", base_url=server.base_url, context_window=2048)
    assert llm.loaded and llm.learn_context_window() == 2048
    assert server.got == []


async def test_an_agent_fits_its_prompts_to_the_learned_window(
    server: FakeServer, make_llm, tmp_path
) -> None:
    from agent import Agent

    server.gets["/v1/models"] = Reply(json_body=VLLM_MODELS)
    llm = make_llm()
    agent = Agent(llm, run_dir=tmp_path / "runs")
    budget = await asyncio.to_thread(agent.context_budget)
    assert budget is not None and budget.window == 32768
    # A run learns it too (on a worker thread, the loop keeps serving) and sends its prompt.
    other = make_llm()
    server.queue(text_stream("done"))
    events = [event async for event in Agent(other, run_dir=tmp_path / "runs").run("hi")]
    assert events[-1].type == "run_finished" and events[-1].status == "completed"
    assert other.context_window == 32768
    assert len(server.got) == 2 and len(server.requests) == 1


async def test_a_reply_to_a_request_without_tools_is_text(server: FakeServer, make_llm) -> None:
    plan = 'Plan:\n1. Call add with {"name": "add", "arguments": {"a": 1, "b": 2}}\n2. Report the sum.'
    server.queue(text_stream("<think>plan it</think>", plan))
    _, response = await collect(make_llm(), user())
    assert response.tool_calls == [] and response.content == plan and response.thinking == "plan it"


async def test_an_answer_about_format_markers_is_not_reparsed_when_the_server_split_the_reasoning(
    server: FakeServer, make_llm
) -> None:
    answer = "Mistral models emit the [TOOL_CALLS] token; Qwen3 wraps its reasoning in <think> tags."
    events = [
        chunk({"reasoning_content": "They ask about formats."}),
        chunk({"content": answer}),
        chunk(finish="stop"),
    ]
    server.queue(Reply(events=events))
    _, response = await collect(make_llm(), user_with_tools())
    assert response.content == answer and response.tool_calls == []
    assert response.thinking == "They ask about formats."


@pytest.mark.parametrize("ctype", ["text/plain", "application/octet-stream"])
async def test_a_completion_with_the_wrong_content_type_is_read_and_other_bodies_are_shown(
    server: FakeServer, make_llm, ctype
) -> None:
    completion = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
        ]
    }
    server.queue(Reply(raw=[json.dumps(completion).encode()], headers={"Content-Type": ctype}))
    _, response = await collect(make_llm(), user())
    assert response.content == "Paris"
    server.queue(
        Reply(
            raw=[b"upstream connect error or disconnect/reset before headers"],
            headers={"Content-Type": "text/plain"},
        )
    )
    with pytest.raises(LLMResponseError, match="neither an event stream nor JSON.*upstream connect error"):
        await collect(make_llm(), user())
    assert len(server.requests) == 2  # not retried


async def test_a_prompt_too_long_for_the_server_is_a_context_length_error(
    server: FakeServer, make_llm
) -> None:
    from agent.llm.base import ContextLengthError

    message = "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens."
    server.queue(Reply(status=400, json_body={"object": "error", "message": message, "code": 400}))
    with pytest.raises(ContextLengthError, match="maximum context length"):
        await collect(make_llm(), user())
    server.queue(Reply(status=400, json_body={"error": {"message": "unknown field 'foo'"}}))
    with pytest.raises(LLMHTTPError) as refused:
        await collect(make_llm(), user())
    assert not isinstance(refused.value, ContextLengthError)


@pytest.mark.parametrize("stream", [True, False])
async def test_content_as_a_list_of_parts_is_read(server: FakeServer, make_llm, stream) -> None:
    parts = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm."}]},
        {"type": "text", "text": "hi"},
    ]
    if stream:
        server.queue(Reply(events=[chunk({"content": parts}), chunk(finish="stop")]))
    else:
        message = {"role": "assistant", "content": parts}
        server.queue(
            Reply(json_body={"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        )
    _, response = await collect(make_llm(stream=stream), user())
    assert (response.content, response.thinking) == ("hi", "Hmm.")


async def test_parallel_calls_that_reuse_index_0_stay_apart(server: FakeServer, make_llm) -> None:
    # Ollama numbers every call of a turn 0; each comes with its own id.
    first = {"index": 0, "id": "c1", "function": {"name": "add", "arguments": '{"a": 1}'}}
    second = {"index": 0, "id": "c2", "function": {"name": "add", "arguments": '{"a": 2}'}}
    rest = {"index": 0, "function": {"arguments": ""}}
    events = [chunk({"tool_calls": [first]}), chunk({"tool_calls": [second]}), chunk({"tool_calls": [rest]})]
    server.queue(Reply(events=[*events, chunk(finish="tool_calls")]))
    _, response = await collect(make_llm(), user_with_tools())
    assert [(c.id, c.arguments) for c in response.tool_calls] == [("c1", {"a": 1}), ("c2", {"a": 2})]
    # without ids: a name with arguments once the call at that index is whole starts the next one,
    # a name repeated alone does not
    first = {"index": 0, "function": {"name": "add", "arguments": '{"a": 1}'}}
    again = {"index": 0, "function": {"name": "add"}}
    blank = {"index": 0, "function": {"name": "add", "arguments": "\n"}}  # the name again, and white space
    second = {"index": 0, "function": {"name": "add", "arguments": '{"a": 2}'}}
    events = [
        chunk({"tool_calls": [first, again, blank]}),
        chunk({"tool_calls": [second]}),
        chunk(finish="tool_calls"),
    ]
    server.queue(Reply(events=events))
    _, response = await collect(make_llm(), user_with_tools())
    assert [(c.name, c.arguments, c.parse_error) for c in response.tool_calls] == [
        ("add", {"a": 1}, None),
        ("add", {"a": 2}, None),
    ]


async def test_a_fastapi_422_names_the_field_and_a_refused_reasoning_effort_is_dropped(
    server: FakeServer, make_llm
) -> None:
    detail = [
        {
            "type": "extra_forbidden",
            "loc": ["body", "reasoning_effort"],
            "msg": "Extra inputs are not permitted",
        }
    ]
    server.queue(Reply(status=422, json_body={"detail": detail}), text_stream("ok"))
    assert (await complete(make_llm(), user())).content == "ok"
    assert ["reasoning_effort" in body for body in server.requests] == [True, False]


async def test_a_server_error_that_says_the_request_can_never_work_is_not_retried(
    server: FakeServer, make_llm
) -> None:
    jinja = Reply(status=500, json_body={"error": {"message": "tools param requires --jinja flag"}})
    server.queue(jinja)
    with pytest.raises(LLMHTTPError, match="requires --jinja") as info:
        await complete(make_llm(), user_with_tools())
    assert not info.value.retryable and len(server.requests) == 1


async def test_a_server_that_refuses_tool_choice_required_is_asked_again_with_auto(
    server: FakeServer, make_llm
) -> None:
    refusal = Reply(
        status=400, json_body={"error": {"message": 'tool_choice = "required" is not supported!'}}
    )
    server.queue(refusal, text_stream("first"), text_stream("second"))
    llm = make_llm()
    required = LLMRequest(
        messages=[Message(role="user", content="x")], tools=[ADD_SCHEMA], tool_choice="required"
    )
    assert (await complete(llm, required)).content == "first"
    assert (await complete(llm, required)).content == "second"
    assert [body["tool_choice"] for body in server.requests] == ["required", "auto", "auto"]
    # FastAPI's "Field required" about something else is no refusal of tool_choice
    detail = [{"type": "missing", "loc": ["body", "messages", 1, "content"], "msg": "Field required"}]
    server.queue(Reply(status=422, json_body={"detail": detail}))
    fresh = make_llm()
    with pytest.raises(LLMHTTPError, match="Field required"):
        await complete(fresh, required)
    assert server.requests[-1]["tool_choice"] == "required" and not fresh._required_refused


async def test_a_server_that_refuses_reasoning_effort_is_asked_again_without_it(
    server: FakeServer, make_llm
) -> None:
    refusal = Reply(status=400, json_body={"error": {"message": '"llama3.1:8b" does not support thinking'}})
    server.queue(refusal, text_stream("Paris"), text_stream("Rome"))
    llm = make_llm()
    _, response = await collect(llm, user())
    assert response.content == "Paris"
    _, response = await collect(llm, user())
    assert response.content == "Rome"
    assert ["reasoning_effort" in body for body in server.requests] == [True, False, False]


async def test_a_broken_call_is_no_answer_even_when_the_server_split_the_reasoning(
    server: FakeServer, make_llm
) -> None:
    broken = 'Checking. <tool_call>{"name": "add", "arguments": {"a": 1, "b": }}</tool_call>'
    events = [chunk({"reasoning_content": "Add them."}), chunk({"content": broken}), chunk(finish="stop")]
    server.queue(Reply(events=events))
    _, response = await collect(make_llm(), user_with_tools())
    assert len(response.tool_calls) == 1 and response.tool_calls[0].parse_error is not None
    assert response.content == "Checking." and response.finish_reason == "tool_calls"


@pytest.mark.parametrize("tools", [True, False])
async def test_a_parserless_servers_markup_is_split_while_it_streams(
    server: FakeServer, make_llm, tools
) -> None:
    call_text = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    pieces = ["<thi", "nk>secret plan</think>", "Sure. <tool_", call_text.removeprefix("<tool_")]
    server.queue(text_stream(*pieces))
    deltas, response = await collect(make_llm(), user_with_tools() if tools else user())
    shown = "".join(d.content for d in deltas)
    assert "think>" not in shown and "secret plan" not in shown
    assert "".join(d.thinking for d in deltas) == response.thinking == "secret plan"
    assert shown == response.content  # the deltas add up to the reply
    if tools:
        assert shown == "Sure." and response.tool_calls[0].name == "add"
    else:  # no tools offered: the call is the text it is
        assert shown == "Sure. " + call_text and response.tool_calls == []


async def test_streamed_text_around_the_servers_own_parsing_adds_up(server: FakeServer, make_llm) -> None:
    # Text, then a reasoning field (the server parses after all): no white space is lost.
    events = [chunk({"content": "Hello "}), chunk({"reasoning_content": "hmm"}), chunk({"content": "world"})]
    server.queue(Reply(events=[*events, chunk(finish="stop")]))
    deltas, response = await collect(make_llm(), user_with_tools())
    assert "".join(d.content for d in deltas) == response.content == "Hello world"
    # A JSON block in an answer streams as it comes (a server with a tool parser sends calls at the end).
    block = ["Here:\n", "```json\n", '{"a": 1,\n', ' "b": 2}\n', "```\n", "Done."]
    server.queue(text_stream(*block))
    deltas, response = await collect(make_llm(), user_with_tools())
    assert (
        len([d for d in deltas if d.content]) >= 4 and "".join(d.content for d in deltas) == response.content
    )


async def test_a_streamed_reply_leaves_its_connection_for_the_next_request() -> None:
    # An HTTP/1.1 server that ends each stream's body after [DONE], as vLLM and llama.cpp do.
    connections: list[int] = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            connections.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in (sse(chunk({"content": "hi"})), sse(chunk(finish="stop")), b"data: [DONE]\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        llm = OpenAICompatLLM(model="m", base_url=f"http://127.0.0.1:{httpd.server_port}/v1")
        for _ in range(3):
            assert (await complete(llm, user())).content == "hi"
        await llm.aclose()
    finally:
        httpd.shutdown()
    assert len(connections) == 3 and len(set(connections)) == 1  # one connection, not one per step


async def test_thinking_opened_by_the_chat_template_streams_as_thinking_once_seen(
    server: FakeServer, make_llm
) -> None:
    # Qwen3 / DeepSeek-R1 templates end the prompt with "<think>\n": the reply closes a block it
    # never opened. The first such reply streams its thinking as content (nothing tells yet);
    # the final reply is split right, and from then on the stream is too.
    llm = make_llm()
    server.queue(text_stream("Let me ", "think.</think>", "The answer is 4."))
    deltas, response = await collect(llm, user())
    assert (response.thinking, response.content) == ("Let me think.", "The answer is 4.")
    server.queue(text_stream("Add them", " up.</thi", "nk>\n\nIt is 5."))
    deltas, response = await collect(llm, user())
    assert "".join(d.thinking for d in deltas) == response.thinking == "Add them up."
    assert "".join(d.content for d in deltas) == response.content == "It is 5."
    # a reply with no thinking block (thinking switched off): its text streams as content at
    # the end, and the next replies stream as content from the start again
    server.queue(text_stream("Just ", "six."))
    _, response = await collect(llm, user())
    assert response.content == "Just six."
    server.queue(text_stream("Seven", "."))
    deltas, _ = await collect(llm, user())
    assert [d.content for d in deltas if d.content] == ["Seven", "."] and not any(d.thinking for d in deltas)


async def test_a_default_reply_limit_is_sent_unless_the_request_names_one(
    server: FakeServer, make_llm
) -> None:
    from agent.cli import build_parser, make_model

    args = build_parser().parse_args(
        ["run", "x", "--base-url", server.base_url, "--max-new-tokens", "1500", "--api-key", "sk-test"]
    )
    llm = make_model(args)  # `agent run --max-new-tokens`: the reply limit the embedded 512 was
    try:
        server.queue(text_stream("ok"))
        await complete(llm, user())
        assert server.requests[-1]["max_tokens"] == 1500
    finally:
        await llm.aclose()
    server.queue(text_stream("ok"))
    await complete(make_llm(max_new_tokens=900), user().model_copy(update={"max_new_tokens": 64}))
    assert server.requests[-1]["max_tokens"] == 64


# --------------------------------------------------------------------------- a review's reproductions


async def test_an_error_beside_a_choice_fails_the_reply_instead_of_ending_it(
    server: FakeServer, make_llm
) -> None:
    # OpenRouter's shape for a provider that fails mid-reply: the run ended "completed" with half an answer.
    failed = {
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    server.queue(Reply(events=[chunk({"content": "The answer is"}), failed]))
    with pytest.raises(LLMStreamError, match="reported an error in the stream: Provider disconnected"):
        await collect(make_llm(), user())
    # A finish_reason "error" alone says as much; so does a non-streamed completion.
    server.queue(Reply(events=[chunk({"content": "Half"}), chunk(finish="error")]))
    with pytest.raises(LLMStreamError, match="reported an error in the stream"):
        await collect(make_llm(), user())
    ended = [{"index": 0, "message": {"content": "x"}, "finish_reason": "error"}]
    server.queue(Reply(json_body={**failed, "choices": ended}))
    with pytest.raises(LLMError, match="reported an error: Provider disconnected"):
        await collect(make_llm(stream=False), user())


async def test_a_stream_cut_inside_its_last_event_keeps_a_finished_answer_and_retries_an_empty_one(
    server: FakeServer, make_llm
) -> None:
    whole = [b'data: {"choices":[{"index":0,"delta":{"content":"Paris"}}]}\n\n',
             b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
             b'data: {"choices":[],"usage":{"prompt_tok']  # fmt: skip
    server.queue(Reply(raw=whole))
    _, response = await collect(make_llm(), user())
    assert response.content == "Paris"  # was "bad event in the stream": the answer was lost
    # Cut before anything was said: asked again, as a stream that ends early is.
    server.queue(Reply(raw=[b'data: {"choices":[{"index":0,"delta":{"cont']), text_stream("Lyon"))
    _, response = await collect(make_llm(), user())
    assert response.content == "Lyon" and len(server.requests) == 3


async def test_retry_after_as_a_date_or_in_milliseconds_is_waited_for(server: FakeServer, make_llm) -> None:
    import email.utils

    later = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.queue(
        Reply(status=429, headers={"Retry-After": later}, json_body={"error": {"message": "slow down"}}),
        Reply(status=429, headers={"retry-after-ms": "300"}, json_body={"error": {"message": "slow down"}}),
        text_stream("ok"),
    )
    started = time.monotonic()
    response = await complete(make_llm(backoff=0.001), user())
    waited = time.monotonic() - started
    # The date is 1-2 s away (it has whole seconds) and 0.3 s more; the backoff alone is 3 ms.
    assert response.content == "ok" and 1.2 < waited < 10, waited


async def test_a_stray_byte_in_a_completion_does_not_lose_it(server: FakeServer, make_llm) -> None:
    message = b'{"role":"assistant","content":"caf\xc3 ok"}'
    body = b'{"choices":[{"index":0,"message":' + message + b',"finish_reason":"stop"}]}'
    server.queue(Reply(raw=[body], headers={"Content-Type": "application/json"}))
    response = await complete(make_llm(stream=False), user())
    assert response.content == "caf\ufffd ok"  # was "the body is not JSON"


async def test_connecting_waits_at_most_ten_seconds_and_a_read_timeout_says_how_to_wait_longer(
    server: FakeServer, make_llm
) -> None:
    llm = make_llm(timeout=300.0)
    server.queue(text_stream("ok"))
    await complete(llm, user())
    timeout = llm._client.timeout  # the client the first request made
    assert (timeout.connect, timeout.read) == (10.0, 300.0)
    server.queue(Reply(delay=1.0, events=[chunk({"content": "late"})]))
    with pytest.raises(LLMConnectionError, match=r"timed out after 0.2 s .*--request-timeout"):
        await complete(make_llm(timeout=0.2), user())
