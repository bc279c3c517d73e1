"""The cache of imported GGUF files: `$FINETUNE_MCP_HOME/models/gguf/<content hash>/`, one Hugging Face
folder per distinct file content (the same file copied elsewhere or renamed is converted once).

A folder is trusted only when it exists under its final name: it is built in a temporary sibling and
renamed into place when complete (one atomic rename), so a crash mid-conversion leaves a `.tmp-*` folder
that no later call reads (and the next conversion removes). Conversions of one file are serialised by a
lock file, so two jobs starting at once convert it once. Hashing reads the whole file (~0.3 s per
100 MB); the hash is remembered per (path, size, mtime) in `hashes.json` so a large file is hashed once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

SOURCE_RECORD = "gguf_source.json"
_CHUNK = 8 * 1024 * 1024


def cache_root(home: Path) -> Path:
    return Path(home) / "models" / "gguf"


def content_hash(path: Path, root: Path) -> str:
    """The file's SHA-256 (first 32 hex digits), from the memo when the file is unchanged."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_file = root / "hashes.json"
    memo = _read_json(memo_file)
    if isinstance(memo.get(key), str):
        return memo[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()[:32]
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "hashes.lock"):
        memo = {**_read_json(memo_file), key: value}
        _write_json_atomic(memo_file, memo)
    return value


def cached_folder(root: Path, digest: str) -> Path | None:
    """The finished folder for `digest`, if a conversion completed."""
    folder = root / digest
    return folder if (folder / SOURCE_RECORD).is_file() else None


def build_once(root: Path, digest: str, build: Callable[[Path], dict], record: dict) -> Path:
    """The folder for `digest`, built by `build(tmp_folder)` unless it exists; `record` (+ what `build`
    returns) is written as gguf_source.json before the rename, so a folder without it never appears."""
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{digest}.lock"):
        done = cached_folder(root, digest)
        if done is not None:
            return done
        for stale in root.glob(f".tmp-{digest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{digest}-{os.getpid()}"
        tmp.mkdir()
        try:
            extra = build(tmp)
            _write_json_atomic(tmp / SOURCE_RECORD, {**record, **extra})
            final = root / digest
            shutil.rmtree(final, ignore_errors=True)  # an incomplete folder (no record) from an older layout
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final


def read_record(folder: Path) -> dict:
    return _read_json(Path(folder) / SOURCE_RECORD)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
