"""The built-in GRPO rewards: answer checks against a dataset column, format checks, a length penalty.

Each is made by `make_builtin(spec)` as a function with TRL's reward signature
`f(prompts, completions, completion_ids, **columns) -> list[float | None]` (TRL passes every dataset
column as a keyword argument, one value per completion) and a `__name__` TRL logs it under
(`rewards/<name>/mean`). Completions are strings, or message lists for conversational prompts.

The answer the checks read: the text inside the last `<answer>...</answer>` when there is one, else
the text after a `</think>` block, else the whole completion (stripped).
  exact          1 if answer == reference (both stripped) else 0
  normalized     1 if norm(answer) == norm(reference) else 0; norm = lower case, punctuation dropped,
                 whitespace collapsed
  numeric        1 if the last number x in the answer has |x − ref| ≤ tolerance·max(1, |ref|) else 0
  regex          1 if re.search(pattern, completion, DOTALL) else 0
  think_format   1 if the completion is <think>non-empty</think> followed by a non-empty answer else 0
  length_penalty −min(1, max(0, len(completion) − target_length) / target_length)  (characters)
Standard library only: the server's preflight calls them on sample rows.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from finetune_mcp.config.preference import RewardSpec

RewardFn = Callable[..., list[float | None]]
BUILTINS = ("exact", "normalized", "numeric", "regex", "think_format", "length_penalty")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_THINK = re.compile(r"^\s*<think>(.+?)</think>(.*)$", re.DOTALL)
_PUNCT = str.maketrans("", "", string.punctuation)


def completion_text(completion: Any) -> str:
    """A completion as text: the string, or the assistant contents of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def extract_answer(text: str) -> str:
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip()
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1].strip()
    return text.strip()


def normalize_text(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    for token in reversed(found):
        try:
            return float(token.replace(",", ""))
        except ValueError:
            continue
    return None


def make_builtin(spec: RewardSpec) -> RewardFn:
    """The reward function of a built-in `spec` (its name is `spec.function`)."""
    name = spec.function
    if name in ("exact", "normalized", "numeric"):
        fn = _answer_reward(spec)
    elif name == "regex":
        pattern = re.compile(spec.pattern or "", re.DOTALL)

        def fn(completions: list[Any], **_: Any) -> list[float | None]:
            return [1.0 if pattern.search(completion_text(c)) else 0.0 for c in completions]
    elif name == "think_format":
        def fn(completions: list[Any], **_: Any) -> list[float | None]:
            return [_think_ok(completion_text(c)) for c in completions]
    elif name == "length_penalty":
        target = spec.target_length

        def fn(completions: list[Any], **_: Any) -> list[float | None]:
            return [-min(1.0, max(0, len(completion_text(c)) - target) / target) for c in completions]
    else:
        raise ValueError(f"{name!r} is not a built-in reward; use one of {', '.join(BUILTINS)}")
    fn.__name__ = name if name not in ("exact", "normalized", "numeric") else f"{name}_{spec.column}"
    return fn


def _think_ok(text: str) -> float:
    match = _THINK.match(text)
    return 1.0 if match and match.group(1).strip() and match.group(2).strip() else 0.0


def _answer_reward(spec: RewardSpec) -> RewardFn:
    column, kind, tolerance = spec.column, spec.function, spec.tolerance

    def fn(completions: list[Any], **columns: Any) -> list[float | None]:
        if column not in columns:
            raise KeyError(f"the {kind} reward reads column {column!r}, which the rows do not have (columns: "
                           f"{sorted(k for k in columns if k not in ('prompts', 'completion_ids'))}); set "
                           "`column` to the reference-answer column")
        references = columns[column]
        return [_score(kind, extract_answer(completion_text(c)), ref, tolerance)
                for c, ref in zip(completions, references, strict=True)]

    return fn


def _score(kind: str, answer: str, reference: Any, tolerance: float) -> float | None:
    if reference is None:
        return None  # TRL skips a None reward for this completion
    if kind == "exact":
        return 1.0 if answer == str(reference).strip() else 0.0
    if kind == "normalized":
        return 1.0 if normalize_text(answer) == normalize_text(str(reference)) else 0.0
    value = last_number(answer)
    ref = reference if isinstance(reference, int | float) and not isinstance(reference, bool) \
        else last_number(str(reference))
    if value is None or ref is None:
        return 0.0
    return 1.0 if abs(value - ref) <= tolerance * max(1.0, abs(ref)) else 0.0
