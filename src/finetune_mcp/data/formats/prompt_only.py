"""Prompt-only rows: what GRPO trains on. {"prompt": str | messages, ...}: the model writes the
completions; every other column (the reference answer) is kept for the reward functions.

Normalised: {"prompt", "columns": {...}}. A row with 'completion', 'chosen' or 'rejected' is not
prompt-only. Detection asks the formats the method takes first (`data.formats.detect_format`), so
for SFT a bare {"prompt"} row is still read as prompt/completion and refused at its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "prompt-only rows need 'prompt' (a string or a message list) and may carry answer columns"
NOT_PROMPT_ONLY = ("completion", "chosen", "rejected")


def matches(row: dict[str, Any]) -> bool:
    return "prompt" in row and not any(key in row for key in NOT_PROMPT_ONLY)


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    check = Checker(row, EXPECTED, path, line)
    value = check.require("prompt")
    if isinstance(value, list):
        prompt: Any = check.messages("prompt", need_assistant=False)
        if prompt[-1]["role"] == "assistant":
            check.fail("field 'prompt' ends with an assistant turn; the prompt must end with the user's turn")
    else:
        prompt = check.text("prompt")
    return {"prompt": prompt, "columns": {k: v for k, v in row.items() if k != "prompt"}}


FORMAT = RowFormat("prompt_only", EXPECTED, matches, normalize, row_extras=False,
                   nested_fields=frozenset({"prompt"}))
