"""Allowed roots: the folders whose files an MCP client may make the server read or write.

Why: the caller of a tool is an agent, or over HTTP anyone holding the token, not the user at a
terminal. Without a boundary, `run_dir="../../elsewhere"` wrote a run anywhere the server could
write, and a dataset folder holding `rows.csv -> /etc/shadow` answered with that file's first line
inside a "cannot tell the format" error. So every path a tool takes is resolved (`..` and symlinks
included) and must lie inside one of:

- `FINETUNE_MCP_HOME`;
- the folders in `FINETUNE_MCP_ROOTS` (separated by `os.pathsep`);
- the roots the MCP client declares;
- over stdio, when the client declares none: the user's home folder and the server's working
  directory (the server is then the user's own local tool). Never over HTTP.

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
        is true over stdio, where a client without roots also gets the home folder and the cwd."""
        folders = [home, *(Path(p) for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip())]
        folders += declared or []
        if local and not declared:
            folders += [Path.home(), Path.cwd()]
        resolved = (folder.expanduser().resolve() for folder in folders)
        return cls(tuple(dict.fromkeys(resolved)))

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
