"""Splitting a reply into reasoning and answer, and checking an answer against a reference.

The reference checker replaces an LLM judge when the data has checkable answers (the dataset's own
assistant reply is the reference): deterministic, free, and testable. Three modes:
  exact       the answers are equal after trimming surrounding whitespace
  normalized  equal after lower-casing, turning punctuation into spaces and collapsing spaces
  regex       the student's answer fully matches a pattern (case-insensitive): the row's
              `metadata.answer_regex` when it has one, else the escaped reference
An LLM judge's reply is read by `parse_judge_score` (a score out of 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from finetune_mcp.errors import DatasetError

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+answer|answer)\s*[:：]\s*(.*\S)\s*$", re.IGNORECASE)
_SCORE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:/\s*(10|1|100))?")


@dataclass(frozen=True)
class Reply:
    """A reply split in two: the reasoning before the answer, and the answer."""

    reasoning: str
    answer: str


def split_reply(text: str) -> Reply:
    """Reasoning and answer of a reply.

    `<think>…</think>` holds reasoning; the answer is the last 'Answer: …' line after it, else the
    last non-empty line (the rest being reasoning). A reply of one line is all answer.
    """
    text = text.strip()
    reasoning_parts: list[str] = []
    match = _THINK.search(text)
    if match:
        reasoning_parts.append(match.group(1).strip())
        text = (text[: match.start()] + text[match.end():]).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    answer = ""
    for i in range(len(lines) - 1, -1, -1):
        found = _ANSWER_LINE.match(lines[i])
        if found:
            answer = found.group(1).strip()
            lines = lines[:i] + lines[i + 1:]
            break
    else:
        if lines:
            answer = lines.pop().strip()
    reasoning_parts.append("\n".join(lines).strip())
    return Reply(reasoning="\n".join(p for p in reasoning_parts if p), answer=answer)


def normalize_answer(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


@dataclass(frozen=True)
class Verdict:
    """A judge's view of one answer: score in [0, 1], right or not, and why (for the log)."""

    score: float
    correct: bool
    detail: str


class ReferenceChecker:
    """Checks an answer against the reference answer of its example (see the module docstring)."""

    def __init__(self, mode: str = "normalized") -> None:
        if mode not in ("exact", "normalized", "regex"):
            raise ValueError(f"unknown answer check {mode!r}; use exact, normalized or regex")
        self.mode = mode

    def pattern(self, reference: str, metadata: dict[str, Any] | None) -> str:
        given = (metadata or {}).get("answer_regex")
        return given if isinstance(given, str) and given else re.escape(reference.strip())

    def validate(self, reference: str, metadata: dict[str, Any] | None, *, where: str) -> None:
        """Refuse, before the job starts, a row whose regex does not compile."""
        if self.mode != "regex":
            return
        pattern = self.pattern(reference, metadata)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DatasetError(f"{where}: metadata.answer_regex {pattern!r} is not a valid regex ({exc}); fix it "
                               "or use answer_check='normalized'") from None

    def check(self, answer: str, reference: str, metadata: dict[str, Any] | None = None) -> Verdict:
        if self.mode == "exact":
            ok = answer.strip() == reference.strip()
        elif self.mode == "normalized":
            ok = normalize_answer(answer) == normalize_answer(reference) and bool(normalize_answer(reference))
        else:
            ok = re.fullmatch(self.pattern(reference, metadata), answer.strip(), re.IGNORECASE | re.DOTALL) is not None
        detail = f"{self.mode} match" if ok else f"{self.mode}: {answer.strip()[:80]!r} ≠ reference"
        return Verdict(score=1.0 if ok else 0.0, correct=ok, detail=detail)


def parse_judge_score(text: str, out_of: float = 10.0) -> float | None:
    """The first score in an LLM judge's reply, scaled to [0, 1]: 'Score: 7/10' → 0.7, '8' → 0.8
    (bare numbers are out of `out_of`, what the judge prompt asks for), '1/1' → 1. None when the
    reply holds no usable number."""
    for match in _SCORE.finditer(text):
        value = float(match.group(1))
        scale = float(match.group(2)) if match.group(2) else out_of
        if 0 <= value <= scale:
            return value / scale
    return None
