"""Allowed roots: the folders whose files an MCP client may make the server read or write.

Why: the caller of a tool is an agent, or over HTTP anyone holding the token, not the user at a
terminal. Without a boundary, `run_dir="../../elsewhere"` wrote a run anywhere the server could
write, and a dataset folder holding `rows.csv -> /etc/shadow` answered with that file's first line
inside a "cannot tell the format" error. So every path a tool takes is resolved (`..` and symlinks
included) and must lie inside the allowed roots. The OPERATOR (whoever starts the server) sets
them; a client's MCP roots can only NARROW them, except over stdio with no FINETUNE_MCP_ROOTS,
where the client is the user's own desktop app and its roots stand for the operator's choice:

- `FINETUNE_MCP_HOME` always (the server's own folder: runs, jobs.db);
- over HTTP: the folders in `FINETUNE_MCP_ROOTS` (separated by `os.pathsep`), narrowed to the
  client's roots when it declares any (a client root inside an operator root, or an operator root
  inside a client root, counts; `file:///` reaches nothing more). Never the home folder or cwd.
- over stdio with `FINETUNE_MCP_ROOTS` set: those folders plus the user's home folder and the
  working directory, narrowed to the client's roots the same way;
- over stdio without it: the client's roots, or when it declares none the user's home folder and
  the working directory (the server is then the user's own local tool).

Whatever the source except the operator's own `FINETUNE_MCP_ROOTS`, a folder that is too broad
is dropped, never taken as a root (`too_broad`): `/`, a system folder (/etc, /usr, /proc, ...) or
an ancestor of the user's home folder. Desktop clients often start MCP servers with cwd `/`, and a
client root `file:///` would otherwise open the whole file system. The server logs the effective
roots at start (`describe_operator_roots`). docs/security.md is the operator's page on this.

A local folder is checked entry by entry (each file and subfolder resolved), so a symlink inside
an allowed folder that points outside is refused before anything is opened. A model or dataset
value that is not an existing local path and looks like a Hugging Face id (`owner/name`) is not a
path and is not confined. The check happens before anything is read or created; the error names
the path, the allowed roots and how to extend them, and nothing of any file's content.

The CLI (`finetune-mcp train ...`, run by the user as themselves) is not confined: only the MCP
tools call this (`tools.roots` gathers the roots, `kinds.start_job` and the tools check).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune_mcp.errors import PathAccessError

ROOTS_ENV = "FINETUNE_MCP_ROOTS"

# A Hugging Face repo id: `name` or `owner/name`, each part starting with a letter or digit.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class LocalPath:
    """One path-valued field of a request. `hub_id_ok`: the field may name a Hugging Face repo
    instead (a model or dataset); a run directory or an adapter folder is always a path."""

    field: str
    value: str | None
    hub_id_ok: bool = False


@dataclass(frozen=True)
class AllowedRoots:
    """The folders one client's requests may reach, resolved."""

    folders: tuple[Path, ...]

    @classmethod
    def for_client(cls, home: Path, declared: Sequence[Path] | None, *, local: bool,
                   env: Mapping[str, str] = os.environ) -> AllowedRoots:
        """The roots for a client: `declared` are its MCP roots (None: it declares none); `local`
        is true over stdio (see the module docstring for the rule)."""
        operator = operator_roots(env)
        client = _resolved(declared) if declared else None
        if local and not operator:  # the client's roots stand for the user's choice, unless too broad
            chosen = [folder for folder in client or [] if not too_broad(folder)] or local_defaults()
        else:  # the client's roots narrow what the operator allowed (`/` narrows nothing)
            offered = [*operator, *(local_defaults() if local else [])]
            chosen = offered if client is None else _narrow(offered, client)
        return cls(tuple(dict.fromkeys([*_resolved([home]), *chosen])))

    def contains(self, path: Path) -> bool:
        """Whether `path`, resolved, lies inside one of the roots."""
        resolved = path.expanduser().resolve()
        return any(resolved.is_relative_to(folder) for folder in self.folders)

    def check(self, paths: Iterable[LocalPath]) -> None:
        """Refuse the first path outside the roots (a PathAccessError); reads and creates nothing."""
        for item in paths:
            if item.value is None or (item.hub_id_ok and _is_hub_id(item.value)):
                continue
            path = Path(item.value).expanduser()
            self._require(item.field, path)
            if path.is_dir():
                for folder, subfolders, files in os.walk(path):
                    for name in (*subfolders, *files):
                        self._require(item.field, Path(folder) / name)

    def _require(self, field: str, path: Path) -> None:
        if not self.contains(path):
            roots = ", ".join(str(folder) for folder in self.folders)
            raise PathAccessError(
                f"{path} is outside the folders this server may use ({roots}); nothing was read or created. "
                f"Use a path inside one of them, or allow its folder: add it to {ROOTS_ENV} in the server's "
                f"environment (folders separated by '{os.pathsep}'), or declare it as a root in the MCP client",
                field=field)


def _is_hub_id(value: str) -> bool:
    """A Hugging Face id rather than a path: no such local file or folder, and shaped like one."""
    return not os.path.lexists(Path(value).expanduser()) and _HUB_ID.match(value) is not None


# System folders: never a root, and nothing under the first group either (what a model or dataset
# would never be, and what a hostile request would want to read).
_SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                 "/libx32", "/System", "/private/etc", "/private/var")
_SYSTEM_FOLDERS = frozenset({"/", "/home", "/Users", "/var", "/tmp", "/private", "/private/tmp", "/opt", "/mnt",
                             "/media", "/srv", "/run", "/root", "/Volumes", "/Library", "/snap", *_SYSTEM_TREES})


def too_broad(folder: Path) -> bool:
    """A folder never taken as a root from a client or a fallback: `/`, a system folder (or inside
    /etc, /usr, /proc, ...), or an ancestor of the user's home folder (which holds it and more)."""
    resolved, user_home = folder.expanduser().resolve(), Path.home().resolve()
    if resolved == user_home:  # the home folder itself is fine, even /root, unless it is `/`
        return str(resolved) == "/"
    return (str(resolved) in _SYSTEM_FOLDERS or any(resolved.is_relative_to(tree) for tree in _SYSTEM_TREES)
            or user_home.is_relative_to(resolved))


def operator_roots(env: Mapping[str, str] = os.environ) -> list[Path]:
    """The folders of FINETUNE_MCP_ROOTS, resolved: the operator's choice, taken as given."""
    return _resolved(Path(p) for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip())


def local_defaults() -> list[Path]:
    """Over stdio: the user's home folder and the working directory, each unless too broad."""
    return [folder for folder in _resolved([Path.home(), Path.cwd()]) if not too_broad(folder)]


def describe_operator_roots(home: Path, *, local: bool, env: Mapping[str, str] = os.environ) -> str:
    """One line for the start-up log: what this server allows before any client declares roots."""
    parts = [f"FINETUNE_MCP_HOME {home.expanduser().resolve()}"]
    given = operator_roots(env)
    if given:
        parts.append(f"{ROOTS_ENV} {', '.join(map(str, given))}")
    if local:
        defaults = local_defaults()
        dropped = [str(f) for f in _resolved([Path.home(), Path.cwd()]) if f not in defaults]
        parts.append("the user's home folder and cwd: " + (", ".join(map(str, defaults)) or "none")
                     + (f" (not {', '.join(dropped)}: too broad to be a root)" if dropped else "")
                     + ("; narrowed by the client's roots" if given else
                        "; replaced by the client's roots when it declares any"))
    else:
        parts.append("narrowed by the client's roots when it declares any")
    return "allowed roots: " + "; ".join(parts)


def _resolved(folders: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(folder.expanduser().resolve() for folder in folders))


def _narrow(offered: Sequence[Path], client: Sequence[Path]) -> list[Path]:
    """The part of `offered` inside the client's roots: per pair, the deeper folder, when one holds the other."""
    narrowed = []
    for mine in offered:
        for theirs in client:
            if theirs.is_relative_to(mine):
                narrowed.append(theirs)
            elif mine.is_relative_to(theirs):
                narrowed.append(mine)
    return narrowed
