"""Batched generation: one decode loop shared by every request to a loaded model.

`BatchScheduler` runs its own decode loop on one worker thread. A request
(`GenerationJob`: prompt token ids, limits, logits processors, callbacks)
that arrives while others decode joins the running batch at the next step
boundary: its prompt is prefilled (cold prompts together, left padded), its
KV cache is left padded to the batch's length and concatenated to it, and
from then on each step is one forward pass for all rows, with an attention
mask over the padding and each row's own position ids. A row leaves when it
writes one of its end tokens, reaches its token limit, fails or is halted;
columns that only hold padding are then cut away.

Each row keeps its own logits processors (thinking budget, tool-call
grammar), end tokens, token limit and temperature, and streams its tokens
through its own callback, so nothing is shared between requests. The
processors see the row alone, as a batch of one, exactly as under `generate`.

Prefix reuse: a row that leaves puts its KV cache into a small LRU
(`PrefixCache`, bounded by entries and bytes). A new request takes the entry
sharing the longest token prefix with its prompt, crops it to that prefix and
prefills only the rest. An agent's next step re-sends the previous prompt and
output plus an observation, so it prefills only the new tokens, not the whole
history. (A sliding-window layer keeps only its window, so once a sequence is
longer than the window its entry can be reused whole but not cropped.)

Why padded batches and not transformers' continuous batching (`generate_batch`,
paged attention): its logits processors are global, not per request (the
thinking and grammar processors declare `supports_continuous_batching =
False`), and on the CPU it was measured (issue #3) about 4x slower than
sequential generation, while a padded batch of 8 gave about 2.5x the
single-request tokens/s. `benchmarks/gpu_check.sh` compares both on a GPU.

Only caches made of plain `DynamicLayer` and `DynamicSlidingWindowLayer`
layers can be padded and merged; `BatchScheduler.unsupported(model)` says why
another model cannot, and `TransformersLLM` then generates serially.

torch and transformers are imported inside functions, and nothing else of the
project is imported, so a script can load this file on its own
(`benchmarks/gpu_check.sh`).
"""

from __future__ import annotations

import atexit
import inspect
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

#: prefixes shorter than this are prefilled with the cold prompts instead
MIN_REUSE_TOKENS = 8


class SchedulerClosed(RuntimeError):
    """The scheduler was closed before the job finished."""


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made (updated by its worker thread)."""

    #: jobs submitted
    requests: int = 0
    #: forward passes that decoded one token for every row of the batch
    decode_steps: int = 0
    #: decode steps that carried two rows or more
    batched_steps: int = 0
    #: tokens decoded by those steps (the sum of their batch sizes)
    decoded_tokens: int = 0
    #: the largest batch decoded in one step
    max_batch: int = 0
    #: forward passes over prompts
    prefill_passes: int = 0
    #: prompt tokens of admitted jobs
    prompt_tokens: int = 0
    #: of those, tokens taken from the prefix cache instead of being prefilled
    reused_tokens: int = 0
    #: jobs that found a usable prefix
    prefix_hits: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    def snapshot(self) -> SchedulerStats:
        """A copy, to subtract from a later one."""
        return SchedulerStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: SchedulerStats) -> SchedulerStats:
        out = self.snapshot()
        for f in fields(self):
            if f.name != "max_batch":
                setattr(out, f.name, getattr(self, f.name) - getattr(other, f.name))
        return out


class GenerationJob:
    """One request to the scheduler: prompt token ids in, tokens out.

    `on_token(token)` and `on_done(error)` run on the scheduler's thread and
    should be quick. `on_token` may set `halt` (a stop string was seen); the
    row then leaves without another token, as it also does when `halt` is set
    from elsewhere (the consumer went away). `end_ids` end the row after they
    are emitted; an empty set generates exactly `max_new_tokens` tokens.

    When `done` is set, `tokens` holds every generated token (an end token
    included), `reused_tokens` the prompt tokens taken from the prefix cache,
    `error` what ended the job if it failed, and the `*_at` fields
    `time.perf_counter()` readings.
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        end_ids: Iterable[int] = (),
        processors: Sequence[Callable[[Any, Any], Any]] = (),
        on_token: Callable[[int], None] | None = None,
        on_done: Callable[[BaseException | None], None] | None = None,
        halt: threading.Event | None = None,
    ) -> None:
        if not prompt_ids:
            raise ValueError("a generation job needs at least one prompt token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature or 0.0)
        self.end_ids = frozenset(int(t) for t in end_ids)
        self.processors = list(processors)
        self.on_token = on_token
        self.on_done = on_done
        self.halt = halt if halt is not None else threading.Event()
        self.tokens: list[int] = []
        self.reused_tokens = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.submitted_at = 0.0
        self.first_token_at: float | None = None
        self.finished_at: float | None = None

    def wait(self, timeout: float | None = None) -> list[int]:
        """Block until the job ends; its tokens, or its error raised."""
        if not self.done.wait(timeout):
            raise TimeoutError("the generation job did not finish in time")
        if self.error is not None:
            raise self.error
        return self.tokens


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n:  # compare in slices (C speed), then find the first difference
        j = min(i + 256, n)
        if a[i:j] == b[i:j]:
            i = j
            continue
        while a[i] == b[i]:
            i += 1
        return i
    return n


class _Entry:
    __slots__ = ("tokens", "layers", "nbytes", "croppable")

    def __init__(self, tokens: list[int], layers: list[tuple[Any, Any]]) -> None:
        self.tokens = tokens
        self.layers = layers
        self.nbytes = sum(
            k.nelement() * k.element_size() + v.nelement() * v.element_size() for k, v in layers
        )
        # a sliding-window layer keeps only its window: such an entry is reusable only whole
        self.croppable = all(k.shape[-2] == len(tokens) for k, _ in layers)


class PrefixCache:
    """KV caches of recently finished sequences, least recently used out first.

    Bounded by `max_entries` and `max_bytes`; an entry whose tokens begin a
    newly stored sequence is dropped, since the new one covers it.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 1 << 30) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return self._bytes

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def lookup(self, tokens: Sequence[int], limit: int) -> tuple[_Entry | None, int]:
        """The entry sharing the longest usable prefix with `tokens` (at most
        `limit` tokens), and that length; (None, 0) when none does."""
        best: tuple[_Entry | None, int, int] = (None, 0, -1)
        with self._lock:
            for key, entry in self._entries.items():
                n = min(common_prefix(entry.tokens, tokens), limit)
                if n < len(entry.tokens) and not entry.croppable:
                    continue
                if n > best[1]:
                    best = (entry, n, key)
            if best[0] is not None:
                self._entries.move_to_end(best[2])
        return best[0], best[1]

    def store(self, tokens: list[int], layers: list[tuple[Any, Any]]) -> None:
        """Keep one sequence's KV tensors (per layer, batch of one, no padding)."""
        if not self.enabled or not tokens:
            return
        entry = _Entry(tokens, layers)
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            for key, old in list(self._entries.items()):
                covered = len(old.tokens) <= len(tokens) and entry.croppable
                if covered and common_prefix(old.tokens, tokens) == len(old.tokens):
                    self._bytes -= old.nbytes
                    del self._entries[key]
            self._entries[self._next] = entry
            self._next += 1
            self._bytes += entry.nbytes
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes


# --------------------------------------------------------------------------- KV cache surgery
#
# A batch cache is a transformers `DynamicCache` whose rows are right aligned:
# row i's tokens fill the last `length_i` columns, the columns before them are
# padding that the attention mask hides. Left padding keeps every distance
# between a query and a key as it is without padding, so sliding-window layers
# stay right; such a layer stores only its last `window - 1` columns and
# counts all of them in `cumulative_length`.


def _mergeable_layers() -> tuple[type, ...]:
    """The cache layer classes whose tensors this module pads, merges and crops."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    return (DynamicLayer, DynamicSlidingWindowLayer)


def _pad_left(t: Any, n: int) -> Any:
    import torch.nn.functional as F

    return F.pad(t, (0, 0, n, 0)) if n > 0 else t


def _stored(layer: Any, columns: int) -> int:
    """How many of `columns` padded columns a layer keeps."""
    window = getattr(layer, "sliding_window", None)
    return min(columns, window - 1) if window else columns


def _merge(parts: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Concatenate (cache, mask) parts along the batch, left padding to the longest.
    The first part's cache object receives the result."""
    import torch
    import torch.nn.functional as F

    width = max(int(mask.shape[1]) for _, mask in parts)
    base = parts[0][0]
    for index, layer in enumerate(base.layers):
        keep = _stored(layer, width)
        keys, values = [], []
        for cache, _ in parts:
            other = cache.layers[index]
            if not other.is_initialized:
                raise RuntimeError("a cache layer was never filled; this model cannot be batched")
            keys.append(_pad_left(other.keys, keep - other.keys.shape[-2]))
            values.append(_pad_left(other.values, keep - other.values.shape[-2]))
        layer.keys = torch.cat(keys, dim=0) if len(keys) > 1 else keys[0]
        layer.values = torch.cat(values, dim=0) if len(values) > 1 else values[0]
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = width
    masks = [F.pad(mask, (width - mask.shape[1], 0)) for _, mask in parts]
    return base, torch.cat(masks, dim=0) if len(masks) > 1 else masks[0]


def _select(cache: Any, mask: Any, rows: list[int]) -> Any:
    """Keep only `rows` of the batch; cut the columns no remaining row needs. Returns the mask."""
    import torch

    index = torch.tensor(rows, dtype=torch.long)
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
            layer.values = layer.values.index_select(0, index.to(layer.values.device))
    mask = mask.index_select(0, index.to(mask.device))
    used = mask.any(dim=0)
    cut = int(used.to(torch.int8).argmax()) if bool(used.any()) else int(mask.shape[1])
    if cut:
        mask = mask[:, cut:]
        width = int(mask.shape[1])
        for layer in cache.layers:
            if not layer.is_initialized:
                continue
            extra = layer.keys.shape[-2] - _stored(layer, width)
            if extra > 0:
                layer.keys = layer.keys[..., extra:, :]
                layer.values = layer.values[..., extra:, :]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = width
    return mask


def _row_layers(cache: Any, row: int, length: int) -> list[tuple[Any, Any]]:
    """A copy of one row's KV tensors without padding (`length` real tokens)."""
    out = []
    for layer in cache.layers:
        keys, values = layer.keys[row : row + 1], layer.values[row : row + 1]
        take = min(length, int(keys.shape[-2]))
        out.append((keys[..., -take:, :].clone(), values[..., -take:, :].clone()))
    return out


# --------------------------------------------------------------------------- the scheduler


class _Row:
    __slots__ = ("job", "tokens", "length", "worst")

    def __init__(self, job: GenerationJob) -> None:
        self.job = job
        #: prompt and generated tokens
        self.tokens = list(job.prompt_ids)
        #: tokens whose keys and values are in the cache
        self.length = len(job.prompt_ids)
        #: the most columns this row can need
        self.worst = len(job.prompt_ids) + job.max_new_tokens


_live: weakref.WeakSet[BatchScheduler] = weakref.WeakSet()


@atexit.register
def _close_live_schedulers() -> None:
    # A worker still inside a forward pass when the interpreter finalises
    # aborts the process (SIGABRT from torch's threads): stop them first.
    for scheduler in list(_live):
        scheduler.close(timeout=5.0)


class BatchScheduler:
    """Batches concurrent generation jobs for one causal LM into shared forward passes.

    `max_batch_size` caps the rows decoded together; `max_batch_tokens` caps
    the padded cache (rows x the longest row's prompt plus new tokens) a new
    job may grow the batch to, so a burst of long prompts waits instead of
    running out of memory (a job alone is always admitted). Cold prompts are
    prefilled together up to `max_prefill_tokens` padded tokens per pass.
    `prefix_entries` / `prefix_bytes` bound the prefix cache (0 turns reuse off).
    The worker thread stops after `idle_seconds` without work and starts again
    on the next job.
    """

    def __init__(
        self,
        model: Any,
        *,
        threads: int | None = None,
        max_batch_size: int = 64,
        max_batch_tokens: int | None = 65536,
        max_prefill_tokens: int = 8192,
        prefix_entries: int = 32,
        prefix_bytes: int = 1 << 30,
        pad_token_id: int | None = None,
        idle_seconds: float = 30.0,
    ) -> None:
        reason = self.unsupported(model)
        if reason:
            raise ValueError(f"this model cannot be batched: {reason}")
        self.model = model
        _live.add(self)
        self.threads = threads
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max(1, int(max_prefill_tokens))
        self.prefix_cache = PrefixCache(prefix_entries, prefix_bytes)
        self.idle_seconds = idle_seconds
        self.stats = SchedulerStats()
        config = getattr(model, "generation_config", None)
        pad = pad_token_id if pad_token_id is not None else getattr(config, "pad_token_id", None)
        self.pad_token_id = int(pad[0] if isinstance(pad, list | tuple) else pad) if pad is not None else 0
        self.top_k = int(getattr(config, "top_k", None) or 0)
        self.top_p = float(getattr(config, "top_p", None) or 1.0)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_logits = "logits_to_keep" in params
        self.device = model.get_input_embeddings().weight.device
        self._cond = threading.Condition()
        self._pending: deque[GenerationJob] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        # the running batch (worker thread only)
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None

    @staticmethod
    def unsupported(model: Any) -> str | None:
        """Why `model` cannot be batched by this scheduler, or None when it can."""
        try:
            from transformers import DynamicCache

            mergeable = _mergeable_layers()
        except ImportError as e:
            return f"this transformers version lacks the dynamic cache layers ({e})"
        config = getattr(model, "config", None)
        if config is None or getattr(config, "is_encoder_decoder", False):
            return "only decoder-only models are batched"
        supports = getattr(type(model), "_supports_default_dynamic_cache", None)
        if callable(supports) and not supports():
            return f"{type(model).__name__} does not use a dynamic cache"
        params = set(inspect.signature(model.forward).parameters)
        if not {"attention_mask", "position_ids"} <= params or not {"cache", "past_key_values"} & params:
            return f"{type(model).__name__}.forward takes no attention mask, position ids or cache"
        text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        if "chunked_attention" in (getattr(text_config, "layer_types", None) or ()):
            return "chunked attention counts chunks from the first column, which left padding moves"
        try:
            layers = DynamicCache(config=config).layers
        except Exception as e:
            return f"could not build its cache: {e}"
        odd = sorted({type(layer).__name__ for layer in layers if type(layer) not in mergeable})
        if odd:
            return f"its cache has {', '.join(odd)} layers, which cannot be padded and merged"
        return None

    # -- submitting

    def submit(self, job: GenerationJob) -> GenerationJob:
        """Queue a job; it joins the batch at the next step boundary."""
        with self._cond:
            if self._closed:
                raise SchedulerClosed("the scheduler is closed")
            job.submitted_at = time.perf_counter()
            self._pending.append(job)
            self.stats.requests += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llm-batch-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify()
        return job

    def generate(self, prompt_ids: Sequence[int], **kwargs: Any) -> list[int]:
        """Run one job to the end and return its tokens (blocking)."""
        return self.submit(GenerationJob(prompt_ids, **kwargs)).wait()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; queued and running jobs end with `SchedulerClosed`."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the worker

    def _run(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)  # OpenMP keeps the count per OS thread
        with torch.inference_mode():
            while True:
                work = self._next_work()
                if work is None:
                    return
                arrivals, dropped = work
                for job in dropped:
                    self._end(job, None)
                try:
                    self._leave([i for i, row in enumerate(self._rows) if row.job.halt.is_set()])
                    if arrivals:
                        self._prefill(arrivals)
                    if self._rows:
                        self._decode()
                except Exception as e:  # a fault here must not leave jobs waiting forever
                    jobs = [row.job for row in self._rows] + arrivals
                    self._rows, self._cache, self._mask = [], None, None
                    for job in jobs:
                        if not job.done.is_set():
                            self._end(job, e)

    def _next_work(self) -> tuple[list[GenerationJob], list[GenerationJob]] | None:
        """Jobs admitted into the batch and jobs halted while queued; None: stop."""
        with self._cond:
            while True:
                if self._closed:
                    self._thread = None
                    failed = [row.job for row in self._rows] + list(self._pending)
                    self._pending.clear()
                    break
                admitted, dropped = self._admit()
                if admitted or dropped or self._rows:
                    return admitted, dropped
                if not self._cond.wait(self.idle_seconds) and not self._pending:
                    self._thread = None
                    return None
        self._rows, self._cache, self._mask = [], None, None
        for job in failed:
            self._end(job, SchedulerClosed("the scheduler was closed"))
        return None

    def _admit(self) -> tuple[list[GenerationJob], list[GenerationJob]]:
        admitted: list[GenerationJob] = []
        dropped: list[GenerationJob] = []
        rows = len(self._rows)
        worst = max((row.worst for row in self._rows), default=0)
        cap = self.max_batch_tokens
        while self._pending and rows < self.max_batch_size:
            job = self._pending[0]
            if job.halt.is_set():
                dropped.append(self._pending.popleft())
                continue
            need = max(worst, len(job.prompt_ids) + job.max_new_tokens)
            if rows and cap and (rows + 1) * need > cap:
                break
            admitted.append(self._pending.popleft())
            rows += 1
            worst = need
        return admitted, dropped

    def _end(self, job: GenerationJob, error: BaseException | None) -> None:
        job.error = error
        job.finished_at = time.perf_counter()
        job.done.set()
        if job.on_done is not None:
            try:
                job.on_done(error)
            except Exception:  # a broken callback must not stop the other rows
                pass

    # -- model calls

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        """Logits (float32) of the last position of each row."""
        kwargs: dict[str, Any] = {
            "attention_mask": mask,
            "position_ids": positions,
            self._cache_arg: cache,
            "use_cache": True,
        }
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, **kwargs)
        return out.logits[:, -1, :].float()

    def _cache_from(self, entry: _Entry, n: int) -> Any:
        """A one-row cache holding the first `n` tokens of a prefix entry."""
        cache = self._new_cache()
        if not cache.layers:  # lazily built layers
            cache.layers.extend(cache.layer_class_to_replicate() for _ in entry.layers)
        for layer, (keys, values) in zip(cache.layers, entry.layers, strict=True):
            if n < len(entry.tokens):  # croppable: all tokens are there
                keys, values = keys[..., :n, :], values[..., :n, :]
            keep = _stored(layer, n)
            keys, values = keys[..., keys.shape[-2] - keep :, :], values[..., values.shape[-2] - keep :, :]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = n
        return cache

    # -- prefill

    def _prefill(self, jobs: list[GenerationJob]) -> None:
        """Prefill newly admitted jobs, emit their first tokens and merge them into the batch."""
        parts: list[tuple[list[_Row], Any, Any]] = []
        cold: list[GenerationJob] = []
        for job in jobs:
            self.stats.prompt_tokens += len(job.prompt_ids)
            entry, n = (None, 0)
            if self.prefix_cache.enabled:
                entry, n = self.prefix_cache.lookup(job.prompt_ids, len(job.prompt_ids) - 1)
            if entry is not None and n >= MIN_REUSE_TOKENS:
                parts += self._prefill_warm(job, entry, n)
            else:
                cold.append(job)
        for group in self._cold_groups(cold):
            parts += self._prefill_cold(group)
        if parts:
            if self._rows:
                parts.insert(0, (self._rows, self._cache, self._mask))
            self._cache, self._mask = _merge([(cache, mask) for _, cache, mask in parts])
            self._rows = [row for rows, _, _ in parts for row in rows]

    def _prefill_warm(self, job: GenerationJob, entry: _Entry, n: int) -> list[tuple[list[_Row], Any, Any]]:
        """Prefill a prompt whose first `n` tokens come from a prefix-cache entry."""
        import torch

        length = len(job.prompt_ids)
        started = time.perf_counter()
        try:
            cache = self._cache_from(entry, n)
            ids = torch.tensor([job.prompt_ids[n:]], device=self.device)
            mask = torch.ones(1, length, dtype=torch.long, device=self.device)
            positions = torch.arange(n, length, device=self.device).unsqueeze(0)
            logits = self._forward(ids, mask, positions, cache)
        except Exception as e:
            self._end(job, e)
            return []
        finally:
            self.stats.prefill_passes += 1
            self.stats.prefill_seconds += time.perf_counter() - started
        job.reused_tokens = n
        self.stats.reused_tokens += n
        self.stats.prefix_hits += 1
        return self._first_tokens([_Row(job)], cache, mask, logits)

    def _cold_groups(self, jobs: list[GenerationJob]) -> list[list[GenerationJob]]:
        """Cold prompts in groups of similar length, each within the prefill token cap."""
        groups: list[list[GenerationJob]] = []
        for job in sorted(jobs, key=lambda j: len(j.prompt_ids)):
            group = groups[-1] if groups else None
            if group and (len(group) + 1) * len(job.prompt_ids) <= self.max_prefill_tokens:
                group.append(job)
            else:
                groups.append([job])
        return groups

    def _prefill_cold(self, jobs: list[GenerationJob]) -> list[tuple[list[_Row], Any, Any]]:
        import torch

        width = max(len(job.prompt_ids) for job in jobs)
        ids = [[self.pad_token_id] * (width - len(job.prompt_ids)) + job.prompt_ids for job in jobs]
        flags = [[0] * (width - len(job.prompt_ids)) + [1] * len(job.prompt_ids) for job in jobs]
        mask = torch.tensor(flags, dtype=torch.long, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        started = time.perf_counter()
        try:
            logits = self._forward(torch.tensor(ids, device=self.device), mask, positions, cache)
        except Exception as e:
            if len(jobs) == 1:
                self._end(jobs[0], e)
                return []
            # find the job that fails alone; the others go on
            return [part for job in jobs for part in self._prefill_cold([job])]
        finally:
            self.stats.prefill_passes += 1
            self.stats.prefill_seconds += time.perf_counter() - started
        return self._first_tokens([_Row(job) for job in jobs], cache, mask, logits)

    def _first_tokens(
        self, rows: list[_Row], cache: Any, mask: Any, logits: Any
    ) -> list[tuple[list[_Row], Any, Any]]:
        """Emit each prefilled row's first token; the rows that go on, as a part to merge."""
        going = self._emit(rows, logits, cache)
        if not going:
            return []
        if len(going) < len(rows):
            mask = _select(cache, mask, going)
        return [([rows[i] for i in going], cache, mask)]

    # -- decode

    def _decode(self) -> None:
        import torch

        rows = self._rows
        started = time.perf_counter()
        ids = torch.tensor([[row.tokens[-1]] for row in rows], device=self.device)
        positions = torch.tensor([[row.length] for row in rows], device=self.device)
        mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)
        try:
            logits = self._forward(ids, mask, positions, self._cache)
        except Exception as e:
            self._rows, self._cache, self._mask = [], None, None
            for row in rows:
                self._end(row.job, e)
            return
        self._mask = mask
        for row in rows:
            row.length += 1
        stats = self.stats
        stats.decode_steps += 1
        stats.decoded_tokens += len(rows)
        stats.batched_steps += len(rows) > 1
        stats.max_batch = max(stats.max_batch, len(rows))
        going = self._emit(rows, logits, self._cache)
        if len(going) < len(rows):
            self._rows = [rows[i] for i in going]
            self._mask = _select(self._cache, self._mask, going) if going else None
            if not going:
                self._cache = None
        stats.decode_seconds += time.perf_counter() - started

    def _leave(self, indices: list[int]) -> None:
        """Rows whose consumer halted them leave before the next step."""
        if not indices:
            return
        for i in indices:
            self._retire(self._rows[i], self._cache, i, None)
        leaving = set(indices)
        going = [i for i in range(len(self._rows)) if i not in leaving]
        self._rows = [self._rows[i] for i in going]
        if going:
            self._mask = _select(self._cache, self._mask, going)
        else:
            self._cache = self._mask = None

    def _retire(self, row: _Row, cache: Any, index: int, error: BaseException | None) -> None:
        """End a row's job; keep its KV cache for prefix reuse when it ended well."""
        if error is None and self.prefix_cache.enabled:
            try:
                self.prefix_cache.store(row.tokens[: row.length], _row_layers(cache, index, row.length))
            except Exception:  # reuse is an optimisation; never fail a finished job for it
                pass
        self._end(row.job, error)

    # -- choosing tokens

    def _emit(self, rows: list[_Row], logits: Any, cache: Any) -> list[int]:
        """Pick and hand out each row's next token; the indices of rows that go on."""
        import torch

        errors: dict[int, BaseException] = {}
        for i, row in enumerate(rows):
            if not row.job.processors:
                continue
            try:  # the row alone, a batch of one, as generate would show it
                ids = torch.tensor([row.tokens], device=logits.device)
                scores = logits[i : i + 1]
                for processor in row.job.processors:
                    scores = processor(ids, scores)
                logits[i : i + 1] = scores
            except Exception as e:
                errors[i] = e
        picks = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.job.temperature > 0 and i not in errors:
                try:
                    picks[i] = self._sample(logits[i], row.job.temperature)
                except Exception as e:
                    errors[i] = e
        now = time.perf_counter()
        going = []
        for i, row in enumerate(rows):
            job = row.job
            error = errors.get(i)
            if error is None:
                token = int(picks[i])
                row.tokens.append(token)
                job.tokens.append(token)
                if job.first_token_at is None:
                    job.first_token_at = now
                try:
                    if job.on_token is not None:
                        job.on_token(token)
                except Exception as e:
                    error = e
                else:
                    ended = token in job.end_ids or len(job.tokens) >= job.max_new_tokens
                    if not (ended or job.halt.is_set()):
                        going.append(i)
                        continue
            self._retire(row, cache, i, error)
        return going

    def _sample(self, scores: Any, temperature: float) -> int:
        import torch

        scores = scores / temperature
        if 0 < self.top_k < scores.shape[-1]:
            floor = torch.topk(scores, self.top_k).values[-1]
            scores = scores.masked_fill(scores < floor, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            beyond = probs.cumsum(-1) - probs > self.top_p  # the most likely token always stays
            scores[order[beyond]] = float("-inf")
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1))
