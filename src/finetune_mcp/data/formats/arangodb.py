"""ArangoDB Q&A exports: chat rows with a `metadata` object (confidence, validated, question_type)
that `metadata_filters` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat

EXPECTED = "ArangoDB Q&A rows need 'messages' (a list of {'role', 'content'}) and a 'metadata' object"


def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
    return {"messages": Checker(row, EXPECTED, path, line).messages("messages")}


FORMAT = RowFormat("arangodb", EXPECTED, lambda row: "messages" in row and "metadata" in row, normalize,
                   requires_metadata=True, nested_fields=frozenset({"messages", "metadata"}))
