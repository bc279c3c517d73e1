"""The dataset formats: how to recognise each one from a row's keys, check a row, and normalise it.

Kept apart from `data.py` (files and sources) so each stays short. Standard library only: the
server imports this at start. A problem in a row is a `DatasetError` carrying the file and the
1-based line (row number for CSV bodies, Parquet and JSON lists), naming the field and what was
expected, because the user fixes data in an editor, one line at a time.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from finetune_mcp.config.methods import method_for_format
from finetune_mcp.data import preference
from finetune_mcp.data.ranking import EXPECTED as RANKING_EXPECTED
from finetune_mcp.data.ranking import (
    RANKING_FORMATS,
    detect_ranking_format,
    is_ranking_row,
    normalize_ranking_row,
)
from finetune_mcp.errors import DatasetError

if TYPE_CHECKING:
    from finetune_mcp.config import MetadataFilters

FORMATS = ("alpaca", "messages", "sharegpt", "prompt_completion", "text", "arangodb")
ROLES = ("system", "user", "assistant")
# ShareGPT speaker names, as the common exporters write them.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

_EXPECTED = {
    "alpaca": "alpaca rows need 'instruction' and 'output' strings ('input' and 'system' optional)",
    "messages": "chat rows need 'messages': a list of {'role', 'content'} objects",
    "sharegpt": "ShareGPT rows need 'conversations': a list of {'from', 'value'} objects",
    "prompt_completion": "prompt/completion rows need 'prompt' and 'completion' (two strings or two message lists)",
    "text": "text rows need a 'text' string",
    "arangodb": "ArangoDB Q&A rows need 'messages' (a list of {'role', 'content'}) and a 'metadata' object",
}


def detect_format(row: Any, *, path: Path | str, line: int, accepted: tuple[str, ...] = ()) -> str:
    """The format a row's keys announce; an error listing the keys when none matches. `accepted`: the
    formats the training method takes (its descriptor's): a preference / prompt-only row is read as
    such only when the method takes it, and a method that takes only those refuses other rows here,
    at their line."""
    row = _as_object(row, path=path, line=line)
    found = preference.detect(row)
    if found is not None and found in accepted:
        return found
    if accepted and set(accepted) <= set(preference.FORMATS):
        raise DatasetError(
            f"the row has keys {sorted(row)}, but this training method takes "
            + "; or ".join(preference.EXPECTED[f] for f in accepted) + ". Rename the fields or pick another method",
            path=path, line=line)
    if found is not None and found != preference.PROMPT_ONLY_FORMAT:
        owner = method_for_format(found)
        use = f"method={owner.name!r}" if owner else "a preference method"
        raise DatasetError(f"this is a {found.replace('_', ' ')} row (keys {sorted(row)}); train on it with {use}, "
                           "or give rows this method takes", path=path, line=line)
    if is_ranking_row(row):  # before "instruction": ranking rows may carry an instruction too
        return detect_ranking_format(row)
    if "messages" in row:
        return "arangodb" if "metadata" in row else "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    raise DatasetError(
        f"cannot tell the format from the keys {sorted(row)}; expected one of: "
        + "; ".join([*(_EXPECTED[f] for f in FORMATS), *(RANKING_EXPECTED[f] for f in RANKING_FORMATS)])
        + ". Rename the fields or set dataset_format",
        path=path,
        line=line,
    )


def normalize_row(row: Any, fmt: str, *, path: Path | str, line: int) -> dict[str, Any]:
    """Check one row of format `fmt` and return it as {"messages"}, {"prompt", "completion"} or {"text"},
    plus the row's `metadata` object when it has one (GRANGER also exports alpaca rows with metadata)
    and its `weight` (a per-example loss multiplier) when it has one."""
    row = _as_object(row, path=path, line=line)
    if fmt in preference.FORMATS:
        return preference.normalize(row, fmt, path=path, line=line)
    if fmt in RANKING_FORMATS:
        return normalize_ranking_row(row, fmt, path=path, line=line)
    check = _Checker(row, fmt, path, line)
    example = _body(check, fmt)
    if fmt == "arangodb" or row.get("metadata") is not None:
        metadata = check.require("metadata")
        if not isinstance(metadata, dict):
            check.fail(f"field 'metadata' is {_kind(metadata)}; expected an object (confidence, validated, ...)")
        example["metadata"] = metadata
    if row.get("weight") is not None:
        example["weight"] = _example_weight(row["weight"], path=path, line=line)
    return example


def _example_weight(value: Any, *, path: Path | str, line: int) -> float:
    """A row's own loss weight (student–teacher output writes one): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise DatasetError(
            f"field 'weight' is {value!r}; expected a finite number >= 0 (the example's loss weight). "
            "Fix the row or remove the field",
            path=path,
            line=line,
        )
    return float(value)


def _body(check: _Checker, fmt: str) -> dict[str, Any]:
    if fmt == "alpaca":
        instruction = check.text("instruction")
        extra = check.text("input", required=False, allow_empty=True)
        system = check.text("system", required=False, allow_empty=True)
        user = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": check.text("output")}]
        return {"messages": messages}
    if fmt in ("messages", "arangodb"):
        return {"messages": check.messages("messages")}
    if fmt == "sharegpt":
        return {"messages": check.messages("conversations", role_key="from", content_key="value")}
    if fmt == "prompt_completion":
        prompt, completion = check.require("prompt"), check.require("completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            return {"prompt": prompt, "completion": check.text("completion")}
        if isinstance(prompt, list) and isinstance(completion, list):
            return {"messages": check.messages("prompt", need_assistant=False) + check.messages("completion")}
        check.fail(
            f"'prompt' is {_kind(prompt)} and 'completion' is {_kind(completion)}; "
            "expected two strings or two message lists"
        )
    if fmt == "text":
        return {"text": check.text("text")}
    raise DatasetError(f"unknown dataset_format {fmt!r}; use one of {', '.join(FORMATS)} or auto")


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


def _as_object(row: Any, *, path: Path | str, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DatasetError(f"the row is {_kind(row)}; expected a JSON object with named fields", path=path, line=line)
    return row


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


class _Checker:
    """Field access for one row that fails with the file, the line and the expected shape."""

    def __init__(self, row: dict[str, Any], fmt: str, path: Path | str, line: int) -> None:
        self.row, self.fmt, self.path, self.line = row, fmt, path, line

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{message} ({_EXPECTED[self.fmt]}); fix the row", path=self.path, line=self.line)

    def require(self, key: str) -> Any:
        if key not in self.row or self.row[key] is None:
            self.fail(f"missing field {key!r}")
        return self.row[key]

    def text(self, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
        if not required and self.row.get(key) is None:
            return ""
        value = self.require(key)
        if not isinstance(value, str):
            self.fail(f"field {key!r} is {_kind(value)}; expected a string")
        if not allow_empty and not value.strip():
            self.fail(f"field {key!r} is empty; expected text")
        return value

    def messages(
        self, key: str, *, role_key: str = "role", content_key: str = "content", need_assistant: bool = True
    ) -> list[dict[str, str]]:
        turns = self.require(key)
        if not isinstance(turns, list) or not turns:
            self.fail(f"field {key!r} is {_kind(turns) if turns != [] else 'an empty list'}; expected a non-empty list")
        allowed = SHAREGPT_ROLES if role_key == "from" else {r: r for r in ROLES}
        out = []
        for i, turn in enumerate(turns):
            where = f"{key}[{i}]"
            if not isinstance(turn, dict):
                self.fail(f"{where} is {_kind(turn)}; expected an object with {role_key!r} and {content_key!r}")
            if role_key not in turn:
                self.fail(f"{where} has no {role_key!r}")
            role = turn[role_key]
            if role not in allowed:
                self.fail(f"{where}.{role_key} is {role!r}; expected one of {', '.join(allowed)}")
            content = turn.get(content_key)
            if not isinstance(content, str):
                what = "missing" if content is None else _kind(content)
                self.fail(f"{where}.{content_key} is {what}; expected a string")
            out.append({"role": allowed[role], "content": content})
        if need_assistant and not any(t["role"] == "assistant" for t in out):
            self.fail(f"field {key!r} has no assistant turn, so there is nothing to learn")
        return out
