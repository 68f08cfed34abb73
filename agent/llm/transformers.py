"""An in-process model run with Hugging Face transformers.

`TransformersLLM` loads a model directory, a cached hub id, a `.gguf` file,
or (by default) the embedded SmolLM2-135M-Instruct, and streams its output
as `ModelDelta` events. Concurrent requests share the model through the
batching scheduler in `agent.llm.scheduler`. torch and transformers are
imported only inside the functions here, so importing `agent.llm` stays cheap.

Prompt rendering lives in `TemplateChatFormat`: it uses the tokenizer's chat
template, with native tool support when the template has it and a Hermes
style tool prompt (`<tools>`, `<tool_call>`, `<tool_response>`) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import ModelDelta, ModelResponse
from ..pysyntax import is_ast_race
from ..types import Effort, Message, Usage
from .base import ContextLengthError, LLMError, LLMRequest, ModelNotFoundError, check_request, joined_turns
from .parse import (
    CALL_OPEN,
    THINK_OPEN,
    format_for_tokenizer,
    parse_output,
    parse_text_only,
    stream_splitter,
)
from .thinking import effort_template_options, harmony_reasoning, is_harmony_template

if TYPE_CHECKING:
    from .scheduler import BatchScheduler

#: Tokens that end a turn in common chat formats; the model's own EOS ids are added.
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|return|>",
    "</s>",
)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
MIN_TEMPERATURE = 1e-5  # a temperature below it samples as greedy decoding does (logits / t overflow)


def usable_cores() -> int:
    """CPU cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def prepare_openmp() -> None:
    """Make OpenMP threads sleep, not spin, while they wait for work.

    With the default spin-waiting, torch's intra-op threads compete with any
    other busy thread or process for the cores; on a small machine that made
    generation about ten times slower. The setting is read when torch loads,
    so it only takes effect if torch has not been imported yet, and an
    explicit OMP_WAIT_POLICY in the environment wins.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op thread count for the calling thread.

    OpenMP keeps the thread count per OS thread, so a generation worker thread
    calls this again before generating rather than relying on the main thread.
    """
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- chat format

HERMES_TOOLS_INSTRUCTION = (
    "# Tools\n\n"
    "You may call one or more tools to help with the user's request. "
    "The tools are described by JSON schemas inside <tools></tools>:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "To call a tool, write a JSON object with the tool name and its arguments inside "
    "<tool_call></tool_call> tags, one block per call, for example:\n"
    '<tool_call>{{"name": "tool_name", "arguments": {{"arg": "value"}}}}</tool_call>\n'
    "Tool results come back inside <tool_response></tool_response> tags. "
    "When you can answer, reply in plain text without a tool call."
)
HERMES_TOOL_REQUIRED = "\nYou must call at least one tool in this reply."


def hermes_tools_prompt(tools: Sequence[dict[str, Any]], *, required: bool = False) -> str:
    """The Hermes-style tool instructions placed in the system prompt."""
    schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    text = HERMES_TOOLS_INSTRUCTION.format(tools=schemas)
    return text + HERMES_TOOL_REQUIRED if required else text


def hermes_tool_call(name: str, arguments: dict[str, Any] | None) -> str:
    return (
        "<tool_call>"
        + json.dumps({"name": name, "arguments": arguments or {}}, ensure_ascii=False)
        + "</tool_call>"
    )


def hermes_tool_response(name: str | None, content: str) -> str:
    body = json.dumps({"name": name or "", "content": content}, ensure_ascii=False)
    return f"<tool_response>\n{body}\n</tool_response>"


class TemplateChatFormat:
    """Renders an `LLMRequest` into prompt text with a tokenizer's chat template.

    When the template mentions `tools`, messages and tool schemas are handed
    to it in the Hugging Face format. Otherwise tools are described in the
    system prompt in Hermes style, past tool calls are written as
    `<tool_call>` text and tool results become user messages holding
    `<tool_response>` blocks (unless the template knows a `tool` role).
    """

    def __init__(self, tokenizer: Any, template_kwargs: dict[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.template_kwargs = dict(template_kwargs or {})
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise LLMError("the tokenizer has no chat template, so chat messages cannot be formatted")
        self.template_text = template if isinstance(template, str) else "\n".join(map(str, template.values()))
        self.native_tools = "tools" in self.template_text
        self.native_tool_role = self.native_tools or any(
            q in self.template_text for q in ("'tool'", '"tool"')
        )
        self.uses_enable_thinking = "enable_thinking" in self.template_text
        self.uses_reasoning_effort = "reasoning_effort" in self.template_text
        self.harmony = is_harmony_template(self.template_text)

    # -- the pieces, each overridable

    def effort_options(self, effort: Effort) -> dict[str, Any]:
        """Template kwargs for the effort: `enable_thinking` (False for low), `reasoning_effort`."""
        return effort_template_options(self.template_text, effort)

    def template_messages(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] = (),
        *,
        tools_required: bool = False,
    ) -> list[dict[str, Any]]:
        if self.native_tools:
            return [self._native_message(m) for m in messages]
        return self._hermes_messages(messages, tools, tools_required)

    def render(self, request: LLMRequest) -> str:
        tools = request.tools if request.tool_choice != "none" else []
        required = request.tool_choice == "required"
        messages = self.template_messages(joined_turns(request.messages), tools, tools_required=required)
        if self.harmony and not self.uses_reasoning_effort:  # harmony reads `Reasoning: ...` from the system
            messages = harmony_reasoning(messages, request.effort)
        kwargs: dict[str, Any] = self.effort_options(request.effort)
        if self.native_tools and tools:
            kwargs["tools"] = list(tools)
        kwargs.update(self.template_kwargs)
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **kwargs
            )
        except Exception as e:  # jinja errors: the template rejects these messages
            raise LLMError(f"the chat template could not render the messages: {e}") from e

    # -- helpers

    @staticmethod
    def _native_message(m: Message) -> dict[str, Any]:
        out: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or {}}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            if m.tool_call_id:
                out["tool_call_id"] = m.tool_call_id
            if m.name:
                out["name"] = m.name
        return out

    def _hermes_messages(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], required: bool
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        call_names: dict[str, str] = {}
        pending_results: list[str] = []

        def flush_results() -> None:
            if pending_results:
                out.append({"role": "user", "content": "\n".join(pending_results)})
                pending_results.clear()

        for m in messages:
            if m.role == "tool" and not self.native_tool_role:
                name = m.name or call_names.get(m.tool_call_id or "")
                pending_results.append(hermes_tool_response(name, m.content))
                continue
            flush_results()
            if m.role == "assistant" and m.tool_calls:
                parts = [m.content.strip()] if m.content.strip() else []
                for c in m.tool_calls:
                    call_names[c.id] = c.name
                    parts.append(hermes_tool_call(c.name, c.arguments))
                out.append({"role": "assistant", "content": "\n".join(parts)})
            elif m.role == "tool":
                out.append({"role": "tool", "content": m.content})
            else:
                out.append({"role": m.role, "content": m.content})
        flush_results()

        if tools:
            prompt = hermes_tools_prompt(tools, required=required)
            if out and out[0]["role"] == "system":
                base = out[0]["content"].rstrip()
                out[0] = {"role": "system", "content": f"{base}\n\n{prompt}" if base else prompt}
            else:
                out.insert(0, {"role": "system", "content": prompt})
        return out


# --------------------------------------------------------------------------- streaming


def _partial_tag_len(text: str, tags: Iterable[str]) -> int:
    """Length of the longest end of `text` that begins one of `tags`."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


class _RequestStreamer:
    """One request's streamer for `generate` (runs on the worker thread).

    It decodes tokens incrementally, drops end-of-turn tokens, cuts the text
    at the first stop string, and hands text pieces to `emit`.
    """

    def __init__(
        self, tokenizer: Any, end_ids: set[int], stop: Sequence[str], emit: Any, halt: threading.Event
    ) -> None:
        self.tokenizer = tokenizer
        self.end_ids = end_ids
        self.stop = [s for s in stop if s]
        self.emit = emit
        self.halt = halt
        self.prompt_seen = False
        self.prompt_tokens = 0
        self.generated = 0
        self.last_token: int | None = None
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""
        self.sent = 0
        self.stopped_by_string = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def put(self, value: Any) -> None:
        """`generate`'s streamer call: first the prompt, then new tokens."""
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.push(int(token))

    def push(self, token: int) -> None:
        """Take one generated token (the scheduler calls this directly)."""
        self.generated += 1
        self.last_token = token
        if self.stopped_by_string or token in self.end_ids:
            return
        self.ids.append(token)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._add_text(full[len(prefix) :])
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)

    def end(self) -> None:
        if not self.stopped_by_string and self.read_offset < len(self.ids):
            prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
            full = self._decode(self.ids[self.prefix_offset :])
            # Tokens held back because they end inside a character: a reply cut at its limit
            # there leaves that character's first bytes, which decode to U+FFFD. Dropped.
            self._add_text(full[len(prefix) :].rstrip("\ufffd"))
            self.read_offset = len(self.ids)
        if not self.stopped_by_string and self.sent < len(self.text):
            self.emit(self.text[self.sent :])
            self.sent = len(self.text)

    def _add_text(self, piece: str) -> None:
        if self.stopped_by_string or not piece:
            return
        start = len(self.text)
        self.text += piece
        if self.stop:
            cuts = [i for s in self.stop if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
            if cuts:
                self.text = self.text[: min(cuts)]
                self.stopped_by_string = True
                self.halt.set()
                if self.sent < len(self.text):
                    self.emit(self.text[self.sent :])
                self.sent = len(self.text)
                return
        keep = _partial_tag_len(self.text[self.sent :], self.stop) if self.stop else 0
        upto = len(self.text) - keep
        if upto > self.sent:
            self.emit(self.text[self.sent : upto])
            self.sent = upto


@functools.cache
def _halt_criteria_class() -> type:
    import torch
    from transformers import StoppingCriteria

    class HaltCriteria(StoppingCriteria):
        """Stops generation once an event is set (stop string seen, request cancelled)."""

        def __init__(self, event: threading.Event) -> None:
            self.event = event

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return HaltCriteria


# --------------------------------------------------------------------------- the backend


# Characters of a prompt above which it is rendered and tokenized on a thread, not the loop.
_OFF_LOOP_CHARS = 100_000


class TransformersLLM:
    """A local model run in-process with transformers.

    `model` is a model directory, a hub id already in the local Hugging Face
    cache, a `.gguf` file, or None for the embedded SmolLM2-135M-Instruct.
    The model loads on the first request or on `load()`.

    A request with `tool_choice="required"` is held to the tools' schemas by
    a grammar (`agent.llm.constrain`, needs llguidance) unless
    `constrain_required_calls` is False; thinking is limited by the effort's
    token budget (`agent.llm.thinking`).

    Concurrent requests share the model through a `BatchScheduler`
    (`agent.llm.scheduler`): they are decoded together in shared forward
    passes, joining and leaving the batch between steps, and a prompt that
    extends an earlier prompt and output reuses that KV cache instead of
    prefilling it again. `max_batch_size` and `max_batch_tokens` bound the
    batch, `prefix_cache_entries` and `prefix_cache_bytes` the kept caches;
    `scheduler.stats` counts steps, batch sizes and reused prompt tokens. A
    model whose cache cannot be batched, or `batching=False`, generates one
    request at a time with `generate` (`serial_reason` says why).
    """

    #: hold `tool_choice="required"` turns to the tool schemas (when llguidance is installed)
    constrain_required_calls = True

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: Any = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        threads: int | None = None,
        template_kwargs: dict[str, Any] | None = None,
        batching: bool = True,
        max_batch_size: int = 64,
        max_batch_tokens: int | None = 65536,
        prefix_cache_entries: int = 32,
        prefix_cache_bytes: int = 1 << 30,
    ) -> None:
        self.model_ref = model
        self.device = device
        self.dtype = dtype
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number of at least 1, not {max_new_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
            raise ValueError(f"temperature must be a number of 0 or more, not {temperature!r}")
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.threads = max(1, threads) if threads else usable_cores()
        self.template_kwargs = dict(template_kwargs or {})
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_cache_entries = prefix_cache_entries
        self.prefix_cache_bytes = prefix_cache_bytes
        self.name = "transformers:" + self._short_name(model)
        self.model: Any = None
        self.tokenizer: Any = None
        self.chat_format: TemplateChatFormat | None = None
        self.end_ids: set[int] = set()
        self.model_path: Path | str | None = None
        #: the batching scheduler, None while not loaded or when generation is serial
        self.scheduler: BatchScheduler | None = None
        #: why generation is serial (None when it is batched)
        self.serial_reason: str | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    @staticmethod
    def _short_name(model: str | Path | None) -> str:
        if model is None:
            return DEFAULT_MODEL_NAME
        text = str(model)
        path = Path(text).expanduser()
        if path.exists() or text.endswith(".gguf"):
            return path.name
        return text

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def close(self) -> None:
        """Stop the batch scheduler's worker; requests still running end with an error.
        The model stays loaded, and a later request starts a new scheduler."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.close()
            if self.model is not None:
                self.scheduler = self._make_scheduler(self.model)

    # -- loading

    def load(self) -> TransformersLLM:
        """Load the model and tokenizer now (thread-safe, once)."""
        if self.model is not None:
            return self
        with self._load_lock:
            if self.model is None:
                self._load()
        return self

    def _load(self) -> None:
        prepare_openmp()
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        set_torch_threads(self.threads)
        source, gguf_file = self._resolve_source()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self._torch_dtype(device)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        model_kwargs: dict[str, Any] = {"dtype": dtype}
        if device == "cuda":
            model_kwargs["device_map"] = "auto"
        elif device != "cpu":
            model_kwargs["device_map"] = device

        from .default_model import gguf_loading_speedups

        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            with gguf_loading_speedups() if gguf_file else contextlib.nullcontext():
                tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **model_kwargs)
        except Exception as e:  # a missing, corrupt or unsupported model: one clear error, not a traceback
            if isinstance(source, str) and not Path(source).exists():
                raise ModelNotFoundError(
                    f"model {source!r} is not a local path and is not in the Hugging Face cache "
                    f"(models load offline); download it first, e.g. `hf download {source}`"
                ) from e
            # Name the file the user gave (not its folder), and the reason's first line (and the
            # next when the first only announces it: "... from one of:").
            shown = Path(source) / gguf_file if gguf_file else source
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
            reason = " ".join(lines[:2] if lines and lines[0].endswith(":") else lines[:1])
            if not isinstance(e, (OSError, ValueError)):
                reason = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
            raise ModelNotFoundError(f"could not load model {str(shown)!r}: {reason or type(e).__name__}") from e
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        model.eval()
        self.tokenizer = tokenizer
        self.chat_format = TemplateChatFormat(tokenizer, self.template_kwargs)
        self.end_ids = self._end_token_ids(model, tokenizer)
        self.model_path = source
        self.scheduler = self._make_scheduler(model)
        self.model = model

    def _make_scheduler(self, model: Any) -> BatchScheduler | None:
        from .scheduler import BatchScheduler

        self.serial_reason = "batching=False" if not self.batching else BatchScheduler.unsupported(model)
        if self.serial_reason:
            return None
        return BatchScheduler(
            model,
            threads=self.threads,
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
            prefix_entries=self.prefix_cache_entries,
            prefix_bytes=self.prefix_cache_bytes,
            pad_token_id=self._pad_token_id(),
        )

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = min(self.end_ids) if self.end_ids else 0
        return int(pad)

    def _resolve_source(self) -> tuple[Path | str, str | None]:
        """(directory or hub id, gguf file name or None)."""
        if self.model_ref is None:
            from .default_model import ensure_default_model

            return ensure_default_model(), None
        path = Path(self.model_ref).expanduser()
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelNotFoundError(f"{str(path)!r} is a file but not a .gguf model")
            return path.parent, path.name
        if path.is_dir():
            if not (path / "config.json").exists():
                ggufs = sorted(path.glob("*.gguf"))
                if len(ggufs) == 1:
                    return path, ggufs[0].name
                if ggufs:
                    raise ModelNotFoundError(
                        f"{str(path)!r} holds {len(ggufs)} .gguf files; give the one to load, e.g. {str(ggufs[0])!r}"
                    )
                raise ModelNotFoundError(
                    f"{str(path)!r} holds no model (no config.json or .gguf file): give a model directory, "
                    "a .gguf file or a Hugging Face id"
                )
            return path, None
        if str(self.model_ref).endswith(".gguf") or path.is_absolute() or str(self.model_ref).startswith("."):
            raise ModelNotFoundError(f"model file or directory {str(path)!r} does not exist")
        return str(self.model_ref), None

    def _torch_dtype(self, device: str) -> Any:
        import torch

        if self.dtype is None:
            return torch.bfloat16 if device.startswith("cuda") else torch.float32
        if isinstance(self.dtype, str) and self.dtype != "auto":
            value = getattr(torch, self.dtype, None)
            if not isinstance(value, torch.dtype):
                raise LLMError(f"unknown dtype {self.dtype!r}")
            return value
        return self.dtype

    @staticmethod
    def _end_token_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(model, "generation_config", None), model.config, tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        vocab = tokenizer.get_vocab()
        for token in END_OF_TURN_TOKENS:
            if token in vocab:
                ids.add(vocab[token])
        return ids

    # -- prompts

    def render_prompt(self, request: LLMRequest) -> str:
        """The exact prompt text the model sees for `request` (loads the model)."""
        self.load()
        assert self.chat_format is not None
        return self.chat_format.render(request)

    # -- generation

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        check_request(request)  # before a model loads: a bad limit is the caller's, not retried
        if not self.loaded:
            await asyncio.to_thread(self.load)
        if sum(len(m.content) for m in request.messages) > _OFF_LOOP_CHARS:
            # A long prompt is rendered and measured on a thread: other requests stream meanwhile.
            prompt, max_new = await asyncio.to_thread(self._prompt_and_limit, request)
        else:
            prompt, max_new = self._prompt_and_limit(request)
        temperature = self.temperature if request.temperature is None else request.temperature
        if temperature < MIN_TEMPERATURE:  # logits / 1e-50 overflow: so low a temperature is greedy
            temperature = 0.0

        loop = asyncio.get_running_loop()
        opened_thinking = prompt.rstrip().endswith(THINK_OPEN)
        output_format = format_for_tokenizer(self.tokenizer)  # None: detect from the text
        # No tools offered (or tool_choice "none"): text that looks like a call is the model's text.
        calls = request.may_call
        for attempt in (1, 2):
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

            def send(kind: str, payload: Any = None, queue: asyncio.Queue[tuple[str, Any]] = queue) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
                except RuntimeError:  # the loop is gone; nobody is listening
                    pass

            halt = threading.Event()
            streamer = _RequestStreamer(
                self.tokenizer, self.end_ids, request.stop, functools.partial(send, "text"), halt
            )
            # built on the worker: compiling a tool grammar can take a second
            processors = functools.partial(self._logits_processors, request, prompt, max_new)
            worker = threading.Thread(
                target=self._generate if self.scheduler is None else self._schedule,
                args=(prompt, max_new, temperature, streamer, halt, send, processors),
                name="transformers-generate",
            )
            worker.start()
            splitter = stream_splitter(output_format, in_thinking=opened_thinking, calls=calls)
            try:
                while True:
                    kind, payload = await queue.get()
                    if kind == "text":
                        for delta in splitter.feed(payload):
                            yield delta
                    elif kind == "error":
                        if attempt == 1 and not streamer.text and is_ast_race(payload):
                            break  # nothing was generated: the request starts again
                        raise LLMError(f"{self.name}: generation failed: {payload}") from payload
                    else:
                        break
                if kind == "error":
                    continue
                for delta in splitter.finish():
                    yield delta
            finally:
                halt.set()  # stops the worker early if the consumer went away
            break

        text = streamer.text
        if opened_thinking:  # the template opened the think block in the prompt
            text = THINK_OPEN + text
        parsed = parse_output(text, output_format) if calls else parse_text_only(text, output_format)
        completion_tokens = streamer.generated
        hit_length = (
            completion_tokens >= max_new
            and not streamer.stopped_by_string
            and streamer.last_token not in self.end_ids
        )
        if hit_length:  # cut off, calls or not: a call cut short is unreadable, and says so
            finish_reason = "length"
        elif parsed.tool_calls:
            finish_reason = "tool_calls"
        else:
            finish_reason = "stop"
        thinking_tokens = (
            len(self.tokenizer.encode(parsed.thinking, add_special_tokens=False)) if parsed.thinking else 0
        )
        yield ModelResponse(
            purpose=request.purpose,
            content=parsed.content,
            thinking=parsed.thinking,
            tool_calls=parsed.tool_calls,
            usage=Usage(
                prompt_tokens=streamer.prompt_tokens,
                completion_tokens=completion_tokens,
                thinking_tokens=thinking_tokens,
            ),
            effort=request.effort,
            finish_reason=finish_reason,
            model=self.name,
        )

    def _prompt_and_limit(self, request: LLMRequest) -> tuple[str, int]:
        prompt = self.render_prompt(request)
        return prompt, self._fit_reply(prompt, request.max_new_tokens)

    def _fit_reply(self, prompt: str, asked: int | None) -> int:
        """The reply's token limit within the context window: the default shrinks to
        fit; a prompt that leaves no room, or a limit asked for that does not fit,
        raises `ContextLengthError` (a model would go on past its window and write junk)."""
        from memory.context import model_context_window

        default = self.max_new_tokens
        window = model_context_window(self)
        if window is None:
            return asked or default
        need = asked if asked is not None else default
        # A token covers at least one byte (a few may be added around the text): a prompt whose
        # bytes fit with room to spare needs no second tokenization (the worker tokenizes it anyway).
        if len(prompt.encode("utf-8", "surrogatepass")) + 8 + need <= window:
            return need
        used = len(self.tokenizer.encode(prompt, add_special_tokens=False))
        room = window - used
        if room <= 0 or (asked is not None and asked > room):
            wanted = f" + {asked} for the reply" if asked is not None else ""
            raise ContextLengthError(
                f"{self.name}: the context window is {window} tokens, and the prompt takes {used}{wanted}; "
                "shorten the messages or ask for fewer tokens"
            )
        return asked if asked is not None else min(default, room)

    def _logits_processors(self, request: LLMRequest, prompt: str, max_new: int) -> list[Any]:
        """Logits processors for one request: the tool-call grammar when a call is
        required (agent.llm.constrain), then the thinking budget (agent.llm.thinking).
        A request that offers tools warms their grammar in the background."""
        from . import constrain, thinking

        assert self.chat_format is not None
        template = self.chat_format.template_text
        processors: list[Any] = []
        hermes_calls = not self.chat_format.harmony and (
            not self.chat_format.native_tools or CALL_OPEN in template
        )
        if (
            self.constrain_required_calls
            and request.may_call
            and hermes_calls
            and constrain.available()
        ):
            options = constrain.grammar_options(template, prompt, request.effort)
            grammars = constrain.tool_grammars(self.tokenizer, self.end_ids)
            if request.tool_choice == "required":
                try:
                    processors.append(grammars.processor(request.tools, max_new_tokens=max_new, **options))
                except constrain.ConstraintUnavailable as e:
                    constrain.logger.warning("tool call left unconstrained: %s", e)
            else:
                grammars.warm_in_background(request.tools, **options)
        budget = thinking.thinking_budget_processor(
            self.tokenizer,
            template,
            prompt,
            effort=request.effort,
            budget=request.thinking_budget,
            max_new_tokens=max_new,
            end_ids=self.end_ids,
        )
        if budget is not None:
            processors.append(budget)
        return processors

    def _encode(self, prompt: str) -> Any:
        # The template already wrote the special tokens (BOS, turn markers).
        return self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def _generation_end_ids(self, processors: Sequence[Any]) -> set[int]:
        end_ids = set(self.end_ids)
        for processor in processors:  # e.g. harmony's <|end|> ends a message, not the turn
            end_ids -= set(getattr(processor, "continue_ids", ()))
        return end_ids

    def _schedule(
        self,
        prompt: str,
        max_new: int,
        temperature: float,
        streamer: _RequestStreamer,
        halt: threading.Event,
        send: Any,
        make_processors: Callable[[], list[Any]],
    ) -> None:
        """Short-lived worker: prepare the request and hand it to the scheduler."""
        from .scheduler import GenerationJob

        def done(error: BaseException | None) -> None:
            if error is None:
                streamer.end()
            else:
                send("error", error)
            send("done")

        try:
            assert self.scheduler is not None
            processors = make_processors()
            ids = self._encode(prompt)["input_ids"][0].tolist()
            streamer.prompt_tokens = len(ids)
            job = GenerationJob(
                ids,
                max_new_tokens=max_new,
                temperature=temperature,
                end_ids=self._generation_end_ids(processors),
                processors=processors,
                on_token=streamer.push,
                on_done=done,
                halt=halt,
            )
            self.scheduler.submit(job)
        except Exception as e:
            send("error", e)
            send("done")

    def _generate(
        self,
        prompt: str,
        max_new: int,
        temperature: float,
        streamer: _RequestStreamer,
        halt: threading.Event,
        send: Any,
        make_processors: Callable[[], list[Any]] | None = None,
    ) -> None:
        """Worker thread: one `generate` call at a time per model (models that cannot be batched)."""
        try:
            import torch
            from transformers import LogitsProcessorList, StoppingCriteriaList

            processors = make_processors() if make_processors is not None else []

            with self._generate_lock:
                if halt.is_set():
                    return
                set_torch_threads(self.threads)
                encoded = self._encode(prompt)
                streamer.prompt_tokens = int(encoded["input_ids"].shape[1])
                inputs = {k: v.to(self.model.device) for k, v in encoded.items()}
                sampling: dict[str, Any] = (
                    {"do_sample": True, "temperature": temperature}
                    if temperature > 0
                    else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
                )
                end_ids = self._generation_end_ids(processors)
                extra: dict[str, Any] = (
                    {"logits_processor": LogitsProcessorList(processors)} if processors else {}
                )
                with torch.inference_mode():
                    self.model.generate(
                        **inputs,
                        max_new_tokens=max_new,
                        eos_token_id=sorted(end_ids),
                        pad_token_id=self._pad_token_id(),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_halt_criteria_class()(halt)]),
                        **sampling,
                        **extra,
                    )
        except Exception as e:
            send("error", e)
        finally:
            send("done")
