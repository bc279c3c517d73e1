"""The MCP contract as agents see it, pinned: every tool's name, its parameters (names and which are
required), its result's fields and its annotations, listed by the real server over stdio and compared
with `tool_contract.json`. A refactor of the tool modules must leave this file unchanged; a deliberate
contract change (a new parameter, a new tool) updates it in the same commit:

    UPDATE_TOOL_CONTRACT=1 pytest tests/server/test_tool_contract.py

and the diff of the JSON file is the review of what agents will see differently."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("tool_contract.json")


def contract(tools: list[Any]) -> dict[str, Any]:
    """What an agent depends on, in a stable order (descriptions are left out: rewording one is no break)."""
    shape: dict[str, Any] = {}
    for tool in tools:
        output = tool.output_schema or {}
        annotations = tool.annotations.model_dump(exclude_none=True) if tool.annotations else {}
        shape[tool.name] = {
            "parameters": sorted(tool.input_schema.get("properties", {})),
            "required": sorted(tool.input_schema.get("required", [])),
            "result_fields": sorted(output.get("properties", {})),
            "annotations": dict(sorted(annotations.items())),
        }
    return shape


async def test_the_tool_list_matches_the_pinned_contract(server_home) -> None:
    server = server_home()
    async with server.client() as client:
        tools = await client.list_tools()
    listed = contract(tools)
    if os.environ.get("UPDATE_TOOL_CONTRACT") == "1":
        SNAPSHOT.write_text(json.dumps(listed, indent=1) + "\n", encoding="utf-8")
    pinned = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert list(listed) == list(pinned), "tools added, removed or reordered"
    for name, shape in pinned.items():
        assert listed[name] == shape, f"{name}: its contract changed"
