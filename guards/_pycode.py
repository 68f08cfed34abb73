"""Python code as the dangerous-code rules should read it: strings built at run time spelled out.

`'r' + 'm -rf /'`, `''.join(map(chr, [...]))`, `base64.b64decode(...)`, a path
kept in a variable, `getattr(os, 'sys' + 'tem')`: code that only assembles a
destructive command or call at run time passes patterns written for the plain
spelling. `readings(code)` folds what can be computed without running
anything (constant strings and their operations, names bound to them, module
aliases) and returns the code rewritten with those values in place, plus the
same for each constant string handed to `exec`, `eval` or `compile`. The
rules scan these readings as well as the code.

Nothing is executed and nothing is imported; a construct this does not know
is left as written. Names take their most recent value in source order, so a
value chosen by a branch is the branch written last. The sandbox, not this,
contains code that hides itself further.
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import copy
import io
import posixpath
import re
import tokenize
import zlib
from typing import Any

from agent.pysyntax import parse

MAX_CODE = 200_000  # characters of code read; longer code is scanned as written only
MAX_VALUE = 20_000  # characters of one folded value
MAX_DEPTH = 3  # exec of exec of exec ...
# Nodes and characters of values put in for names, in one reading: for one value; for all
# values but small ones, ten times that; for the small ones (a path, a command), their own.
MAX_COPIED = 20_000
SMALL_VALUE = 64
MAX_COPIED_SMALL = 500_000

_DECODERS = {
    "b64decode": base64.b64decode,
    "standard_b64decode": base64.standard_b64decode,
    "urlsafe_b64decode": base64.urlsafe_b64decode,
    "b32decode": base64.b32decode,
    "b16decode": base64.b16decode,
    "a85decode": base64.a85decode,
    "b85decode": base64.b85decode,
    "unhexlify": binascii.unhexlify,
    "a2b_hex": binascii.a2b_hex,
    "a2b_base64": binascii.a2b_base64,
    "fromhex": bytes.fromhex,
}
_STR_METHODS = {
    "upper",
    "lower",
    "strip",
    "lstrip",
    "rstrip",
    "replace",
    "format",
    "title",
    "casefold",
    "swapcase",
}
_RUNNERS = {"exec", "eval", "compile", "builtins.exec", "builtins.eval", "builtins.compile"}
_CODECS = {
    "rot13",
    "rot_13",
    "hex",
    "hex_codec",
    "base64",
    "base64_codec",
    "utf-8",
    "utf8",
    "latin-1",
    "ascii",
}
_WIDE = re.compile(r"\d{5,}|\*")  # a format width that could build a huge string
MAX_EXECUTED = 20
MAX_GROWN = 64  # items of a list followed through append/extend (a command's words, not data)
MAX_ITEMS = 4096  # items of a folded comprehension


def readings(code: str) -> list[str]:
    """The code with its run-time strings spelled out, and each exec'd constant the same way.

    Empty when the code is not Python (a shell command), is too long, or holds
    nothing to fold.
    """
    out: list[str] = []
    _read(code, out, 0)
    return out


def _read(code: str, out: list[str], depth: int) -> None:
    if len(code) > MAX_CODE or depth > MAX_DEPTH:
        return
    try:
        tree = parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    folder = _Folder()
    try:
        tree = folder.visit(tree)
        text = ast.unparse(ast.fix_missing_locations(tree))
    except (RecursionError, ValueError, TypeError, AttributeError):
        return
    if folder.changed or _adjacent_strings(code):  # 'a' 'b' is folded by the parser itself
        out.append(text)
    tabbed = [
        node.value.replace("\t", " ")
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\t" in node.value
    ]
    if tabbed:  # 'rm\t-rf /': the shell splits words at tabs, as the rules' spaces stand for
        out.append("\n".join(tabbed[:MAX_EXECUTED]))
    for inner in folder.executed:  # code run from a constant string: read it as code too
        if isinstance(inner, bytes):
            inner = inner.decode("utf-8", "replace")
        out.append(inner)
        _read(inner, out, depth + 1)


def without_comments(code: str) -> str | None:
    """Python code with its comments taken out (they never run), or None when it holds
    none or is not plain Python: a shell command, or IPython's `!` and `%` lines, where
    the shell reads `#` its own way (`ls#; reboot now` runs the reboot)."""
    if "#" not in code or len(code) > MAX_CODE:
        return None
    try:
        parse(code)
        comments = [
            t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT
        ]
    except (SyntaxError, ValueError, RecursionError, MemoryError, tokenize.TokenError):
        return None
    if not comments:
        return None
    lines = code.split("\n")  # as StringIO.readline splits it, so the tokens' rows and columns fit
    for token in reversed(comments):
        (row, start), (_, end) = token.start, token.end
        lines[row - 1] = lines[row - 1][:start] + lines[row - 1][end:]
    return "\n".join(lines)


def _adjacent_strings(code: str) -> bool:
    """Whether two string literals stand side by side (implicit concatenation)."""
    if code.count("'") + code.count('"') < 4:
        return False
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type in (tokenize.NL, tokenize.COMMENT):
                continue
            if token.type == tokenize.STRING and last == tokenize.STRING:
                return True
            last = token.type
    except (tokenize.TokenError, SyntaxError, ValueError):
        return False
    return False


def _const(node: ast.AST) -> Any:
    """The node's constant value, or _NO."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int, float, bool)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_const(e) for e in node.elts]
        if all(v is not _NO for v in values):
            return values
    return _NO


_NO = object()


def _fits(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return len(value) <= MAX_VALUE
    if isinstance(value, list):
        return len(value) <= MAX_VALUE and all(_fits(v) for v in value)
    return isinstance(value, (int, float, bool)) and not (isinstance(value, int) and value.bit_length() > 64)


def _node(value: Any, like: ast.AST) -> ast.AST:
    if isinstance(value, list):
        node: ast.AST = ast.List(elts=[_node(v, like) for v in value], ctx=ast.Load())
    else:
        node = ast.Constant(value=value)
    return ast.copy_location(node, like)


def _dotted(node: ast.AST) -> str | None:
    """`os.path.join` for the node of that name, None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _name_node(dotted: str, like: ast.AST) -> ast.AST:
    first, *rest = dotted.split(".")
    node: ast.AST = ast.Name(id=first, ctx=ast.Load())
    for part in rest:
        node = ast.Attribute(value=node, attr=part, ctx=ast.Load())
    return ast.copy_location(node, like)


_PATH_TYPES = {"Path", "PurePath", "PosixPath", "PurePosixPath"}
_JOINS = {"os.path.join", "posixpath.join", "path.join"}
_EXPANDUSER = {"os.path.expanduser", "posixpath.expanduser", "path.expanduser", "expanduser"}
# What a name may stand for besides constants: where secrets come from (the environment, key
# files), so `env = dict(os.environ)` then `requests.post(url, json=env)` reads as one call.
_SECRET_NAMES = {"environ", "environb", "getenv", "getenvb"}
_SECRET_FILES = re.compile(r"\.ssh\b|\.aws\b|\.env\b|\.netrc\b|\.gnupg\b|id_rsa|id_ed25519|/etc/shadow")
# Calls whose arguments the rules read on one line: a request or a command written over
# several lines (`requests.post(\n    url,\n    data=...)`) reads as it runs.
_SENDERS = {
    "post",
    "put",
    "patch",
    "get",
    "request",
    "urlopen",
    "send",
    "sendall",
    "sendto",
    "sendmail",
    "upload",
    "upload_file",
    "run",
    "call",
    "Popen",
    "check_output",
    "check_call",
    "system",
    "popen",
}


def _secret_source(node: ast.AST) -> bool:
    """Whether a small expression reads the environment or a key file."""
    for count, sub in enumerate(ast.walk(node)):
        if count > 200:
            return False
        if isinstance(sub, ast.Attribute) and sub.attr in _SECRET_NAMES:
            return True
        if isinstance(sub, ast.Name) and sub.id in _SECRET_NAMES:
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and _SECRET_FILES.search(sub.value):
            return True
    return False


def _path_value(node: ast.AST) -> str | None:
    """The text of `Path('...')` (pathlib's, one or more constant parts), else None."""
    if not isinstance(node, ast.Call) or node.keywords or not node.args:
        return None
    name = _dotted(node.func)
    if name is None or name.rsplit(".", 1)[-1] not in _PATH_TYPES:
        return None
    parts = [_const(a) for a in node.args]
    if not all(isinstance(p, str) for p in parts):
        return None
    return posixpath.join(*parts)


def _path_text(node: ast.AST) -> str | None:
    """A constant string or a constant `Path(...)`'s text; None for anything else."""
    value = _const(node)
    return value if isinstance(value, str) else _path_value(node)


def _path_node(path: str, like: ast.AST) -> ast.AST:
    node = ast.Call(func=ast.Name(id="Path", ctx=ast.Load()), args=[ast.Constant(value=path)], keywords=[])
    return ast.copy_location(node, like)


def _weight(node: ast.AST) -> int:
    """A value's size, as put in for a name: its nodes and the characters of its texts."""
    return sum(
        1 + (len(sub.value) if isinstance(sub, ast.Constant) and isinstance(sub.value, (str, bytes)) else 0)
        for sub in ast.walk(node)
    )


class _Folder(ast.NodeTransformer):
    """Folds constant expressions in source order, with names bound to constants and aliases."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, ast.AST]] = [{}]
        self.executed: list[str | bytes] = []
        self.changed = False
        # How much has been copied in for names: a list bound once and printed a thousand
        # times must not make a reading a thousand lists long (nor take seconds to make).
        # Each value has its own allowance, and big values share one: padding code with
        # uses of a big value does not stop a short one ('/') from being spelled out.
        self.copied = self.copied_small = 0
        self._weights: dict[int, int] = {}
        self._per_value: dict[int, int] = {}

    # -- names -------------------------------------------------------------------

    def _bind(self, name: str, value: ast.AST | None) -> None:
        """Bind `name` in the current scope; None (unknown) shadows an outer binding."""
        self.scopes[-1][name] = value  # type: ignore[assignment]

    def _forget_assigned(self, nodes: list[ast.stmt] | ast.AST) -> None:
        """Names assigned anywhere in `nodes` become unknown (a loop's values change each pass)."""
        for node in nodes if isinstance(nodes, list) else [nodes]:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    self._bind(sub.id, None)

    def _lookup(self, name: str) -> ast.AST | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def _bindable(self, node: ast.AST) -> ast.AST | None:
        """What a name bound to `node` may stand for: a constant, or a dotted name (an alias)."""
        if _const(node) is not _NO:
            return node
        if _dotted(node) is not None:
            return node
        if _path_value(node) is not None:
            return node
        if _secret_source(node):
            return node
        return None

    def _assign_target(self, target: ast.AST, value: ast.AST | None) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            for i, t in enumerate(target.elts):
                self._assign_target(t, values[i] if values is not None and i < len(values) else None)
        elif isinstance(target, ast.Starred):
            self._assign_target(target.value, None)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load):
            bound = self._lookup(node.id)
            if bound is not None:
                key = id(bound)
                weight = self._weights.get(key)
                if weight is None:
                    weight = self._weights[key] = _weight(bound)
                this = self._per_value.get(key, 0) + weight
                small = weight <= SMALL_VALUE
                total = (self.copied_small if small else self.copied) + weight
                if this > MAX_COPIED or total > (MAX_COPIED_SMALL if small else MAX_COPIED * 10):
                    return node  # enough spelled out: the rest stays by name
                self._per_value[key] = this
                if small:
                    self.copied_small = total
                else:
                    self.copied = total
                self.changed = True
                return ast.copy_location(copy.deepcopy(bound), node)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        node.value = self.visit(node.value)
        bound = self._bindable(node.value)
        for target in node.targets:
            if not isinstance(target, ast.Name):
                self.visit(target)
            self._assign_target(target, bound if isinstance(target, ast.Name) else node.value)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._bind(node.target.id, self._bindable(node.value) if node.value is not None else None)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        node.value = self.visit(node.value)
        if isinstance(node.target, ast.Name):
            current = self._lookup(node.target.id)
            folded = None
            if current is not None:
                folded = self._binop(
                    ast.BinOp(left=copy.deepcopy(current), op=node.op, right=node.value), node
                )
            self._bind(node.target.id, folded if folded is not None and _const(folded) is not _NO else None)
        else:
            self.visit(node.target)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        # cmd.append('-rf') / cmd.extend(['/']) on a list of constants: the list grows
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr in ("append", "extend")
            and isinstance(call.func.value, ast.Name)
            and len(call.args) == 1
            and not call.keywords
        ):
            name = call.func.value.id  # read before the visit puts the list in its place
            bound = self._lookup(name)
            node.value = self.visit(call)
            current, item = _const(bound) if bound is not None else _NO, _const(call.args[0])
            grown: Any = _NO
            if isinstance(current, list) and item is not _NO:
                if call.func.attr == "append":
                    grown = [*current, item]
                elif isinstance(item, (list, str)):
                    grown = [*current, *item]
            if grown is not _NO and len(grown) <= MAX_GROWN and _fits(grown):
                self._bind(name, _node(grown, node))
            elif bound is not None:
                self._bind(name, None)  # grown by what is not known: no longer known
            return node
        node.value = self.visit(call)
        return node

    def visit_List(self, node: ast.List) -> ast.AST:
        self.generic_visit(node)
        # ['rm', *args] with args a list of constants
        if any(isinstance(e, ast.Starred) for e in node.elts):
            items: list[Any] = []
            for e in node.elts:
                value = _const(e.value) if isinstance(e, ast.Starred) else _const(e)
                if value is _NO or isinstance(e, ast.Starred) and not isinstance(value, (list, str)):
                    return node
                items.extend(value if isinstance(e, ast.Starred) else [value])
            if _fits(items):
                self.changed = True
                return _node(items, node)
        return node

    def visit_NamedExpr(self, node: ast.NamedExpr) -> ast.AST:
        node.value = self.visit(node.value)
        self._bind(node.target.id, self._bindable(node.value))
        return node

    def _loop_body(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        self._forget_assigned(node.body)
        node.body = [self.visit(s) for s in node.body]
        node.orelse = [self.visit(s) for s in node.orelse]

    def visit_For(self, node: ast.For) -> ast.AST:
        node.iter = self.visit(node.iter)
        self._assign_target(node.target, None)
        self._loop_body(node)
        return node

    visit_AsyncFor = visit_For  # type: ignore[assignment]

    def visit_While(self, node: ast.While) -> ast.AST:
        self._forget_assigned(node)  # the test too: `while (line := f.readline())`
        node.test = self.visit(node.test)
        self._loop_body(node)
        return node

    def visit_With(self, node: ast.With) -> ast.AST:
        for item in node.items:
            item.context_expr = self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._assign_target(item.optional_vars, None)
        node.body = [self.visit(s) for s in node.body]
        return node

    visit_AsyncWith = visit_With  # type: ignore[assignment]

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.type is not None:
            node.type = self.visit(node.type)
        if node.name:
            self._bind(node.name, None)
        node.body = [self.visit(s) for s in node.body]
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.asname:
                self._bind(alias.asname, _name_node(alias.name, node))
            else:
                self._bind(alias.name.split(".")[0], None)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        for alias in node.names:
            if alias.name != "*" and node.module and not node.level:
                self._bind(alias.asname or alias.name, _name_node(f"{node.module}.{alias.name}", node))
        return node

    def _scoped(self, node: Any, params: ast.arguments | None, body_attr: str) -> Any:
        if params is not None:
            for d in [*params.defaults, *(d for d in params.kw_defaults if d is not None)]:
                self.visit(d)
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        scope: dict[str, ast.AST] = {}
        if params is not None:
            for a in [*params.posonlyargs, *params.args, *params.kwonlyargs, params.vararg, params.kwarg]:
                if a is not None:
                    scope[a.arg] = None  # type: ignore[assignment]
        self.scopes.append(scope)
        try:
            body = getattr(node, body_attr)
            if isinstance(body, list):
                setattr(node, body_attr, [self.visit(s) for s in body])
            else:
                setattr(node, body_attr, self.visit(body))
        finally:
            self.scopes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._bind(node.name, None)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._scoped(node, node.args, "body")

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return self._scoped(node, node.args, "body")

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.bases = [self.visit(b) for b in node.bases]
        return self._scoped(node, None, "body")

    def _comprehension(self, node: Any) -> ast.AST:
        scope: dict[str, ast.AST] = {}
        for gen in node.generators:
            gen.iter = self.visit(gen.iter)
            for name in ast.walk(gen.target):
                if isinstance(name, ast.Name):
                    scope[name.id] = None  # type: ignore[assignment]
        self.scopes.append(scope)
        try:
            for gen in node.generators:
                gen.ifs = [self.visit(i) for i in gen.ifs]
            for field in ("elt", "key", "value"):
                if hasattr(node, field):
                    setattr(node, field, self.visit(getattr(node, field)))
        finally:
            self.scopes.pop()
        return self._fold_comprehension(node)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def _fold_comprehension(self, node: Any) -> ast.AST:
        """`[chr(c) for c in (114, 109)]` (one loop, no condition) as a list of its values."""
        if isinstance(node, (ast.DictComp, ast.SetComp)) or len(node.generators) != 1:
            return node
        gen = node.generators[0]
        items = _const(gen.iter)
        if (
            gen.ifs
            or gen.is_async
            or not isinstance(gen.target, ast.Name)
            or not isinstance(items, (list, str))
        ):
            return node
        if len(items) > MAX_ITEMS or sum(1 for _ in ast.walk(node.elt)) > 50:
            return node
        values = []
        for item in items:
            self.scopes.append({gen.target.id: ast.Constant(value=item)})
            try:
                folded = self.visit(copy.deepcopy(node.elt))
            finally:
                self.scopes.pop()
            value = _const(folded)
            if value is _NO:
                return node
            values.append(value)
        return _node(values, node)

    # -- expressions ---------------------------------------------------------------

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return self._binop(node, node) or node

    def _binop(self, node: ast.BinOp, like: ast.AST) -> ast.AST | None:
        if isinstance(node.op, ast.Div) and (
            _path_value(node.left) is not None or _path_value(node.right) is not None
        ):
            left_path, right_path = _path_text(node.left), _path_text(node.right)
            if left_path is None or right_path is None:
                return None
            self.changed = True
            return _path_node(posixpath.join(left_path, right_path), like)
        left, right = _const(node.left), _const(node.right)
        if left is _NO or right is _NO:
            return None
        try:
            if (
                isinstance(node.op, ast.Add)
                and type(left) is type(right)
                and isinstance(left, (str, bytes, list))
            ):
                value = left + right
            elif isinstance(node.op, ast.Mult) and isinstance(left, (str, bytes)) and isinstance(right, int):
                value = left * right if len(left) * max(right, 0) <= MAX_VALUE else _NO
            elif isinstance(node.op, ast.Mod) and isinstance(left, str) and not _WIDE.search(left):
                value = left % (tuple(right) if isinstance(right, list) else right)
            else:
                return None
        except (TypeError, ValueError, OverflowError):
            return None
        if value is _NO or not _fits(value):
            return None
        self.changed = True
        return _node(value, like)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        value = _const(node.operand)
        if isinstance(node.op, ast.USub) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _node(-value, node)
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        self.generic_visit(node)
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif (
                isinstance(value, ast.FormattedValue)
                and value.conversion == -1
                and value.format_spec is None
                and isinstance(_const(value.value), (str, int))
            ):
                parts.append(str(_const(value.value)))
            else:
                return node
        self.changed = True
        return _node("".join(parts), node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        value = _const(node.value)
        s = node.slice
        if isinstance(value, (str, bytes)) and isinstance(s, ast.Slice):
            bounds = [_const(b) if b is not None else None for b in (s.lower, s.upper, s.step)]
            if all(b is None or isinstance(b, int) and not isinstance(b, bool) for b in bounds):
                self.changed = True
                return _node(value[slice(*bounds)], node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        folded = self._call(node)
        if folded is not None:
            self.changed = True
            return ast.copy_location(folded, node)
        name = _dotted(node.func)
        end = getattr(node, "end_lineno", None)
        if (
            end is not None
            and end > node.lineno
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) in _SENDERS
        ):
            self.changed = True  # the reading has the call on one line
        if name in _RUNNERS and node.args and len(self.executed) < MAX_EXECUTED:
            code = _const(node.args[0])
            if isinstance(code, (str, bytes)):
                self.executed.append(code)
        return node

    def _call(self, node: ast.Call) -> ast.AST | None:
        if node.keywords and not isinstance(node.func, ast.Attribute):
            return None
        func = node.func
        name = _dotted(func)
        last = name.rsplit(".", 1)[-1] if name else None
        path = self._path_call(node, name, last)
        if path is not None:
            return path
        args = [_const(a) for a in node.args]
        # Module and attribute lookups by a string: getattr(os, "system"), __import__("os").
        if name == "getattr" and len(args) == 2 and isinstance(args[1], str) and args[1].isidentifier():
            return ast.Attribute(value=node.args[0], attr=args[1], ctx=ast.Load())
        if (
            name in ("__import__", "importlib.import_module", "import_module")
            and args
            and isinstance(args[0], str)
        ):
            if all(part.isidentifier() for part in args[0].split(".")):
                return _name_node(args[0], node)
            return None
        if node.keywords or any(a is _NO for a in args):
            return None
        value: Any = _NO
        try:
            if name == "chr" and len(args) == 1 and isinstance(args[0], int):
                value = chr(args[0])
            elif name in ("str", "bytes", "bytearray", "list") and len(args) == 1:
                value = _convert(name, args[0])
            elif (
                name == "map"
                and len(node.args) == 2
                and _dotted(node.args[0]) == "chr"
                and isinstance(args[1], list)
            ):
                value = [chr(c) for c in args[1]]
            elif name in ("reversed",) and len(args) == 1 and isinstance(args[0], (str, list)):
                value = list(reversed(args[0]))
            elif (
                last in _DECODERS
                and len(args) == 1
                and isinstance(args[0], (str, bytes))
                and name != "fromhex"
            ):
                value = _DECODERS[last](args[0])
            elif name in ("codecs.decode", "codecs.encode") and len(args) == 2 and args[1] in _CODECS:
                value = codecs.decode(args[0], args[1]) if isinstance(args[0], (str, bytes)) else _NO
            elif name in ("zlib.decompress",) and len(args) == 1 and isinstance(args[0], bytes):
                value = zlib.decompressobj().decompress(args[0], MAX_VALUE)
            elif isinstance(func, ast.Attribute):
                value = self._method(func, args)
        except (TypeError, ValueError, OverflowError, LookupError, binascii.Error, zlib.error, UnicodeError):
            return None
        if value is _NO or not _fits(value):
            return None
        return _node(value, node)

    def _path_call(self, node: ast.Call, name: str | None, last: str | None) -> ast.AST | None:
        """`Path.home()`, `expanduser('~/x')`, `Path(...).joinpath(...)` and the like, as the
        path they make (`~` kept as written): a key file read by any spelling reads as one."""
        if node.keywords:
            return None
        func = node.func
        owner = name.rsplit(".", 2)[-2] if name is not None and "." in name else None
        if (
            last == "home" and not node.args and owner in _PATH_TYPES
        ):  # Path.home(), not a home() of one's own
            self.changed = True
            return _path_node("~", node)
        if name in _JOINS and node.args:  # os.path.join(Path.home(), '.aws') as well as of strings
            parts = [_path_text(a) for a in node.args]
            if all(p is not None for p in parts):
                self.changed = True
                return _node(posixpath.join(*parts), node)  # type: ignore[arg-type]
            return None
        if name in _EXPANDUSER and len(node.args) == 1:
            text = _path_text(node.args[0])
            if text is not None:
                self.changed = True
                return _node(text, node) if _const(node.args[0]) is not _NO else _path_node(text, node)
            return None
        if isinstance(func, ast.Attribute):
            base = _path_value(func.value)
            if base is None:
                return None
            if func.attr in ("expanduser", "absolute", "resolve") and not node.args:
                self.changed = True
                return _path_node(base, node)
            if func.attr == "joinpath":
                parts = [_path_text(a) for a in node.args]
                if all(p is not None for p in parts):
                    self.changed = True
                    return _path_node(posixpath.join(base, *parts), node)  # type: ignore[arg-type]
            return None
        if last in _PATH_TYPES and len(node.args) > 1:  # Path('~', '.aws'): one part
            parts = [_path_text(a) for a in node.args]
            if all(p is not None for p in parts):
                self.changed = True
                return _path_node(posixpath.join(*parts), node)  # type: ignore[arg-type]
        return None

    def _method(self, func: ast.Attribute, args: list[Any]) -> Any:
        obj = _const(func.value)
        method = func.attr
        if isinstance(obj, str) and method in ("join", "replace", "format"):
            # Refused when the result could be huge: joined, replaced or formatted sizes multiply.
            parts = args[0] if method == "join" and args and isinstance(args[0], list) else args
            grown = len(obj) * max(1, len(parts)) + sum(
                len(a) if isinstance(a, (str, bytes)) else 20 for a in parts
            )
            if (
                method == "format"
                and _WIDE.search(obj)
                or method != "join"
                and len(obj) * (1 + grown) > 50 * MAX_VALUE
            ):
                return _NO
            if method == "join" and grown > 2 * MAX_VALUE:
                return _NO
        if isinstance(obj, str):
            if (
                method == "join"
                and len(args) == 1
                and isinstance(args[0], list)
                and all(isinstance(a, str) for a in args[0])
            ):
                return obj.join(args[0])
            if method == "split" and len(args) <= 2:
                return obj.split(*args)
            if method == "encode" and all(isinstance(a, str) for a in args):
                return obj.encode(*args)
            if method in _STR_METHODS and all(isinstance(a, (str, int)) for a in args):
                return getattr(obj, method)(*args)
        if isinstance(obj, bytes):
            if method == "decode" and all(isinstance(a, str) for a in args):
                return obj.decode(*args) if args else obj.decode("utf-8", "replace")
            if (
                method == "join"
                and len(args) == 1
                and isinstance(args[0], list)
                and all(isinstance(a, bytes) for a in args[0])
            ):
                joined = obj.join(args[0])
                return joined if len(joined) <= 2 * MAX_VALUE else _NO
        if (
            _dotted(func.value) == "bytes"
            and method == "fromhex"
            and len(args) == 1
            and isinstance(args[0], str)
        ):
            return bytes.fromhex(args[0])
        return _NO


def _convert(name: str, value: Any) -> Any:
    if name == "str" and isinstance(value, (str, int, float)):
        return str(value)
    if name in ("bytes", "bytearray") and isinstance(value, list) and all(isinstance(v, int) for v in value):
        return bytes(value)
    if name == "list" and isinstance(value, (str, list)):
        return list(value)
    return _NO
