"""Where a generated answer is unsure, and whether it is right: pure functions over `Generation`s.

High entropy: a token whose entropy H (nats, the same H training logs) is above a threshold. The
threshold is, in this order: the one the caller gives; the sampled run's own
`high_entropy_threshold` (result.json: training froze it at the 90th percentile of its first
logging window, or took it from the config), so "high" means what it meant in that run's metrics;
otherwise the `percentile` (default 90th) of every token this sample job generated, over all its
models together, so the base and the tuned model are marked on one scale.

Runs of consecutive high-entropy tokens form a span; `marked` is the answer with each span in
⟦…⟧ (a special token such as the end-of-turn marker shows by name when it is in a span: the model
was unsure whether to stop).

Matching uses the enhancement's reference checker: exact (trimmed equality) and normalised
(lower case, punctuation as spaces, spaces collapsed), on the answer without its reasoning block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_mcp.enhance.answer_check import ReferenceChecker

if TYPE_CHECKING:
    from finetune_mcp.model.generate import Generation

OPEN, CLOSE = "⟦", "⟧"
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_EXACT, _NORMALIZED = ReferenceChecker("exact"), ReferenceChecker("normalized")


@dataclass(frozen=True)
class Span:
    """Tokens [start_token, end_token) with H above the threshold; characters [start, end) of the text."""

    start_token: int
    end_token: int
    start: int
    end: int
    text: str
    max_entropy: float
    mean_entropy: float
    alternatives: list[tuple[str, float]]  # the most likely tokens where the span starts

    def as_dict(self) -> dict[str, Any]:
        return {"start_token": self.start_token, "end_token": self.end_token, "start": self.start, "end": self.end,
                "text": self.text, "max_entropy": self.max_entropy, "mean_entropy": round(self.mean_entropy, 5),
                "alternatives": [{"token": t, "p": p} for t, p in self.alternatives]}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0 < q < 100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def choose_threshold(given: float | None, given_source: str, entropies: list[float],
                     q: float) -> tuple[float | None, str]:
    """The threshold and a sentence saying where it came from (see the module docstring)."""
    if given is not None:
        return given, given_source or "given"
    value = percentile(entropies, q)
    return value, f"the {q:g}th percentile of the {len(entropies)} tokens this job generated (all models)"


def high_entropy_spans(generation: Generation, threshold: float | None) -> list[Span]:
    """The runs of consecutive tokens with entropy above `threshold` (none without a threshold)."""
    if threshold is None:
        return []
    spans: list[Span] = []
    offsets = _offsets(generation.tokens)
    start: int | None = None
    for i, h in enumerate([*generation.entropies, -math.inf]):
        if h > threshold and start is None:
            start = i
        elif h <= threshold and start is not None:
            values = generation.entropies[start:i]
            spans.append(Span(start, i, offsets[start], offsets[i], _shown(generation, start, i), max(values),
                              sum(values) / len(values), list(generation.alternatives[start])))
            start = None
    return spans


def marked_text(generation: Generation, spans: list[Span]) -> str:
    """The answer with each span in ⟦…⟧ (a span whose tokens add no visible text is left unmarked;
    it stays in the span list)."""
    shown = [s for s in spans if s.text]  # a span of bytes that only complete a character later shows nothing
    starts = {s.start_token: s for s in shown}
    ends = {s.end_token for s in shown}
    parts: list[str] = []
    inside = False
    for i in range(len(generation.tokens) + 1):
        if i in ends and inside:
            parts.append(CLOSE)
            inside = False
        if i == len(generation.tokens):
            break
        if i in starts:
            parts.append(OPEN)
            inside = True
        parts.append(_token_shown(generation, i, inside))
    return "".join(parts)


def answer_of(text: str) -> str:
    """The answer part of a reply: without a leading <think>…</think> block, trimmed."""
    return _THINK.sub("", text, count=1).strip()


def matches(answer: str, reference: str | None) -> tuple[bool | None, bool | None]:
    """(exact, normalised) match of an answer with the reference; (None, None) without a reference."""
    if reference is None:
        return None, None
    expected = answer_of(reference)
    return _EXACT.check(answer, expected).correct, _NORMALIZED.check(answer, expected).correct


def _offsets(tokens: list[str]) -> list[int]:
    """Character offset in the text where each token starts, plus the end."""
    out = [0]
    for piece in tokens:
        out.append(out[-1] + len(piece))
    return out


def _token_shown(generation: Generation, i: int, inside: bool) -> str:
    name = generation.special[i] if i < len(generation.special) else None
    return name if inside and name is not None else generation.tokens[i]


def _shown(generation: Generation, start: int, end: int) -> str:
    return "".join(_token_shown(generation, i, True) for i in range(start, end))
