"""ShareGPT rows: {"conversations": [{"from", "value"}, ...]} with the exporters' speaker names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "ShareGPT rows need 'conversations': a list of {'from', 'value'} objects"


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    check = Checker(row, EXPECTED, path, line)
    return {"messages": check.messages("conversations", role_key="from", content_key="value")}


FORMAT = RowFormat("sharegpt", EXPECTED, lambda row: "conversations" in row, normalize,
                   nested_fields=frozenset({"conversations"}))
