"""Prompt/completion rows: two strings (loss on the completion) or two message lists (a chat).

A row that also has 'chosen' or 'rejected' is a preference row, not this format: it is never
detected as prompt/completion (its completion would be missing, or one side of the pair lost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat, kind

EXPECTED = "prompt/completion rows need 'prompt' and 'completion' (two strings or two message lists)"
PREFERENCE_KEYS = ("chosen", "rejected")


def matches(row: dict[str, Any]) -> bool:
    return ("prompt" in row or "completion" in row) and not any(key in row for key in PREFERENCE_KEYS)


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    check = Checker(row, EXPECTED, path, line)
    prompt, completion = check.require("prompt"), check.require("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return {"prompt": prompt, "completion": check.text("completion")}
    if isinstance(prompt, list) and isinstance(completion, list):
        return {"messages": check.messages("prompt", need_assistant=False) + check.messages("completion")}
    check.fail(f"'prompt' is {kind(prompt)} and 'completion' is {kind(completion)}; "
               "expected two strings or two message lists")


FORMAT = RowFormat("prompt_completion", EXPECTED, matches, normalize,
                   nested_fields=frozenset({"prompt", "completion"}))
