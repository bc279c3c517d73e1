"""Preference and prompt-only rows: what DPO, KTO, ORPO and GRPO train on.

Formats (TRL's, read from its dataset-formats guide and `trl.data_utils`):
  preference            {"prompt", "chosen", "rejected"}: three strings, or a message list for the
                        prompt and assistant message lists for chosen / rejected
  implicit_preference   {"chosen", "rejected"}: two full texts or conversations; the shared prefix is
                        the prompt (split here, as `trl.data_utils.extract_prompt` does)
  unpaired_preference   {"prompt", "completion", "label": true|false} (KTO)
  prompt_only           {"prompt": str | messages, ...}: GRPO; every other column (the reference
                        answer) is kept for the rewards
Normalised rows: {"prompt", "chosen", "rejected"} / {"prompt", "completion", "label"} /
{"prompt", "columns": {...}}; prompts and replies stay strings or message lists (TRL renders
conversational rows with the chat template itself). Standard library only; errors name the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from finetune_mcp.errors import DatasetError

PREFERENCE_FORMATS = ("preference", "implicit_preference")
UNPAIRED_FORMAT = "unpaired_preference"
PROMPT_ONLY_FORMAT = "prompt_only"
FORMATS = (*PREFERENCE_FORMATS, UNPAIRED_FORMAT, PROMPT_ONLY_FORMAT)
EXPECTED = {
    "preference": "preference rows need 'prompt', 'chosen' and 'rejected' (three strings, or a message list and "
                  "two assistant message lists)",
    "implicit_preference": "implicit preference rows need 'chosen' and 'rejected' (two texts or two conversations "
                           "that share the prompt as their prefix)",
    "unpaired_preference": "unpaired preference rows need 'prompt', 'completion' and 'label' (true = desirable)",
    "prompt_only": "prompt-only rows need 'prompt' (a string or a message list) and may carry answer columns",
}
_ROLES = ("system", "user", "assistant")


def detect(row: dict[str, Any]) -> str | None:
    """The preference / prompt-only format a row's keys announce, or None."""
    if "chosen" in row and "rejected" in row:
        return "preference" if "prompt" in row else "implicit_preference"
    if "label" in row and "completion" in row:
        return UNPAIRED_FORMAT
    if "prompt" in row and "completion" not in row and "chosen" not in row and "rejected" not in row:
        return PROMPT_ONLY_FORMAT
    return None


def normalize(row: dict[str, Any], fmt: str, *, path: Path | str, line: int) -> dict[str, Any]:
    """Check one row of `fmt` and return its normalised shape (module docstring)."""
    check = _Row(row, fmt, path, line)
    if fmt == "preference":
        prompt = check.prompt("prompt")
        conversational = isinstance(prompt, list)
        return {"prompt": prompt, "chosen": check.reply("chosen", conversational),
                "rejected": check.reply("rejected", conversational)}
    if fmt == "implicit_preference":
        return _split_implicit(check)
    if fmt == UNPAIRED_FORMAT:
        prompt = check.prompt("prompt")
        label = check.require("label")
        if not isinstance(label, bool):
            check.fail(f"field 'label' is {label!r}; expected true (desirable) or false (undesirable)")
        return {"prompt": prompt, "completion": check.reply("completion", isinstance(prompt, list)), "label": label}
    if fmt == PROMPT_ONLY_FORMAT:
        columns = {k: v for k, v in row.items() if k != "prompt"}
        return {"prompt": check.prompt("prompt"), "columns": columns}
    raise DatasetError(f"unknown preference format {fmt!r}; use one of {', '.join(FORMATS)}")


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
        chosen, rejected = check.messages("chosen"), check.messages("rejected")
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
    check.fail(f"'chosen' is {_kind(chosen)} and 'rejected' is {_kind(rejected)}; expected two strings or two "
               "message lists")


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


class _Row:
    """Field access for one row that fails with the file, the line and the expected shape."""

    def __init__(self, row: dict[str, Any], fmt: str, path: Path | str, line: int) -> None:
        self.row, self.fmt, self.path, self.line = row, fmt, path, line

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{message} ({EXPECTED[self.fmt]}); fix the row", path=self.path, line=self.line)

    def require(self, key: str) -> Any:
        if self.row.get(key) is None:
            self.fail(f"missing field {key!r}")
        return self.row[key]

    def text(self, key: str) -> str:
        value = self.require(key)
        if not isinstance(value, str):
            self.fail(f"field {key!r} is {_kind(value)}; expected a string")
        if not value.strip():
            self.fail(f"field {key!r} is empty; expected text")
        return value

    def prompt(self, key: str) -> str | list[dict[str, str]]:
        value = self.require(key)
        if isinstance(value, list):
            turns = self.messages(key)
            if turns[-1]["role"] == "assistant":
                self.fail(f"field {key!r} ends with an assistant turn; the prompt must end with the user's turn")
            return turns
        return self.text(key)

    def reply(self, key: str, conversational: bool) -> str | list[dict[str, str]]:
        value = self.require(key)
        if conversational:
            if not isinstance(value, list):
                self.fail(f"the prompt is a message list but {key!r} is {_kind(value)}; give "
                          f"[{{'role': 'assistant', 'content': ...}}]")
            turns = self.messages(key)
            if any(t["role"] != "assistant" for t in turns):
                self.fail(f"field {key!r} must hold assistant turns only")
            return turns
        if isinstance(value, list):
            self.fail(f"the prompt is a string but {key!r} is a list; use strings for both or message lists for both")
        return self.text(key)

    def messages(self, key: str) -> list[dict[str, str]]:
        turns = self.require(key)
        if not isinstance(turns, list) or not turns:
            self.fail(f"field {key!r} is {_kind(turns) if turns != [] else 'an empty list'}; expected messages")
        out = []
        for i, turn in enumerate(turns):
            where = f"{key}[{i}]"
            if not isinstance(turn, dict) or "role" not in turn:
                self.fail(f"{where} is not an object with 'role' and 'content'")
            if turn["role"] not in _ROLES:
                self.fail(f"{where}.role is {turn['role']!r}; expected one of {', '.join(_ROLES)}")
            if not isinstance(turn.get("content"), str):
                self.fail(f"{where}.content is {_kind(turn.get('content'))}; expected a string")
            out.append({"role": turn["role"], "content": turn["content"]})
        return out
