"""The unit of enhancement work: one training example (`Item`), as the workflow reads it from the
dataset and the outputs write it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Item:
    """One training example to enhance: the prompt turns, and the reference reply it ends with."""


    index: int
    key: str  # content hash + occurrence: stable across restarts, independent of position
    prompt: Messages
    reference_reply: str  # the dataset's assistant reply, any <think> block removed
    reference: str  # its answer part (what the checker compares with)
    metadata: dict[str, Any]


    @property
    def question(self) -> str:
        turns = [m for m in self.prompt if m["role"] != "system"]
        if len(turns) == 1:
            return turns[0]["content"]
        return "\n".join(f"{m['role']}: {m['content']}" for m in turns)
