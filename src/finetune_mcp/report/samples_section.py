"""The model card's sample generations: a small base-vs-tuned table from a sample job of the run.

`samples_section(result)` is pure (a sample job's result.json in, markdown out); card.py puts it
under "Sample generations" when the run has a succeeded sample job that also sampled the base
(the tools find the newest one: `sample.results.latest_sample_of`).
"""

from __future__ import annotations

from typing import Any

MAX_ROWS = 5
MAX_CELL = 80


def samples_section(result: dict[str, Any] | None, max_rows: int = MAX_ROWS) -> str | None:
    """Markdown for the first `max_rows` prompts, base and tuned side by side; None without samples."""
    if not result or not result.get("samples"):
        return None
    labels = [m["label"] for m in result.get("models", [])]
    if "base" not in labels or "tuned" not in labels:
        return None
    by_label = {m["label"]: m for m in result["models"]}
    settings = result.get("settings") or {}
    decoding = ("greedy decoding" if not settings.get("temperature") else
                f"sampling at temperature {settings['temperature']}, top-p {settings.get('top_p', 1)}, seed "
                f"{settings.get('seed', 0)}")
    tuned = by_label["tuned"]
    weights = "merged model" if tuned.get("weights") == "merged" else "LoRA adapter on its base"
    parts = [f"Answers of the untrained base model and of this fine-tune ({weights}) to the same prompts, from "
             f"the sample job `{result.get('job_id')}` ({decoding}, at most {settings.get('max_new_tokens')} new "
             "tokens, the chat template as in training). "
             + _threshold_text(result)]
    rates = [f"{label} {_rate(by_label[label])}" for label in ("base", "tuned") if _rate(by_label[label])]
    if rates:
        parts.append("Answers matching the reference (normalised: case, punctuation and spacing ignored): "
                     + ", ".join(rates) + ".")
    rows = ["| Prompt | Reference | Base | Fine-tuned |", "|---|---|---|---|"]
    for sample in result["samples"][:max_rows]:
        outputs = sample.get("outputs") or {}
        rows.append(f"| {_cell(sample.get('prompt'))} | {_cell(sample.get('reference'))} | "
                    f"{_answer(outputs.get('base'))} | {_answer(outputs.get('tuned'))} |")
    parts.append("\n".join(rows))
    if result.get("num_prompts", 0) > max_rows:
        parts.append(f"({max_rows} of {result['num_prompts']} prompts; `get_samples('{result.get('job_id')}')` "
                     "has all, with each token's entropy.)")
    return "\n\n".join(parts)


def _threshold_text(result: dict[str, Any]) -> str:
    threshold = result.get("threshold")
    if threshold is None:
        return ""
    return (f"⟦…⟧ marks the tokens where the model was unsure: entropy above {threshold:.4g} nats "
            f"({result.get('threshold_source', '')}).")


def _rate(model: dict[str, Any]) -> str:
    rate, n = model.get("normalized_match_rate"), model.get("answers_with_reference") or 0
    return f"{round(rate * n)}/{n}" if rate is not None and n else ""


def _answer(output: dict[str, Any] | None) -> str:
    if output is None:
        return "—"
    mark = {True: "✓ ", False: "✗ "}.get(output.get("normalized_match"), "")
    return mark + _cell(output.get("marked") or output.get("answer"))


def _cell(text: Any) -> str:
    """Text for a table cell: one line, | escaped, control characters dropped, cut to MAX_CELL."""
    if text is None:
        return "—"
    flat = " ".join(str(text).split())
    flat = "".join(c for c in flat if c.isprintable()).replace("|", "\\|").replace("`", "ˋ")
    return (flat[: MAX_CELL - 1] + "…" if len(flat) > MAX_CELL else flat) or "(empty)"
