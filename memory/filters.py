"""Metadata filters (`where=`) compiled to SQLite JSON1 and to PostgreSQL jsonb.

```python
where={"kind": "note"}                          # equality (typed: 1 != "1", True != 1)
where={"tags": {"$contains": "python"}}         # list membership
where={"lang": {"$in": ["en", "de"]}, "stars": {"$gte": 3}}
where={"$or": [{"kind": "note"}, {"pinned": True}]}
where={"author.name": "ada"}                    # dotted paths reach nested objects
```

Operators: `$eq $ne $in $nin $gt $gte $lt $lte $contains $exists`, and
`$and`/`$or` over lists of filters. Both backends give the same answers; the
shared test suite checks that.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

Where = dict[str, Any]

# A key part may be any text but what would end a quoted JSON-path key or an SQL literal.
_KEY = re.compile(r"^[^.\"'\\\x00-\x1f]+$")
_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$contains", "$exists"}
_CMP = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class FilterError(ValueError):
    """A `where` filter that cannot be understood."""


def _path(key: str) -> list[str]:
    parts = key.split(".")
    for part in parts:
        if not _KEY.match(part):
            raise FilterError(
                f"bad metadata key {key!r}: a key may not hold quotes, backslashes or control characters "
                "('.' separates nested keys)"
            )
    return parts


MAX_DEPTH = 32  # levels of $and/$or: deeper would overflow the compiler's recursion, or SQLite's


def _check_depth(where: Where) -> None:
    """Refuse filters nested deeper than MAX_DEPTH levels, without recursing to find out."""
    level: list[Any] = [where]
    for _ in range(MAX_DEPTH + 1):
        level = [
            sub
            for w in level
            if isinstance(w, dict)
            for key, value in w.items()
            if key in ("$and", "$or") and isinstance(value, list)
            for sub in value
        ]
        if not level:
            return
    raise FilterError(f"a filter nests $and/$or at most {MAX_DEPTH} levels deep")


def _check_scalar(value: Any, op: str) -> None:
    if not (value is None or isinstance(value, (str, int, float, bool))):
        raise FilterError(f"{op}: compare with a string, number, boolean or null, not {type(value).__name__}")


def _conditions(where: Where) -> list[tuple[str, str, Any]]:
    """Flatten one filter level to (kind, key-or-op, value) items."""
    if not isinstance(where, dict):
        raise FilterError(f"a filter is a dict, not {type(where).__name__}")
    out: list[tuple[str, str, Any]] = []
    for key, value in where.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            out.append(("bool", key, value))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top level; use a field name, $and or $or")
        elif isinstance(value, dict):
            if not value:
                raise FilterError(f"empty operator dict for {key!r}")
            for op, operand in value.items():
                if op not in _OPS:
                    raise FilterError(f"unknown operator {op!r} for {key!r}; use one of {sorted(_OPS)}")
                if op == "$exists" and not isinstance(operand, bool):
                    raise FilterError(f"$exists takes true or false, not {operand!r}")
                _check_range(operand, op)
                out.append(("field", key, (op, operand)))
        else:
            _check_range(value, "$eq")
            out.append(("field", key, ("$eq", value)))
    return out


def _check_range(value: Any, op: str) -> None:
    """Integers a database compares: 64-bit (larger ones are stored as text in JSON, never matched)."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            raise FilterError(f"{op}: {v} is outside the 64-bit integer range a filter can compare")


# -- SQLite (JSON1) ------------------------------------------------------------


def _sqlite_path(key: str) -> str:
    return "$" + "".join(f'."{p}"' for p in _path(key))


def _sqlite_eq(column: str, path: str, value: Any, params: list[Any]) -> str:
    _check_scalar(value, "$eq")
    jtype = f"json_type({column}, '{path}')"
    if value is None:
        return f"({jtype} = 'null')"
    if isinstance(value, bool):
        return f"({jtype} = '{'true' if value else 'false'}')"
    params.append(value)
    if isinstance(value, str):
        return f"({jtype} = 'text' AND json_extract({column}, '{path}') = ?)"
    return f"({jtype} IN ('integer', 'real') AND json_extract({column}, '{path}') = ?)"


def _sqlite_any_of(column: str, path: str, values: Sequence[Any], params: list[Any]) -> str:
    """Equal to one of `values`: one test per kind of value, the strings and the numbers
    each as one JSON array parameter, so a list of any length is one short expression."""
    for v in values:
        _check_scalar(v, "$in")
        if isinstance(v, float) and not math.isfinite(v):
            raise FilterError(f"$in: {v} is not a number a filter can compare")
    constants = dict.fromkeys(v for v in values if v is None or isinstance(v, bool))  # null, true, false
    tests = [_sqlite_eq(column, path, v, params) for v in constants]
    jtype, value = f"json_type({column}, '{path}')", f"json_extract({column}, '{path}')"
    for kinds, group in (
        ("('text')", [v for v in values if isinstance(v, str)]),
        (
            "('integer', 'real')",
            [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)],
        ),
    ):
        if group:
            params.append(json.dumps(group))
            tests.append(f"({jtype} IN {kinds} AND {value} IN (SELECT value FROM json_each(?)))")
    return _balanced(tests, " OR ")


def _balanced(parts: list[str], joiner: str, width: int = 64) -> str:
    """`(a OR b OR ...)` nested in groups of `width`: SQLite refuses an expression
    tree deeper than 1000, which a flat list of 1000 terms is."""
    while len(parts) > width:
        parts = ["(" + joiner.join(parts[i : i + width]) + ")" for i in range(0, len(parts), width)]
    return "(" + joiner.join(parts) + ")"


def _sqlite_member(value: Any, params: list[Any]) -> str:
    """A condition on a json_each() row (columns `type`, `value`)."""
    _check_scalar(value, "$contains")
    if value is None:
        return "(type = 'null')"
    if isinstance(value, bool):
        return f"(type = '{'true' if value else 'false'}')"
    params.append(value)
    if isinstance(value, str):
        return "(type = 'text' AND value = ?)"
    return "(type IN ('integer', 'real') AND value = ?)"


def to_sqlite(where: Where | None, column: str = "metadata") -> tuple[str, list[Any]]:
    """`(sql, params)`: a boolean SQL expression over the JSON text column."""
    params: list[Any] = []
    if not where:
        return "1", params
    _check_depth(where)
    return _sqlite_level(where, column, params), params


def _sqlite_level(where: Where, column: str, params: list[Any]) -> str:
    parts: list[str] = []
    for kind, key, value in _conditions(where):
        if kind == "bool":
            joiner = " AND " if key == "$and" else " OR "
            parts.append(_balanced([_sqlite_level(w, column, params) for w in value], joiner))
            continue
        op, operand = value
        path = _sqlite_path(key)
        if op == "$eq":
            parts.append(_sqlite_eq(column, path, operand, params))
        elif op == "$ne":
            parts.append(f"(NOT COALESCE({_sqlite_eq(column, path, operand, params)}, 0))")
        elif op in ("$in", "$nin"):
            if not isinstance(operand, (list, tuple)):
                raise FilterError(f"{op} takes a list")
            if not operand:
                parts.append("0" if op == "$in" else "1")
                continue
            any_of = _sqlite_any_of(column, path, operand, params)
            parts.append(any_of if op == "$in" else f"(NOT COALESCE({any_of}, 0))")
        elif op in _CMP:
            if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
                raise FilterError(f"{op} compares with a number or a string")
            jtype = f"json_type({column}, '{path}')"
            want = "('text')" if isinstance(operand, str) else "('integer', 'real')"
            params.append(operand)
            parts.append(f"({jtype} IN {want} AND json_extract({column}, '{path}') {_CMP[op]} ?)")
        elif op == "$contains":
            member = _sqlite_member(operand, params)
            parts.append(
                f"(json_type({column}, '{path}') != 'object' AND "
                f"EXISTS (SELECT 1 FROM json_each({column}, '{path}') WHERE {member}))"
            )
        elif op == "$exists":
            test = "IS NOT NULL" if operand else "IS NULL"
            parts.append(f"(json_type({column}, '{path}') {test})")
    return "(" + " AND ".join(parts) + ")" if parts else "1"


# -- PostgreSQL (jsonb) --------------------------------------------------------


def to_postgres(where: Where | None, column: str = "metadata") -> tuple[str, list[Any]]:
    """`(sql, params)` with `%s` placeholders, for psycopg."""
    params: list[Any] = []
    if not where:
        return "TRUE", params
    _check_depth(where)
    return _pg_level(where, column, params), params


def _pg_eq(column: str, path: list[str], value: Any, params: list[Any]) -> str:
    _check_scalar(value, "$eq")
    params.extend([path, json.dumps(value)])
    return f"({column} #> %s::text[] = %s::jsonb)"


def _pg_level(where: Where, column: str, params: list[Any]) -> str:
    parts: list[str] = []
    for kind, key, value in _conditions(where):
        if kind == "bool":
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_pg_level(w, column, params) for w in value) + ")")
            continue
        op, operand = value
        path = _path(key)
        if op == "$eq":
            parts.append(_pg_eq(column, path, operand, params))
        elif op == "$ne":
            parts.append(f"(NOT COALESCE({_pg_eq(column, path, operand, params)}, FALSE))")
        elif op in ("$in", "$nin"):
            if not isinstance(operand, (list, tuple)):
                raise FilterError(f"{op} takes a list")
            if not operand:
                parts.append("FALSE" if op == "$in" else "TRUE")
                continue
            for v in operand:
                _check_scalar(v, op)
            params.extend([path, [json.dumps(v) for v in operand]])
            test = f"({column} #> %s::text[] = ANY(%s::jsonb[]))"
            parts.append(test if op == "$in" else f"(NOT COALESCE({test}, FALSE))")
        elif op in _CMP:
            if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
                raise FilterError(f"{op} compares with a number or a string")
            # CASE, not AND: PostgreSQL may evaluate the cast before the type test.
            if isinstance(operand, str):
                params.extend([path, path, operand])
                parts.append(
                    f"(CASE WHEN jsonb_typeof({column} #> %s::text[]) = 'string' THEN "
                    f'({column} #>> %s::text[]) COLLATE "C" {_CMP[op]} %s ELSE FALSE END)'
                )
            else:
                params.extend([path, path, operand])
                parts.append(
                    f"(CASE WHEN jsonb_typeof({column} #> %s::text[]) = 'number' THEN "
                    f"({column} #> %s::text[])::numeric {_CMP[op]} %s ELSE FALSE END)"
                )
        elif op == "$contains":
            _check_scalar(operand, "$contains")
            params.extend([path, json.dumps(operand)])
            parts.append(f"COALESCE({column} #> %s::text[] @> %s::jsonb, FALSE)")
        elif op == "$exists":
            params.append(path)
            parts.append(f"({column} #> %s::text[] IS {'NOT ' if operand else ''}NULL)")
    return "(" + " AND ".join(parts) + ")" if parts else "TRUE"
