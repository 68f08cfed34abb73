"""Plain data types shared by events, LLM backends and tools.

This module imports nothing else of the project, so every package may use it.
"""

from __future__ import annotations

import copy
import functools
import itertools
import secrets
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high")

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# The setters of BaseModel's slots, bound once: a third cheaper than
# object.__setattr__, which looks the slot up on every call.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
# Per model class: its fields in order with their plain defaults, and the
# fields whose default comes from a factory.
_shapes: dict[type, tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]] = {}
# Per model class: whether it has neither extra fields nor private attributes (see updated).
_plain: dict[type, bool] = {}


def trusted(cls: type[M], /, **values: Any) -> M:
    """`cls(**values)` without validation, for values typed code has already checked.

    The loop builds several models per step (events, messages, the request)
    from values that are already of the right types; this costs about two
    thirds of validating them and a third of `model_construct`, whose
    per-field alias and factory handling is slow. The instance equals the
    validated one: defaults filled in (factories called), fields in order, the
    given fields marked as set, so its JSON is byte for byte the same. Nothing
    is checked: a missing required field or a wrong type shows up later.
    """
    try:
        template, factories = _shapes[cls]
    except KeyError:
        template, factories = _shapes[cls] = _shape(cls)
    data = template | values
    for name, factory in factories:
        if name not in values:
            data[name] = factory()
    model = _new(cls)
    _set_dict(model, data)
    _set_fields_set(model, set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model


def updated(model: M, /, **changes: Any) -> M:
    """`model.model_copy(update=changes)` (shallow, nothing checked) for a
    fraction of its cost: pydantic's copy goes through `__copy__` and
    `copy.copy` of each of its parts."""
    cls = type(model)
    copy = _new(cls)
    _set_dict(copy, model.__dict__ | changes)
    # union(), not `|`: a set and a keys view meet through two operator dispatches.
    _set_fields_set(copy, model.__pydantic_fields_set__.union(changes))
    if _plain_class(cls):  # both are None: no need to read them
        _set_extra(copy, None)
        _set_private(copy, None)
        return copy
    extra = model.__pydantic_extra__
    _set_extra(copy, None if extra is None else dict(extra))
    private = model.__pydantic_private__
    _set_private(copy, None if private is None else dict(private))
    return copy


def _plain_class(cls: type[BaseModel]) -> bool:
    """Whether the class's instances have neither extra fields nor private attributes
    (learnt once per class)."""
    plain = _plain.get(cls)
    if plain is None:
        plain = _plain[cls] = not cls.__private_attributes__ and cls.model_config.get("extra") != "allow"
    return plain


def _shape(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    if cls.__pydantic_post_init__ or not _plain_class(cls):
        raise TypeError(f"trusted() cannot build {cls.__name__}: it has post-init, private or extra fields")
    template: dict[str, Any] = {}
    factories = []
    for name, field in cls.__pydantic_fields__.items():
        default = field.default
        template[name] = None if default is PydanticUndefined else default
        if field.default_factory is not None:
            factories.append((name, field.default_factory))
        elif isinstance(default, (list, dict, set)):  # each instance gets its own copy, as pydantic does
            factories.append((name, functools.partial(copy.deepcopy, default)))
    return template, tuple(factories)


_CALL_PREFIX = secrets.token_hex(4)
_call_numbers = itertools.count(1)


def new_call_id() -> str:
    """Unique within a process and unlikely to clash across processes; cheap."""
    return f"call_{_CALL_PREFIX}{next(_call_numbers):x}"


class Usage(BaseModel):
    """Token counts of one model call, or of a whole run when summed."""

    model_config = ConfigDict(defer_build=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return trusted(
            Usage,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
        )

    def __sub__(self, other: Usage) -> Usage:
        return trusted(
            Usage,
            prompt_tokens=self.prompt_tokens - other.prompt_tokens,
            completion_tokens=self.completion_tokens - other.completion_tokens,
            thinking_tokens=self.thinking_tokens - other.thinking_tokens,
        )


class ToolCallRequest(BaseModel):
    """A tool call as the model wrote it.

    `arguments` is the decoded JSON object, or None when the text could not be
    decoded; then `parse_error` says why and `raw_arguments` keeps the text so
    the model can be shown its mistake.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None
    parse_error: str | None = None


class Message(BaseModel):
    """One chat message in the OpenAI shape that every backend understands."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
