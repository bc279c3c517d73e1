"""Chat rows: {"messages": [{"role", "content"}, ...]} (the conversational shape every chat format becomes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "chat rows need 'messages': a list of {'role', 'content'} objects"


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    return {"messages": Checker(row, EXPECTED, path, line).messages("messages")}


FORMAT = RowFormat("messages", EXPECTED, lambda row: "messages" in row, normalize,
                   nested_fields=frozenset({"messages"}))
