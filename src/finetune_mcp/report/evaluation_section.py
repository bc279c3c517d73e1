"""The model card's base-vs-tuned evaluation: the newest result of each suite evaluate_model ran on the
run (`evaluation/<suite>.json`, written by the evaluate job), as a table with 95 % intervals.

`evaluation_section(folder)` reads the folder and returns markdown, or None when no suite ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_TITLES = {"heldout": "Held-out rows (did it learn?)", "forgetting": "General set (did it forget?)"}
_ORDER = ("loss", "token_accuracy", "exact_match", "normalized_match")


def evaluation_section(folder: Path) -> str | None:
    parts = []
    for suite in ("heldout", "forgetting"):
        try:
            result = json.loads((folder / f"{suite}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        parts.append(_suite(suite, result))
    if not parts:
        return None
    return ("The base model and this fine-tune on the same rows (`evaluate_model(suite=...)`): loss and token "
            "accuracy teacher-forced over the answer tokens, exact / normalised match of greedy answers. "
            "Intervals are 95 %: Wilson for a rate, a paired bootstrap over rows for a difference; a "
            "difference counts only when its interval leaves out 0.\n\n" + "\n\n".join(parts))


def _suite(suite: str, result: dict[str, Any]) -> str:
    rows = ["| Metric | Base | Fine-tuned | Difference (95 % interval) | |", "|---|---|---|---|---|"]
    metrics = result.get("metrics") or {}
    for name in (n for n in _ORDER if n in metrics):
        m = metrics[name]
        rows.append(f"| {name} | {_value(m['base'], m.get('base_interval'))} | "
                    f"{_value(m['tuned'], m.get('tuned_interval'))} | {m['delta']:+.4f} {_interval(m.get('interval'))} "
                    f"| {m.get('verdict', '')} |")
    answered = f", {result.get('answered')} answered by generation" if result.get("answered") else ""
    return (f"**{_TITLES.get(suite, suite)}** — {result.get('rows')} rows of {result.get('source')}{answered} "
            f"(job `{result.get('job_id')}`). {str(result.get('summary', '')).capitalize()}.\n\n" + "\n".join(rows))


def _value(value: float, interval: list[float] | None) -> str:
    return f"{value:.4f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def _interval(interval: list[float] | None) -> str:
    return f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "(too few rows)"
