"""What every row format shares: the `RowFormat` record a format module registers, and the field
checks its `normalize` uses.

A problem in a row is a `DatasetError` carrying the file and the 1-based line (row number for CSV
bodies, Parquet and JSON lists), naming the field and what was expected, because the user fixes
data in an editor, one line at a time. Standard library only: the server imports this at start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from finetune_mcp.errors import DatasetError

if TYPE_CHECKING:
    from finetune_mcp.config import MetadataFilters

ROLES = ("system", "user", "assistant")
# ShareGPT speaker names, as the common exporters write them.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class RowFormat:
    """One dataset format: how to recognise a row of it, check it and normalise it.

    name: as `dataset_format` spells it; expected: what a row needs (error messages);
    matches(row): whether a row's keys announce this format (the registry asks formats in order);
    normalize(row, path, line): the checked row in its normalised shape; row_extras: whether a row's
    `metadata` object and `weight` are kept (`requires_metadata`: the object must be there);
    combine: merges normalised rows after loading (ranking rows: one group per query);
    nested_fields: fields CSV / Parquet cells hold as JSON text.
    """

    name: str
    expected: str
    matches: Callable[[dict[str, Any]], bool]
    normalize: Callable[[dict[str, Any], Path | str, int], dict[str, Any]]
    row_extras: bool = True
    requires_metadata: bool = False
    combine: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    nested_fields: frozenset[str] = frozenset()


def example_weight(value: Any, *, path: Path | str, line: int) -> float:
    """A row's own loss weight (student–teacher output writes one): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise DatasetError(
            f"field 'weight' is {value!r}; expected a finite number >= 0 (the example's loss weight). "
            "Fix the row or remove the field",
            path=path,
            line=line,
        )
    return float(value)


def passes_filters(
    example: dict[str, Any], filters: MetadataFilters, *, path: Path | str, line: int
) -> str | None:
    """None when a row passes `filters` (on its `metadata`), else the name=value of the first filter it fails.

    A row without the field a filter needs fails that filter (it is not known to pass); a field of
    the wrong type is an error, since it means the export is not what the filter assumes.
    """
    meta = example.get("metadata", {})
    if filters.min_confidence is not None:
        confidence = meta.get("confidence")
        if isinstance(confidence, str):
            with contextlib.suppress(ValueError):  # CSV exports write numbers as text
                confidence = float(confidence)
        if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, int | float)):
            raise DatasetError(
                f"metadata.confidence is {confidence!r}; expected a number in [0, 1]. Fix the row or drop "
                "metadata_filters.min_confidence",
                path=path,
                line=line,
            )
        if confidence is None or confidence < filters.min_confidence:
            return f"min_confidence={filters.min_confidence}"
    if filters.validated_only:
        validated = meta.get("validated")
        if validated is not None and not isinstance(validated, bool):
            raise DatasetError(
                f"metadata.validated is {validated!r}; expected true or false. Fix the row or drop "
                "metadata_filters.validated_only",
                path=path,
                line=line,
            )
        if validated is not True:
            return "validated_only=True"
    if filters.question_types is not None and meta.get("question_type") not in filters.question_types:
        return f"question_types={filters.question_types}"
    return None


def as_object(row: Any, *, path: Path | str, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DatasetError(f"the row is {kind(row)}; expected a JSON object with named fields", path=path, line=line)
    return row


def kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


class Checker:
    """Field access for one row that fails with the file, the line and the expected shape."""

    def __init__(self, row: dict[str, Any], expected: str, path: Path | str, line: int) -> None:
        self.row, self.expected, self.path, self.line = row, expected, path, line

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{message} ({self.expected}); fix the row", path=self.path, line=self.line)

    def require(self, key: str) -> Any:
        if key not in self.row or self.row[key] is None:
            self.fail(f"missing field {key!r}")
        return self.row[key]

    def text(self, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
        if not required and self.row.get(key) is None:
            return ""
        value = self.require(key)
        if not isinstance(value, str):
            self.fail(f"field {key!r} is {kind(value)}; expected a string")
        if not allow_empty and not value.strip():
            self.fail(f"field {key!r} is empty; expected text")
        return value

    def messages(
        self, key: str, *, role_key: str = "role", content_key: str = "content", need_assistant: bool = True
    ) -> list[dict[str, str]]:
        turns = self.require(key)
        if not isinstance(turns, list) or not turns:
            self.fail(f"field {key!r} is {kind(turns) if turns != [] else 'an empty list'}; expected a non-empty list")
        allowed = SHAREGPT_ROLES if role_key == "from" else {r: r for r in ROLES}
        out = []
        for i, turn in enumerate(turns):
            where = f"{key}[{i}]"
            if not isinstance(turn, dict):
                self.fail(f"{where} is {kind(turn)}; expected an object with {role_key!r} and {content_key!r}")
            if role_key not in turn:
                self.fail(f"{where} has no {role_key!r}")
            role = turn[role_key]
            if role not in allowed:
                self.fail(f"{where}.{role_key} is {role!r}; expected one of {', '.join(allowed)}")
            content = turn.get(content_key)
            if not isinstance(content, str):
                what = "missing" if content is None else kind(content)
                self.fail(f"{where}.{content_key} is {what}; expected a string")
            out.append({"role": allowed[role], "content": content})
        if need_assistant and not any(t["role"] == "assistant" for t in out):
            self.fail(f"field {key!r} has no assistant turn, so there is nothing to learn")
        return out


def short_keys(keys: Any, *, each: int = 24, most: int = 8) -> str:
    """Keys (or CSV header cells) for a message, each cut to a short prefix and at most `most` of them:
    a file that is not a dataset at all (a secret read through a link, a CSV whose header is a
    password line) must not come back whole inside an error."""
    names = [str(k) for k in keys]
    shown = [n if len(n) <= each else n[:each] + "…" for n in names[:most]]
    return "[" + ", ".join(repr(n) for n in shown) + (f", … {len(names) - most} more" if len(names) > most else "") + "]"
