"""The model card's student–teacher section, for runs trained on an `enhance_dataset` output.

A pure function of files: when the training run's dataset is an enhancement's `enhanced.jsonl`,
the `summary.json` beside it says how the data was made (rounds, hints, convergence, entropy) and
how each example's weight was computed. Runs on other data get no section (None).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def enhancement_summary(dataset: str) -> dict[str, Any] | None:
    """The summary.json of the enhancement that wrote `dataset`, if it is one."""
    path = Path(dataset).expanduser()
    summary = path.parent / "summary.json"
    if path.name != "enhanced.jsonl" or not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "enhanced_examples" in data else None


def student_teacher_section(spec: dict[str, Any]) -> str | None:
    """Markdown for the card (no heading), or None when the run's data was not enhanced."""
    s = enhancement_summary(str(spec.get("dataset", "")))
    if s is None:
        return None
    cfg = s.get("config") or {}
    n, total = s.get("enhanced_examples", 0), s.get("total_examples", 0)
    rule = {"wrong": "its answer was wrong", "entropy": "it was uncertain",
            "wrong_or_entropy": "its answer was wrong or it was uncertain"}.get(cfg.get("hint_rule"), "the rule fired")
    intro = (
        f"The training data was enhanced first (finetune-mcp `enhance_dataset`): the base model, as the student, "
        f"answered each question in up to {cfg.get('max_iterations', '?')} rounds. After a round where {rule} "
        f"(uncertain: a run of at least {cfg.get('min_span_tokens', '?')} tokens each above "
        f"{_num(cfg.get('entropy_threshold'))} nats of entropy), the teacher {_code(cfg.get('teacher'))} gave a hint "
        f"aimed at those tokens and the student tried again. Answers were judged by {_code(cfg.get('judge'))}. "
        "Each example keeps the student's reasoning (its attempts and the hints, in the thinking block) and the "
        "student's answer when judged right, else the dataset's reference answer."
    )
    rows = [
        ("Examples enhanced", f"{n} of {total}" + (f" ({s['examples_failed']} failed)" if s.get("examples_failed") else "")),
        ("Converged (a round needed no hint)", f"{s.get('converged_examples', 0)} ({_pct(s.get('convergence_rate'))})"),
        ("Mean rounds per example", _num(s.get("mean_iterations"))),
        ("Hints given", f"{s.get('hints_given', 0)} to {s.get('examples_with_hints', 0)} examples"),
        ("Final answers judged right", str(s.get("correct_final_answers", "—"))),
        ("Mean token entropy of the first attempt", f"{_num(s.get('entropy_first_round_mean'))} nats"),
        ("Mean token entropy before → after hints (hinted examples)",
         f"{_num(s.get('entropy_before_hints_mean'))} → {_num(s.get('entropy_after_hints_mean'))} nats"),
        ("Teacher / judge requests", f"{s.get('teacher_calls', 0)} / {s.get('judge_calls', 0)}"),
    ]
    table = "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    zero = s.get("zero_weight_examples", 0)
    weights = (
        f"**How the weights were made.** Each example's token losses were multiplied by its weight: "
        f"{s.get('weight_formula', 'see summary.json')}. Mean weight {_num(s.get('weight_mean'))} "
        f"(min {_num(s.get('weight_min'))}, max {_num(s.get('weight_max'))})"
        + (f"; {zero} example(s) had weight 0 and did not contribute to the loss." if zero else ".")
    )
    return f"{intro}\n\n{table}\n{weights}"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.0f} %" if isinstance(value, int | float) else "—"


def _code(value: Any) -> str:
    return f"`{str(value).replace('`', 'ˋ')}`" if value else "—"
