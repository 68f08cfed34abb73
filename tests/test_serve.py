"""`agent serve`: the OpenAI-compatible server, on real sockets on 127.0.0.1.

Protocol tests put a `ScriptedLLM` (or a small LLM written here) behind the
server and talk to it with `OpenAICompatLLM`, httpx or raw bytes. Then the
real default model answers over loopback, in process and as `agent serve`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.events import ModelDelta, ModelResponse
from agent.llm.base import LLMError, LLMRequest, complete
from agent.llm.openai_compat import LLMHTTPError, LLMStreamError, OpenAICompatLLM
from agent.llm.scripted import ScriptedLLM
from agent.serve import ChatServer
from agent.testing import call
from agent.types import Message, ToolCallRequest, Usage

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 30.0  # seconds; only so that a broken server fails instead of hanging

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def ask(text: str, **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=text)], **kwargs)


async def collect(llm: Any, request: LLMRequest) -> tuple[list[ModelDelta], ModelResponse]:
    deltas: list[ModelDelta] = []
    responses: list[ModelResponse] = []
    async for item in llm.stream(request):
        (responses if isinstance(item, ModelResponse) else deltas).append(item)
    assert len(responses) == 1
    return deltas, responses[0]


def sse_events(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except `[DONE]`."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


@pytest.fixture
async def serve():
    """serve(llm, **options) -> a started ChatServer on a free port, closed after the test."""
    servers: list[ChatServer] = []

    async def start(llm: Any, **options: Any) -> ChatServer:
        server = await ChatServer(llm, port=0, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
        yield client


# --------------------------------------------------------------------------- completions


async def test_non_streamed_completion_carries_thinking_content_and_usage(serve, http):
    llm = ScriptedLLM(["<think>Two and two.</think>It is 4.", "<think>Again.</think>Still 4."])
    server = await serve(llm)
    client = OpenAICompatLLM("whatever", base_url=server.base_url, stream=False)
    response = await complete(client, ask("2+2?"))
    await client.aclose()
    assert (response.content, response.thinking) == ("It is 4.", "Two and two.")
    assert response.finish_reason == "stop" and response.usage.completion_tokens > 0

    r = await http.post(
        server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "2+2?"}]}
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and body["model"] == "scripted"
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Still 4.", "reasoning_content": "Again."}
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_streamed_completion_is_openai_sse(serve, http):
    text = "<think>Let me count to three.</think>One, two, three, and that is all."
    server = await serve(ScriptedLLM([text, text], chunk_size=5))
    body = {
        "messages": [{"role": "user", "content": "count"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await http.post(server.base_url + "/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me count to three."
    assert "".join(d.get("content", "") for d in deltas) == "One, two, three, and that is all."
    assert sum("content" in d for d in deltas) > 2, "content arrives in pieces"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0

    body["stream_options"] = {"include_usage": False}
    events = sse_events((await http.post(server.base_url + "/chat/completions", json=body)).text)
    assert not any("usage" in e for e in events[:-1] if isinstance(e, dict))


async def test_openai_compat_streams_from_the_server(serve):
    script = [
        ModelResponse(
            content="Hello there.",
            thinking="A greeting.",
            usage=Usage(prompt_tokens=7, completion_tokens=5, thinking_tokens=3),
        )
    ]
    server = await serve(ScriptedLLM(script, chunk_size=4))
    async with OpenAICompatLLM("m", base_url=server.base_url) as client:
        deltas, response = await collect(client, ask("hi"))
    assert "".join(d.content for d in deltas) == response.content == "Hello there."
    assert "".join(d.thinking for d in deltas) == response.thinking == "A greeting."
    assert response.usage == Usage(prompt_tokens=7, completion_tokens=5, thinking_tokens=3)


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calls_round_trip_into_tool_call_requests(serve, stream):
    llm = ScriptedLLM(
        [
            "I will add.\n" + call("add", a=2, b=3) + call("add", a=1, b=1),
            "The sum is 5.",
        ]
    )
    server = await serve(llm)
    async with OpenAICompatLLM("m", base_url=server.base_url, stream=stream) as client:
        first = await complete(client, ask("2+3?", tools=[ADD_TOOL]))
        assert first.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in first.tool_calls] == [
            ("add", {"a": 2, "b": 3}),
            ("add", {"a": 1, "b": 1}),
        ]
        assert all(isinstance(c, ToolCallRequest) and c.id for c in first.tool_calls)
        assert first.content == "I will add."
        history = [
            Message(role="user", content="2+3?"),
            Message(role="assistant", content=first.content, tool_calls=first.tool_calls),
            Message(role="tool", tool_call_id=first.tool_calls[0].id, content="5"),
            Message(role="tool", tool_call_id=first.tool_calls[1].id, content="2"),
        ]
        second = await complete(client, LLMRequest(messages=history, tools=[ADD_TOOL]))
    assert second.content == "The sum is 5." and not second.tool_calls
    seen = llm.requests[1]
    assert [m.role for m in seen.messages] == ["user", "assistant", "tool", "tool"]
    assert seen.messages[1].tool_calls == first.tool_calls
    assert [m.tool_call_id for m in seen.messages[2:]] == [c.id for c in first.tool_calls]
    assert seen.tools == [ADD_TOOL]


async def test_no_tool_call_is_read_from_text_when_no_tools_are_offered(serve, http):
    text = 'Wrap the JSON in a <tool_call> tag: {"name": "Alice", "parameters": {"age": 3}}. Done.'
    server = await serve(ScriptedLLM([text, text, text]))
    url = server.base_url + "/chat/completions"
    for extra in ({}, {"tools": [ADD_TOOL], "tool_choice": "none"}):
        r = await http.post(url, json={"messages": [{"role": "user", "content": "x"}], **extra})
        choice = r.json()["choices"][0]
        assert choice["message"].get("tool_calls") is None and choice["message"]["content"] == text, extra
        assert choice["finish_reason"] == "stop"
    # With tools offered the text is read for calls; a call that cannot be read is not sent as one.
    r = await http.post(url, json={"messages": [{"role": "user", "content": "x"}], "tools": [ADD_TOOL]})
    choice = r.json()["choices"][0]
    assert choice["message"].get("tool_calls") is None and choice["finish_reason"] == "stop"
    assert (
        choice["message"]["content"].startswith("Wrap the JSON in a")
        and "Alice" in choice["message"]["content"]
    )


async def test_a_prompt_over_the_context_window_is_a_400(serve, http):
    from agent.llm.base import ContextLengthError

    class Small(ScriptedLLM):
        async def stream(self, request):
            raise ContextLengthError("m: the context window is 8192 tokens, and the prompt takes 9031")
            yield  # an async generator

    server = await serve(Small([]))
    r = await http.post(
        server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert assert_error(r, 400, "context_length_exceeded").startswith("m: the context window is 8192")


async def test_an_unreadable_call_is_streamed_back_as_text(serve, http):
    server = await serve(ScriptedLLM(["Calling. <tool_call>add with a=1 and b=2</tool_call>"]))
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [ADD_TOOL], "stream": True}
    r = await http.post(server.base_url + "/chat/completions", json=body)
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any("tool_calls" in d for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "Calling.\nadd with a=1 and b=2"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_request_fields_reach_the_llm_request(serve, http):
    llm = ScriptedLLM(["a", "b", "c"])
    server = await serve(llm, effort="low")
    async with OpenAICompatLLM("m", base_url=server.base_url) as client:
        await complete(
            client,
            ask(
                "hi",
                effort="high",
                max_new_tokens=7,
                temperature=0.3,
                stop=["END"],
                tools=[ADD_TOOL],
                tool_choice="required",
            ),
        )
    first = llm.requests[0]
    assert (first.effort, first.max_new_tokens, first.temperature, first.stop) == ("high", 7, 0.3, ["END"])
    assert (first.tools, first.tool_choice) == ([ADD_TOOL], "required")

    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    r = await http.post(
        server.base_url + "/chat/completions",
        json={
            "model": "anything",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
                },
            ],
            "tools": [ADD_TOOL, other],
            "tool_choice": {"type": "function", "function": {"name": "other"}},
            "max_tokens": 100,
            "max_completion_tokens": 9,
            "stop": "STOP",
            "top_p": 0.9,
            "seed": 1,
        },
    )
    assert r.status_code == 200, r.text
    second = llm.requests[1]
    assert second.effort == "low", "the server's --effort applies when the request names none"
    assert [(m.role, m.content) for m in second.messages] == [
        ("system", "Be brief."),
        ("user", "part one\npart two"),
    ]
    assert (second.tools, second.tool_choice) == ([other], "required")
    assert (second.max_new_tokens, second.stop) == (9, ["STOP"])

    r = await http.post(
        server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert llm.requests[2].effort == "low" and llm.requests[2].tool_choice == "auto"


async def test_models_and_health(serve, http):
    server = await serve(ScriptedLLM([]), model_name="smol")
    r = await http.get(server.base_url + "/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["smol"] and r.json()["object"] == "list"
    assert "max_model_len" not in r.json()["data"][0]  # a scripted model has no window
    r = await http.get(server.base_url.removesuffix("/v1") + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b'{"model": "m"}', 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "reasoning_effort": "max"}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "max_tokens": 0}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "tool_choice": "always"}',
            400,
            "invalid_value",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "tool_choice": "required"}',
            400,
            "invalid_value",
        ),
        ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user"}], "n": 2}', 400, "unsupported"),
        # a true or a string is no token count (true was taken as 1, "10" as 10)
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "max_tokens": true}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "max_tokens": "10"}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user"}], "stream": "yes"}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "\\ud800 hi"}]}',
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
            400,
            "unsupported",
        ),
        ("GET", "/v1/completions", b"", 404, "not_found"),
        ("GET", "/", b"", 404, "not_found"),
        ("GET", "/v1/chat/completions", b"", 405, "method_not_allowed"),
        ("PUT", "/v1/models", b"{}", 405, "method_not_allowed"),
    ],
)
async def test_bad_requests_get_openai_error_json(serve, http, method, path, body, status, code):
    llm = ScriptedLLM([])
    server = await serve(llm)
    url = server.base_url.removesuffix("/v1") + path
    r = await http.request(method, url, content=body, headers={"Content-Type": "application/json"})
    assert_error(r, status, code)
    assert not llm.requests
    r = await http.get(server.base_url + "/models")  # the connection is still good
    assert r.status_code == 200


async def test_validation_errors_name_the_field(serve, http):
    server = await serve(ScriptedLLM([]))
    body = {"messages": [{"role": "user", "content": "x"}], "temperature": 5}
    r = await http.post(server.base_url + "/chat/completions", json=body)
    message = assert_error(r, 400, "invalid_request")
    assert "temperature" in message and r.json()["error"]["param"] == "temperature"


async def test_api_key_is_checked_as_a_bearer_token(serve, http):
    server = await serve(ScriptedLLM(["fine"]), api_key="s3cret")
    url = server.base_url + "/models"
    assert_error(await http.get(url), 401, "invalid_api_key")
    assert_error(await http.get(url, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert (await http.get(url, headers={"Authorization": "Bearer s3cret"})).status_code == 200
    assert (await http.get(server.base_url.removesuffix("/v1") + "/health")).status_code == 200

    async with OpenAICompatLLM("m", base_url=server.base_url, api_key="wrong") as client:
        with pytest.raises(LLMHTTPError, match="check --api-key") as info:
            await complete(client, ask("hi"))
    assert info.value.status_code == 401
    async with OpenAICompatLLM("m", base_url=server.base_url, api_key="s3cret") as client:
        assert (await complete(client, ask("hi"))).content == "fine"


async def test_oversized_body_is_refused_with_413(serve, http):
    llm = ScriptedLLM([])
    server = await serve(llm, max_body_bytes=4096)
    body = {"messages": [{"role": "user", "content": "x" * 200_000}]}
    message = assert_error(
        await http.post(server.base_url + "/chat/completions", json=body), 413, "body_too_large"
    )
    assert "4096" in message
    assert not llm.requests
    async with OpenAICompatLLM("m", base_url=server.base_url, max_retries=0) as client:
        with pytest.raises(LLMHTTPError) as info:
            await complete(client, ask("y" * 10_000))
    assert info.value.status_code == 413


async def test_model_failure_is_a_500_before_the_stream_and_an_error_event_after(serve):
    class FailsMidway:
        name = "fails-midway"

        async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
            yield ModelDelta(content="Half an ans")
            raise LLMError("the GPU caught fire")

    server = await serve(ScriptedLLM([]))  # an empty script fails on the first call
    async with OpenAICompatLLM("m", base_url=server.base_url, max_retries=0) as client:
        with pytest.raises(LLMHTTPError, match="ScriptedLLM: call 1") as info:
            await complete(client, ask("hi"))
        assert info.value.status_code == 500
    server = await serve(FailsMidway())
    async with OpenAICompatLLM("m", base_url=server.base_url, max_retries=0) as client:
        seen: list[str] = []
        with pytest.raises(LLMStreamError, match="the GPU caught fire"):
            async for item in client.stream(ask("hi")):
                seen.append(item.content)
    assert seen == ["Half an ans"]


async def raw_exchange(server: ChatServer, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), HANG_GUARD)
    writer.close()
    return received


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


@pytest.mark.parametrize(
    "data, status, code",
    [
        (b"HELLO\r\n\r\n", 400, "bad_request"),
        (b"GET /health SPDY/3\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "bad_request"),
        # digits str.isdigit() takes and int() does not, or too many for int(): the handler crashed
        (
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"),
            400,
            "bad_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            411,
            "length_required",
        ),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "head_too_large"),
    ],
)
async def test_malformed_http_gets_a_4xx_and_the_connection_closes(serve, data, status, code):
    server = await serve(ScriptedLLM([]))
    got_status, headers, body = split_response(await raw_exchange(server, data))
    assert got_status == status
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == code


async def test_a_head_with_bare_lf_line_ends_is_read(serve):
    # RFC 9112 lets a server take LF alone; it waited 30 s, then answered 408
    server = await serve(ScriptedLLM([]))
    status, _, body = split_response(
        await raw_exchange(server, b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n")
    )
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_openai_values_null_minimal_and_a_tiny_temperature_are_taken(serve, http):
    llm = ScriptedLLM(["one", "two"])
    server = await serve(llm)
    body = {"messages": [{"role": "user", "content": "hi"}], "n": None, "stream": None}
    r = await http.post(server.base_url + "/chat/completions", json=body)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "one"
    body = {**body, "reasoning_effort": "minimal", "temperature": 1e-38}  # 1e-38: a 500 (inf in sampling)
    r = await http.post(server.base_url + "/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert (llm.requests[-1].effort, llm.requests[-1].temperature) == ("low", 0.0)


async def test_a_reply_limit_under_one_is_the_requests_fault_not_the_models(serve, http):
    from agent.llm import TransformersLLM
    from agent.llm.base import InvalidRequestError

    llm = TransformersLLM()  # refused before it would load: it was a retryable "generation failed"
    for bad in ({"max_new_tokens": 0}, {"temperature": float("nan")}):
        with pytest.raises(InvalidRequestError) as error:
            await collect(llm, ask("hi", **bad))
        assert error.value.retryable is False and not llm.loaded

    class Refusing:
        name = "refusing"

        async def stream(self, request):
            raise InvalidRequestError("temperature must be a number of 0 or more, not nan")
            yield  # an async generator

    server = await serve(Refusing())
    r = await http.post(
        server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert_error(r, 400, "invalid_value")  # was a 500, which clients retry


async def test_keep_alive_serves_several_requests_on_one_connection(serve):
    server = await serve(ScriptedLLM(["one", "two"]))
    request = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    post = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(request), request)
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    answers = []
    for last in (False, True):
        writer.write(post.replace(b"Host: x", b"Host: x\r\nConnection: close") if last else post)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
        status, headers, _ = split_response(head)
        body = await reader.readexactly(int(headers["content-length"]))
        answers.append((status, headers["connection"], json.loads(body)["choices"][0]["message"]["content"]))
    assert answers == [(200, "keep-alive", "one"), (200, "close", "two")]
    assert await asyncio.wait_for(reader.read(), HANG_GUARD) == b""  # closed as asked
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body(serve):
    server = await serve(ScriptedLLM(["continued"]))
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    status, _, answer = split_response(await asyncio.wait_for(reader.read(), HANG_GUARD))
    writer.close()
    assert status == 200 and json.loads(answer)["choices"][0]["message"]["content"] == "continued"


# --------------------------------------------------------------------------- concurrency and hang-ups


class EndlessLLM:
    """Streams numbers until its stream is closed, and records that it was."""

    name = "endless"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.closed = asyncio.Event()

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        self.started.set()
        try:
            for n in itertools.count():
                yield ModelDelta(content=f"{n} ")
                await asyncio.sleep(0.005)
        finally:
            self.closed.set()


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_hangs_up_stops_its_generation(serve, http, stream):
    llm = EndlessLLM()
    server = await serve(llm)
    body = {"messages": [{"role": "user", "content": "count forever"}], "stream": stream}
    if stream:
        async with http.stream("POST", server.base_url + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            while "content" not in (await anext(lines)):
                pass
        # leaving the block closes the response: httpx drops the connection mid-stream
    else:
        task = asyncio.create_task(http.post(server.base_url + "/chat/completions", json=body))
        await asyncio.wait_for(llm.started.wait(), HANG_GUARD)
        task.cancel()
    await asyncio.wait_for(llm.closed.wait(), HANG_GUARD)  # the server closed the model's stream
    assert (await http.get(server.base_url + "/models")).status_code == 200


class SlowLLM:
    """Thinks for `delay` seconds, then answers in two deltas."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        await asyncio.sleep(self.delay)
        yield ModelDelta(content="forty")
        yield ModelDelta(content="-two")
        yield ModelResponse(content="forty-two", model=self.name)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(serve, stream):
    # nc -N, or a script that calls shutdown(SHUT_WR): the input ends, the client still reads
    server = await serve(SlowLLM(delay=0.8))  # long enough for several probes
    body = json.dumps({"messages": [{"role": "user", "content": "6 x 7?"}], "stream": stream}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head.encode() + body)
    writer.write_eof()
    received = await asyncio.wait_for(reader.read(), HANG_GUARD)
    writer.close()
    interim = received.count(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert interim >= 2  # the probes, which clients read past
    status, headers, answer = split_response(received.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""))
    assert status == 200
    if stream:
        assert b"forty" in answer and b"-two" in answer and b"[DONE]" in answer
    else:
        assert json.loads(answer)["choices"][0]["message"]["content"] == "forty-two"


class RendezvousLLM:
    """Answers only once `expected` requests are in its stream at the same time."""

    name = "rendezvous"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.active = 0
        self.all_in = asyncio.Event()

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        self.active += 1
        if self.active == self.expected:
            self.all_in.set()
        await self.all_in.wait()
        text = request.messages[-1].content.upper()
        yield ModelDelta(content=text)
        yield ModelResponse(content=text, model=self.name)


async def test_concurrent_requests_are_served_concurrently(serve):
    server = await serve(RendezvousLLM(expected=2))
    async with (
        OpenAICompatLLM("m", base_url=server.base_url) as one,
        OpenAICompatLLM("m", base_url=server.base_url, stream=False) as two,
    ):
        answers = await asyncio.wait_for(
            asyncio.gather(complete(one, ask("first")), complete(two, ask("second"))), HANG_GUARD
        )
    assert [a.content for a in answers] == ["FIRST", "SECOND"]


async def test_close_lets_a_request_in_flight_finish(serve):
    llm = ScriptedLLM([{"content": "finished anyway", "delay": 0.3}])
    server = await serve(llm)
    async with OpenAICompatLLM("m", base_url=server.base_url, max_retries=0) as client:
        answer = asyncio.create_task(complete(client, ask("slow")))
        while not llm.requests:
            await asyncio.sleep(0.01)
        await server.close(grace=HANG_GUARD)
        assert (await answer).content == "finished anyway"
        with pytest.raises(LLMError, match="unreachable"):
            await complete(client, ask("again"))


# --------------------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> str | None:
    """AGENT_CACHE_DIR for the default model: None when the user cache holds it."""
    from agent.llm.default_model import default_model_dir, is_converted

    return None if is_converted(default_model_dir()) else str(tmp_path_factory.mktemp("agent-cache"))


@pytest.fixture(scope="module")
def real_llm(model_cache):
    from agent.llm.transformers import TransformersLLM

    with pytest.MonkeyPatch.context() as mp:
        if model_cache:
            mp.setenv("AGENT_CACHE_DIR", model_cache)
        return TransformersLLM(max_new_tokens=16).load()


async def test_real_model_answers_openai_compat_over_loopback(serve, real_llm):
    server = await serve(real_llm)
    async with OpenAICompatLLM("smollm2", base_url=server.base_url) as client:
        deltas, response = await collect(client, ask("What is the capital of France?", max_new_tokens=8))
    assert response.content.strip() and "<|im_end|>" not in response.content
    assert "".join(d.content for d in deltas) == response.content
    assert len(deltas) > 1, "the answer streams in pieces"
    assert response.finish_reason in {"stop", "length"}
    assert response.usage.prompt_tokens > 0 and 0 < response.usage.completion_tokens <= 8


async def test_clients_learn_the_context_window_of_the_served_model(serve, http, real_llm):
    from agent import Agent
    from memory.context import model_context_window

    server = await serve(real_llm)
    r = await http.get(server.base_url + "/models")
    assert r.json()["data"][0]["max_model_len"] == model_context_window(real_llm) == 8192
    async with OpenAICompatLLM("default", base_url=server.base_url) as client:
        # Learning blocks, so off this loop, which serves the answer.
        budget = await asyncio.to_thread(Agent(client, guards=[]).context_budget)
    assert budget is not None and budget.window == 8192


# --------------------------------------------------------------------------- the command


def start_serve(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--port", "0", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(process: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of `process`, waiting at most `timeout` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        process.kill()
        pytest.fail(f"agent serve printed no URL within {timeout:g} s: {process.communicate()[1][-2000:]}")


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"agent serve did not stop: {process.communicate()[1][-2000:]}")
    return process.returncode, err


def test_agent_serve_with_the_real_model_answers_and_stops_on_ctrl_c(model_cache, real_llm):
    process = start_serve(env={"AGENT_CACHE_DIR": model_cache} if model_cache else None)
    url = first_line(process, timeout=180)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and not url.endswith(":0/v1")
    try:
        body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "stream": True}
        r = httpx.post(url + "/chat/completions", json=body, timeout=HANG_GUARD)
        events = sse_events(r.text)
        assert r.status_code == 200 and events[-1] == "[DONE]"
        assert "".join(
            e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]
        ).strip()
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "Traceback" not in err and "stopped" in err


def test_agent_run_against_agent_serve(tmp_path):
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps(call("final_answer", answer="Served: 391.")) + "\n")
    process = start_serve("--model", f"scripted:{script}", env={"AGENT_SERVE_API_KEY": "k3y"}, cwd=tmp_path)
    url = first_line(process, timeout=60)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "agent", "run", "What is 17 * 23?", "--base-url", url, "--api-key", "k3y"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        code, err = stop(process, signal.SIGTERM)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Served: 391."
    assert code == 0 and "Traceback" not in err
    assert "POST /v1/chat/completions 200" in err


@pytest.mark.parametrize("case", ["port in use", "port out of range", "foreign address"])
def test_agent_serve_user_errors_are_one_clear_line(tmp_path, case):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args, expected = {
            "port in use": (["--port", str(port)], f"port {port} on 127.0.0.1 is already in use"),
            "port out of range": (["--port", "70000"], "--port must be between 0 and 65535"),
            "foreign address": (
                ["--host", "192.0.2.1", "--port", "0"],
                "192.0.2.1 is not an address of this machine",
            ),
        }[case]
        out = subprocess.run(
            [sys.executable, "-m", "agent", "serve", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().startswith("error:") and expected in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


async def test_a_large_body_is_read_off_the_event_loop_and_answered_the_same(serve, http, monkeypatch):
    from agent import serve as serve_module

    llm = ScriptedLLM(["big one"])
    server = await serve(llm)
    threads = []
    read_chat = serve_module.ChatServer._read_chat

    def recording(self, request):
        threads.append(threading.current_thread() is threading.main_thread())
        return read_chat(self, request)

    monkeypatch.setattr(serve_module.ChatServer, "_read_chat", recording)
    text = "word " * (serve_module.OFF_LOOP_BYTES // 4)  # over the bound: read on a worker thread
    r = await http.post(
        server.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": text}]}
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "big one"
    assert llm.requests[0].messages[-1].content == text
    assert threads == [False]  # on a worker thread, not the event loop's
    bad = {"messages": [{"role": "user", "content": text}], "max_tokens": 0}  # its errors as before
    assert_error(await http.post(server.base_url + "/chat/completions", json=bad), 400, "invalid_request")


async def test_a_client_that_stops_reading_a_stream_is_dropped_and_its_generation_stopped(serve, http):
    import socket

    closed, sent = asyncio.Event(), []

    class Endless:
        """A long reply, 64 kB a piece (640 MB in all), until the stream is closed."""

        name = "endless"

        async def stream(self, request):
            try:
                for _ in range(10_000):
                    yield ModelDelta(content="x" * 65536)
                    sent.append(1)
                    await asyncio.sleep(0)
                yield ModelResponse(content="never")
            finally:
                closed.set()

    server = await serve(Endless(), write_timeout=0.5)
    body = json.dumps({"messages": [{"role": "user", "content": "go"}], "stream": True}).encode()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", server.port))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    client.sendall(head + body)  # and never reads: it generated to max_tokens for nobody
    try:
        await asyncio.wait_for(closed.wait(), HANG_GUARD)
        assert len(sent) < 1_000  # closed early, not run to its end (nor hung until HANG_GUARD)
        r = await http.get(server.base_url.removesuffix("/v1") + "/health")  # the server goes on
        assert r.status_code == 200
    finally:
        client.close()
