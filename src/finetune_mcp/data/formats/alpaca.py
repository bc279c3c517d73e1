"""Alpaca rows: {"instruction", "input"?, "output", "system"?}, turned into a chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "alpaca rows need 'instruction' and 'output' strings ('input' and 'system' optional)"


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    check = Checker(row, EXPECTED, path, line)
    instruction = check.text("instruction")
    extra = check.text("input", required=False, allow_empty=True)
    system = check.text("system", required=False, allow_empty=True)
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": check.text("output")}]
    return {"messages": messages}


FORMAT = RowFormat("alpaca", EXPECTED, lambda row: "instruction" in row, normalize)
