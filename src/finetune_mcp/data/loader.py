"""Datasets in, one normalised shape out: find the data, read it, check every row, subset and split.

The MCP server calls `validate_dataset` when a job starts, before any worker exists, so this module
imports only the standard library and pydantic at the top; pyarrow and `datasets` are imported
inside the functions that read Parquet or the Hub.

Every row becomes one of three shapes, whatever the input format:
  {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}   conversational
  {"prompt": str, "completion": str}   non-conversational prompt/completion (loss on the completion)
  {"text": str}                        plain language modelling (loss on every token)
Rows with a `metadata` object (ArangoDB Q&A exports) keep it: `metadata_filters` read it.
`data.formats` knows the formats (a registry, one module each); this module knows files, sources
and the subset/split.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import random
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune_mcp.data.formats import (
    NESTED_FIELDS,
    check_accepted,
    detect_format,
    normalize_row,
    passes_filters,
    short_keys,
)
from finetune_mcp.data.hub import (
    check_hub,
    hub_snapshot,
    in_datasets_cache,
    load_hub_rows,
    offline,
    split_files,
)
from finetune_mcp.errors import DatasetError

if TYPE_CHECKING:
    from finetune_mcp.config import DataConfig

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# owner/name on the Hub: letters, digits, '-', '_', '.'; no file suffix (that would be a missing file).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives: a local file, a local folder of files, or a Hugging Face hub id."""

    kind: Literal["file", "folder", "hub"]
    location: str
    files: tuple[Path, ...] = ()


@dataclass
class LoadedData:
    """Normalised examples ready for `tokenize_examples`, and how they were obtained."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    format: str  # the input format, or "mixed" when files of a folder differ
    source: str
    rows_read: int  # valid rows in the input
    rows_kept: int  # after metadata filters and max_examples (= len(train) + len(validation))
    removed_by_filter: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    identities: dict[str, dict[str, int | str]] = field(default_factory=dict)  # file -> file_identity

    def summary(self) -> dict[str, Any]:
        """What the server and the run's spec report about the data."""
        return {
            "source": self.source,
            "format": self.format,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "train_rows": len(self.train),
            "validation_rows": len(self.validation),
            "removed_by_filter": dict(self.removed_by_filter),
            "files": list(self.files),
        }


def resolve_dataset_source(dataset: str) -> DatasetSource:
    """Decide whether `dataset` is a local file, a local folder or a hub id, without any network."""
    text = dataset.strip()
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DatasetError(
                f"unsupported file type {path.suffix or '(no suffix)'!r}; convert it to one of "
                f"{', '.join(SUFFIXES)}",
                path=path,
            )
        return DatasetSource("file", str(path), (path,))
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise DatasetError(
                f"the folder holds no {', '.join(SUFFIXES)} files; put the data files there or pass a file",
                path=path,
            )
        return DatasetSource("folder", str(path), files)
    looks_local = text.startswith((".", "/", "~")) or path.suffix.lower() in SUFFIXES or "\\" in text
    if not looks_local and _HUB_ID.match(text):
        return DatasetSource("hub", text)
    raise DatasetError(
        "no such file or folder (and it does not look like a Hugging Face dataset id 'owner/name'); "
        "check the path",
        path=text,
    )


def _data_files(folder: Path) -> tuple[Path, ...]:
    """The data files of a folder (recursive, hidden ones skipped). ArangoDB export folders also hold
    `*.stats.json` summaries and other files: when `qa_unsloth_*` files are there, only those count."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.lower().endswith(".stats.json")
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    exports = [p for p in files if p.name.startswith("qa_unsloth_")]
    return tuple(exports or files)


def load_examples(config: DataConfig) -> LoadedData:
    """Read, check, filter, subset (seeded) and split the dataset that `config` names."""
    source = resolve_dataset_source(config.dataset)
    identities: dict[str, dict[str, int | str]] = {}
    if source.kind == "hub":
        parts = _read_hub(source.location, config)
    else:
        expected = config.dataset_files
        if expected is not None and sorted(map(str, source.files)) != sorted(expected):
            raise DatasetError(f"the data files changed since the start check ({len(expected)} then, "
                               f"{len(source.files)} now); nothing was trained on; start the job again",
                               path=source.location)
        parts = []
        for path in source.files:
            raw, identities[str(path)] = read_checked(path, None if expected is None else expected[str(path)])
            parts.append(_read_file(path, raw, config))
    examples = [example for part in parts for example in part[0]]
    formats = {part[1] for part in parts}
    rows_read = sum(part[2] for part in parts)
    removed: dict[str, int] = {}
    for part in parts:
        for name, count in part[3].items():
            removed[name] = removed.get(name, 0) + count
    if not examples:
        raise DatasetError(_empty_message(rows_read, removed), path=source.location)
    examples = check_accepted(config.accepted_formats, examples, formats, source.location)  # ranking: one group per query
    train, validation = subset_and_split(examples, config.max_examples, config.validation_split,
                                         config.data_split_seed)
    return LoadedData(
        train=train,
        validation=validation,
        format=next(iter(formats)) if len(formats) == 1 else "mixed",
        source=source.location,
        rows_read=rows_read,
        rows_kept=len(train) + len(validation),
        removed_by_filter=removed,
        files=[str(path) for path in source.files],
        identities=identities,
    )


def read_checked(path: Path, expected: dict[str, int | str] | None) -> tuple[bytes, dict[str, int | str]]:
    """The bytes of a data file and its identity (device, inode, size, mtime, SHA-256). Opened without
    following a link; with `expected` (what the start check recorded) a file that differs is refused:
    the worker must train on what the server checked, not on a file swapped since (for a link to
    /etc/shadow, or other valid rows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DatasetError("is a symbolic link now; nothing of it was read; point at the file itself and start "
                               "the job again", path=path) from None
        raise DatasetError(f"cannot open it ({exc.strerror}); check the path and permissions", path=path) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError("is not a regular file; nothing of it was read", path=path)
        raw = handle.read()
    identity: dict[str, int | str] = {"device": info.st_dev, "inode": info.st_ino, "size": info.st_size,
                                      "mtime_ns": info.st_mtime_ns, "sha256": hashlib.sha256(raw).hexdigest()}
    if expected is not None and identity != expected:
        changed = ", ".join(k for k in identity if identity[k] != expected.get(k))
        raise DatasetError(f"the file changed since the job's start check ({changed} differ); nothing of it was "
                           "used; start the job again to check the new data", path=path)
    return raw, identity


def validate_dataset(config: DataConfig) -> dict[str, Any]:
    """Check the dataset at job start: local data is read and checked in full; a hub id is only
    looked up (cache when offline, a short metadata request otherwise) so this never hangs."""
    return check_dataset(config)[0]


def check_dataset(config: DataConfig) -> tuple[dict[str, Any], dict[str, dict[str, int | str]]]:
    """`validate_dataset`'s summary, and the identity of each local file read (`read_checked`):
    what a job start hands its worker so it reads the very same files."""
    source = resolve_dataset_source(config.dataset)
    if source.kind == "hub":
        return check_hub(source.location, config.dataset_split), {}
    loaded = load_examples(config)
    summary = loaded.summary()
    summary["kind"] = source.kind
    return summary, loaded.identities


def subset_and_split(
    examples: list[dict[str, Any]], max_examples: int | None, validation_split: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One seeded shuffle; the first `max_examples` are kept (so a smaller subset is a prefix of a
    larger one), the first `validation_split` of those held out. At least one row always trains."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if max_examples is not None:
        order = order[:max_examples]
    n_val = int(len(order) * validation_split) if validation_split > 0 else 0
    n_val = min(n_val, len(order) - 1)
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


# ---------------------------------------------------------------------------------------------- files


def _read_file(path: Path, raw: bytes, config: DataConfig) -> tuple[list[dict], str, int, dict[str, int]]:
    """Parse one file's bytes; return its normalised rows, its format, rows read and rows removed per filter."""
    rows = list(_iter_rows(path, raw))
    if not rows:
        raise DatasetError("the file is empty (no rows); add examples or remove the file", path=path)
    return _normalize_rows(rows, config, path)


def _normalize_rows(
    rows: list[tuple[int, Any]], config: DataConfig, path: Path | str
) -> tuple[list[dict], str, int, dict[str, int]]:
    first_line, first = rows[0]
    forced = config.dataset_format != "auto"
    accepted = config.accepted_formats
    fmt = config.dataset_format if forced else detect_format(first, path=path, line=first_line, accepted=accepted)
    filters = config.metadata_filters
    filtering = bool(filters.model_dump(exclude_defaults=True))
    if filtering and not (isinstance(first, dict) and isinstance(first.get("metadata"), dict)):
        raise DatasetError(
            f"metadata_filters apply to rows with a 'metadata' object (ArangoDB Q&A exports), but line "
            f"{first_line} has none ({fmt} format); remove metadata_filters or pass an ArangoDB export",
            path=path,
        )
    out: list[dict] = []
    removed: dict[str, int] = {}
    for line, row in rows:
        if not forced:
            row_fmt = detect_format(row, path=path, line=line, accepted=accepted)
            if row_fmt != fmt:
                raise DatasetError(
                    f"this row is in {row_fmt} format but the file starts in {fmt} format (line {first_line}); "
                    "one file must hold one format: split the file or fix the row",
                    path=path,
                    line=line,
                )
        example = normalize_row(row, fmt, path=path, line=line)
        failed = passes_filters(example, filters, path=path, line=line) if filtering else None
        if failed is not None:
            removed[failed] = removed.get(failed, 0) + 1
            continue
        out.append(example)
    return out, fmt, len(rows), removed


def _iter_rows(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    """(1-based line or row number, row) for every row of a JSONL / JSON / CSV / Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path, _read_text(path, raw))
    elif suffix == ".json":
        yield from _json_rows(path, raw)
    elif suffix == ".csv":
        yield from _csv_rows(path, raw)
    else:
        yield from _parquet_rows(path, raw)


def _read_text(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8", path=path) from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"invalid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
                path=path,
                line=number,
            ) from None


def _json_rows(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    text = _read_text(path, raw)
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json
            yield from _jsonl_rows(path, text)
            return
        raise DatasetError(
            f"invalid JSON ({exc.msg} at column {exc.colno}); the file must be a JSON list of objects, "
            '{"data": [...]}, or JSON Lines',
            path=path,
            line=exc.lineno,
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DatasetError(
            f"top level is a {type(data).__name__}; expected a list of objects or {{\"data\": [...]}}",
            path=path,
        )
    yield from enumerate(data, start=1)


def _csv_rows(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(_read_text(path, raw).splitlines(keepends=True))
    for row in reader:
        if None in row:
            raise DatasetError(
                f"row has more cells than the header has columns ({short_keys(reader.fieldnames or [])}); quote "
                "cells that hold commas",
                path=path,
                line=reader.line_num,
            )
        yield reader.line_num, {k: _maybe_json(k, v) for k, v in row.items() if v is not None}


def _parquet_rows(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants for a damaged file
        raise DatasetError(f"cannot read Parquet ({exc}); re-export the file", path=path) from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, {k: _maybe_json(k, v) for k, v in row.items() if v is not None}


def _maybe_json(key: str, value: Any) -> Any:
    """CSV / Parquet cells hold nested fields (messages, metadata) as JSON text; decode those."""
    if key in NESTED_FIELDS and isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _empty_message(total: int, removed: dict[str, int]) -> str:
    if total and removed:
        parts = ", ".join(f"{n} by metadata_filters.{name}" for name, n in removed.items())
        return f"all {total} rows were removed by the filters ({parts}); loosen the filters"
    return "the dataset holds no rows; add examples"


def _read_hub(repo_id: str, config: DataConfig) -> list[tuple[list[dict], str, int, dict[str, int]]]:
    """Rows of a hub dataset. Offline, a downloaded snapshot that `datasets` never prepared is read
    file by file like a local folder (errors then name the file and line)."""
    snapshot = hub_snapshot(repo_id)
    if snapshot is not None and offline() and not in_datasets_cache(repo_id):
        files = split_files(_data_files(snapshot), snapshot, config.dataset_split, repo_id)
        return [_read_file(path, path.read_bytes(), config) for path in files]  # cache files are links to blobs
    return [_normalize_rows(load_hub_rows(repo_id, config.dataset_split), config, repo_id)]


__all__ = [
    "DatasetSource",
    "LoadedData",
    "check_dataset",
    "load_examples",
    "read_checked",
    "resolve_dataset_source",
    "subset_and_split",
    "validate_dataset",
]
