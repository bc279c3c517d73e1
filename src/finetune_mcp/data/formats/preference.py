"""Preference rows: what DPO, ORPO and KTO train on (three formats, registered in `data.formats`).

Formats (TRL's, read from its dataset-formats guide and `trl.data_utils`):
  preference            {"prompt", "chosen", "rejected"}: three strings, or a message list for the
                        prompt and assistant message lists for chosen / rejected
  implicit_preference   {"chosen", "rejected"}: two full texts or conversations; the shared prefix is
                        the prompt (split here, as `trl.data_utils.extract_prompt` does)
  unpaired_preference   {"prompt", "completion", "label": true|false} (KTO)
Normalised rows: {"prompt", "chosen", "rejected"} / {"prompt", "completion", "label"}; prompts and
replies stay strings or message lists (TRL renders conversational rows with the chat template
itself). A row with either of 'chosen' / 'rejected' is a pair (so a missing half is named at its
line). Standard library only; errors name the line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune_mcp.data.formats.base import Checker, RowFormat, kind

UNPAIRED_FORMAT = "unpaired_preference"
PAIR_KEYS = ("chosen", "rejected")
EXPECTED = {
    "preference": "preference rows need 'prompt', 'chosen' and 'rejected' (three strings, or a message list and "
                  "two assistant message lists)",
    "implicit_preference": "implicit preference rows need 'chosen' and 'rejected' (two texts or two conversations "
                           "that share the prompt as their prefix)",
    "unpaired_preference": "unpaired preference rows need 'prompt', 'completion' and 'label' (true = desirable)",
}
_ROLES = ("system", "user", "assistant")


def _normalize(fmt: str) -> Callable[[dict[str, Any], Path | str, int], dict[str, Any]]:
    def normalize(row: dict[str, Any], path: Path | str, line: int) -> dict[str, Any]:
        check = _Row(row, fmt, path, line)
        if fmt == "implicit_preference":
            return _split_implicit(check)
        prompt = check.prompt("prompt")
        if fmt == UNPAIRED_FORMAT:
            label = check.require("label")
            if not isinstance(label, bool):
                check.fail(f"field 'label' is {label!r}; expected true (desirable) or false (undesirable)")
            return {"prompt": prompt, "completion": check.reply("completion", isinstance(prompt, list)), "label": label}
        conversational = isinstance(prompt, list)
        return {"prompt": prompt, "chosen": check.reply("chosen", conversational),
                "rejected": check.reply("rejected", conversational)}
    return normalize


def _paired(row: dict[str, Any]) -> bool:
    return any(key in row for key in PAIR_KEYS)


FORMATS = (
    RowFormat("preference", EXPECTED["preference"], lambda row: _paired(row) and "prompt" in row,
              _normalize("preference"), row_extras=False, nested_fields=frozenset({"prompt", *PAIR_KEYS})),
    RowFormat("implicit_preference", EXPECTED["implicit_preference"], lambda row: _paired(row) and "prompt" not in row,
              _normalize("implicit_preference"), row_extras=False, nested_fields=frozenset(PAIR_KEYS)),
    RowFormat(UNPAIRED_FORMAT, EXPECTED[UNPAIRED_FORMAT],
              lambda row: "label" in row and "completion" in row and "prompt" in row,
              _normalize(UNPAIRED_FORMAT), row_extras=False, nested_fields=frozenset({"prompt", "completion"})),
)


def to_unpaired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired preference rows as KTO's unpaired rows: each pair gives a desirable and an undesirable one."""
    out = []
    for row in rows:
        if "label" in row:
            out.append(row)
            continue
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out


def _split_implicit(check: _Row) -> dict[str, Any]:
    chosen, rejected = check.require("chosen"), check.require("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen, rejected = check.messages("chosen", need_assistant=False), check.messages("rejected", need_assistant=False)
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            check.fail("'chosen' and 'rejected' share no first message, so there is no prompt; add a 'prompt' field")
        if shared in (len(chosen), len(rejected)):
            check.fail("one of 'chosen' / 'rejected' is the other's prefix; they must differ in the reply")
        return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}
    if isinstance(chosen, str) and isinstance(rejected, str):
        chosen, rejected = check.text("chosen"), check.text("rejected")
        i = 0
        while i < min(len(chosen), len(rejected)) and chosen[i] == rejected[i]:
            i += 1
        if i > 0 and chosen[i - 1] == " ":  # keep the space with the replies, as TRL's extract_prompt does
            i -= 1
        if i == 0 or i in (len(chosen), len(rejected)):
            check.fail("'chosen' and 'rejected' share no prompt prefix or one contains the other; add a 'prompt' "
                       "field or use explicit rows")
        return {"prompt": chosen[:i], "chosen": chosen[i:], "rejected": rejected[i:]}
    check.fail(f"'chosen' is {kind(chosen)} and 'rejected' is {kind(rejected)}; expected two strings or two "
               "message lists")


class _Row(Checker):
    """Field access for one preference row that fails with the file, the line and the expected shape."""

    def __init__(self, row: dict[str, Any], fmt: str, path: Path | str, line: int) -> None:
        super().__init__(row, EXPECTED[fmt], path, line)

    def prompt(self, key: str) -> str | list[dict[str, str]]:
        value = self.require(key)
        if isinstance(value, list):
            turns = self.messages(key, need_assistant=False)
            if turns[-1]["role"] == "assistant":
                self.fail(f"field {key!r} ends with an assistant turn; the prompt must end with the user's turn")
            return turns
        return self.text(key)

    def reply(self, key: str, conversational: bool) -> str | list[dict[str, str]]:
        value = self.require(key)
        if conversational:
            if not isinstance(value, list):
                self.fail(f"the prompt is a message list but {key!r} is {kind(value)}; give "
                          f"[{{'role': 'assistant', 'content': ...}}]")
            turns = self.messages(key, need_assistant=False)
            if any(t["role"] != "assistant" for t in turns):
                self.fail(f"field {key!r} must hold assistant turns only")
            return turns
        if isinstance(value, list):
            self.fail(f"the prompt is a string but {key!r} is a list; use strings for both or message lists for both")
        return self.text(key)
