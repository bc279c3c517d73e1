"""User functions by consent: which dotted-path callables a config may name, before anything imports them.

A config may name a Python callable by path (`entropy.function = "my_pkg.weights:fn"`, the
enhancement's `example_weight.function`). Importing a module runs its code, and calling the
function runs more, so a path is honoured only when the operator allowed its module:
`FINETUNE_MCP_USER_FUNCTIONS=my_pkg.weights,other_pkg` (comma-separated module names; a name
allows the module and everything under it, so `my_pkg` allows `my_pkg.weights`). Unset: no user
function loads; the built-in names always work.

Two places ask, both before any import: the start checks in the server (`require_allowed`, then
`check_resolves`, which finds the module and reads its source without running it, so a typo fails
at start), and the worker right where it imports (`load_callable`). The module sits in the lowest
layer, imports nothing of the project and no torch, so config, train, enhance and kernels all read
the same rule. Its errors are `UserFunctionError` (a ValueError); the start checks turn them into
the project's ConfigError.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

ENV = "FINETUNE_MCP_USER_FUNCTIONS"


class UserFunctionError(ValueError):
    """A named user function is not allowed, cannot be found, or is not a callable."""


def split_path(path: str) -> tuple[str, str]:
    """'pkg.mod:fn' (or 'pkg.mod.fn') → ('pkg.mod', 'fn')."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    return module, attr


def allowed_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The operator's list from FINETUNE_MCP_USER_FUNCTIONS (empty when unset)."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    return tuple(dict.fromkeys(part.strip().rstrip(".") for part in raw.split(",") if part.strip()))


def is_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    """Whether `module` is one of `allowed` or inside one of them (a package prefix, by whole names)."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


def require_allowed(path: str, what: str, *, builtins: tuple[str, ...] = (),
                    environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(module, attribute) of `path` when the operator allowed its module; else a UserFunctionError
    that says how to allow it. Imports nothing. `what` names the setting ("entropy weight function")."""
    module, attr = split_path(path)
    allowed = allowed_modules(environ)
    if module and attr and is_allowed(module, allowed):
        return module, attr
    now = f"it allows {', '.join(allowed)}" if allowed else "it is not set"
    alternatives = f", or use a built-in ({', '.join(builtins)})" if builtins else ""
    raise UserFunctionError(
        f"{what} {path!r} is not allowed: functions named by path load only from modules the operator lists in "
        f"{ENV} ({now}); to allow this one, set {ENV}={','.join((*allowed, module or path))} in the server's "
        f"environment and restart it{alternatives}"
    )


def check_resolves(path: str, what: str) -> None:
    """Check, without running any of its code, that `path`'s module can be found on this Python path
    and defines the attribute; a UserFunctionError naming the problem otherwise. A module whose
    source cannot be read (compiled, or attributes made at import time) passes when it is found."""
    module, attr = split_path(path)
    spec = _find_spec(module)
    if spec is None:
        raise UserFunctionError(
            f"{what} {path!r}: no module {module!r} on the server's Python path ({_where()}); check the "
            "spelling, install the package, or add its folder to PYTHONPATH in the server's environment")
    tree = _source_tree(spec)
    if tree is None:
        return
    kind = _binding(tree, attr)
    if kind is None:
        raise UserFunctionError(
            f"{what} {path!r}: module {module!r} ({spec.origin}) defines no {attr!r}; check the spelling "
            "('package.module:function')")
    if kind == "value":
        raise UserFunctionError(f"{what} {path!r}: {attr!r} in {module!r} is not a function")


def load_callable(path: str, what: str, *, builtins: tuple[str, ...] = (),
                  environ: Mapping[str, str] | None = None) -> Callable[..., Any]:
    """The worker's import of a user function: the allow-list first (nothing is imported for a path
    the operator did not allow), then the import and the callable check."""
    module, attr = require_allowed(path, what, builtins=builtins, environ=environ)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserFunctionError(
            f"{what} {path!r} cannot be imported ({exc}); give 'package.module:function' importable from the "
            "worker's Python path") from exc
    if not callable(fn):
        raise UserFunctionError(f"{what} {path!r} is not callable")
    return fn


def _where() -> str:
    return "PYTHONPATH=" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "no PYTHONPATH set"


def _find_spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """The module's spec, found package by package without importing any of them (find_spec of a
    dotted name would import its parents)."""
    if getattr(sys.modules.get(module), "__spec__", None) is not None:
        return sys.modules[module].__spec__  # already imported here (os.path is no submodule of a package)
    parts = module.split(".")
    search: list[str] | None = None
    spec = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__spec__", None) is not None:
            spec = loaded.__spec__
        elif depth == 1:
            try:
                spec = importlib.util.find_spec(name)  # a top-level name imports nothing
            except (ImportError, ValueError):
                return None
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            return None
        if depth < len(parts):
            search = list(spec.submodule_search_locations or [])
            if not search:
                return None  # a module, not a package: it has no submodules
    return spec


def _source_tree(spec: importlib.machinery.ModuleSpec) -> ast.Module | None:
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None
    try:
        with open(origin, encoding="utf-8") as handle:
            return ast.parse(handle.read(), origin)
    except (OSError, SyntaxError, ValueError):
        return None


def _binding(tree: ast.Module, name: str) -> str | None:
    """How the module binds `name` at top level: 'callable' (def, class, lambda), 'value' (a literal),
    'unknown' (an import, another expression, `from x import *`, a module `__getattr__`), or None."""
    found: str | None = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return "callable"
            if node.name == "__getattr__":
                found = found or "unknown"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if alias.name == "*" or bound == name:
                    found = "unknown"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = node.value
                if isinstance(value, ast.Lambda):
                    return "callable"
                found = "value" if isinstance(value, (ast.Constant, ast.List, ast.Dict, ast.Tuple, ast.Set)) \
                    else "unknown"
        elif not isinstance(node, ast.Expr):
            found = found or ("unknown" if _binds_somewhere(node, name) else None)
    return found


def _binds_somewhere(node: ast.AST, name: str) -> bool:
    """A name bound inside an if / try / with / for at top level (conditional definitions)."""
    for child in ast.walk(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == name:
            return True
        if isinstance(child, ast.Name) and child.id == name and isinstance(child.ctx, ast.Store):
            return True
        if isinstance(child, ast.alias) and ((child.asname or child.name.split(".")[0]) == name or child.name == "*"):
            return True
    return False
