"""Plain text rows: {"text"} (language modelling, loss on every token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "text rows need a 'text' string"


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    return {"text": Checker(row, EXPECTED, path, line).text("text")}


FORMAT = RowFormat("text", EXPECTED, lambda row: "text" in row, normalize)
