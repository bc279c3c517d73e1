"""Write failures, named for the user: a full disk says where and how much is left.

A run writes a lot (checkpoints, TensorBoard, the adapter) into FINETUNE_MCP_HOME; when that disk
fills, every layer sees a different face of the same fault: `OSError(ENOSPC)` from Python,
`sqlite3.OperationalError("database or disk is full")` from the job store, a RuntimeError or a
SafetensorError whose text carries "No space left on device" from torch / safetensors, or torch's zip
writer's "unexpected pos" with no errno at all. `is_disk_full` recognises the first ones (through
`__cause__` / `__context__` too), `short_write_on_full_disk` the last one when the disk has (almost)
nothing free; `disk_full_message` is the one wording
("disk full at <path>: free N GB; free space or set FINETUNE_MCP_HOME to another disk").

`SpaceReserve` keeps a few bytes of the disk aside (a plain file) so that the last word still fits
when the disk is full: the worker's `error` event, the manager's record of the failure in SQLite.
Releasing it is deleting the file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
WRITE_ERRNOS = DISK_FULL_ERRNOS | {errno.EROFS, errno.EIO, errno.EFBIG}
_DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded", "storagefull",
                   "[errno 28]")
HOME_HINT = "free space or set FINETUNE_MCP_HOME to another disk"
# torch's checkpoint writer (a zip) reports a short write as "[enforce fail at inline_container.cc:…] .
# unexpected pos N vs M", without the errno; on a disk with (almost) nothing free that is the disk filling.
_SHORT_WRITE_TEXT = "unexpected pos"
SHORT_WRITE_FULL_BELOW = 1 << 20  # free bytes under which a short write counts as a full disk


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent); None if unknown."""
    here = Path(path)
    for candidate in (here, *here.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def format_free(free: int | None) -> str:
    return "unknown" if free is None else f"{free / 1e9:.2f} GB"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def says_disk_full(text: str) -> bool:
    """Whether `text` (an error message, a log tail) carries one of the disk-full wordings."""
    lowered = text.lower()
    return any(marker in lowered for marker in _DISK_FULL_TEXT)


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT however it is wrapped (OSError, sqlite3, torch, safetensors)."""
    return any((isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS) or says_disk_full(str(link))
               for link in _chain(exc))


def write_error(exc: BaseException) -> OSError | None:
    """The OSError of a failed write (disk full, read-only, I/O error) in `exc`'s chain, if any."""
    return next((link for link in _chain(exc) if isinstance(link, OSError) and link.errno in WRITE_ERRNOS), None)


def disk_full_message(path: str | os.PathLike[str]) -> str:
    return f"disk full at {path}: free {format_free(free_bytes(path))}; {HOME_HINT}"


def short_write_on_full_disk(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """A short write reported without an errno (torch's zip writer) while the disk at `path` is full."""
    if not any(_SHORT_WRITE_TEXT in str(link).lower() for link in _chain(exc)):
        return False
    free = free_bytes(path)
    return free is not None and free < SHORT_WRITE_FULL_BELOW


def write_failure_message(exc: BaseException, path: str | os.PathLike[str]) -> str | None:
    """The user's wording of a write failure under `path`, or None when `exc` is not one."""
    if is_disk_full(exc) or short_write_on_full_disk(exc, path):
        return disk_full_message(path)
    oserror = write_error(exc)
    if oserror is None:
        return None
    target = oserror.filename or path
    return (f"could not write to {target}: {oserror.strerror or oserror} (free {format_free(free_bytes(path))} "
            f"at {path}); check the disk, or set FINETUNE_MCP_HOME to another one")


class SpaceReserve:
    """A file of `size` bytes kept aside on a disk; `release()` deletes it to make room for a last
    write, `ensure()` (re)creates it when the disk has room. Never raises."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = Path(path)
        self.size = size

    def ensure(self) -> bool:
        try:
            if self.path.is_file() and self.path.stat().st_size >= self.size:
                return True
            free = free_bytes(self.path.parent)
            if free is not None and free < 4 * self.size:  # never be the one who fills the disk
                return False
            with self.path.open("wb") as fh:
                fh.write(b"\0" * self.size)
            return True
        except OSError:
            self.release()
            return False

    def release(self) -> bool:
        """Delete the reserve; True if there was one."""
        try:
            self.path.unlink()
        except OSError:
            return False
        return True
