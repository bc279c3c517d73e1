"""The experiment's table: every run's held-out metrics, each arm's spread, each arm against the
baseline, the verdict and the recommendation — the one result `get_experiment`, the report, the
card section and the demo all read (`experiment/table.json`).

A pure function of the runs' records (`RunRecord`); the worker rewrites the table after every
finished run, so a running, cancelled or failed experiment has a table of what finished.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from finetune_mcp.experiment import stats
from finetune_mcp.experiment.metrics import Metric, by_name, default_primary, metrics_for
from finetune_mcp.experiment.spec import ExperimentSpec

RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


@dataclass
class RunRecord:
    """One run of the experiment as the table shows it."""

    name: str
    arm: str
    seed: int
    status: str = "pending"
    run_dir: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # held-out metrics (succeeded runs)
    timing: dict[str, Any] = field(default_factory=dict)  # wall, steps, set-up, scoring (seconds)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_table(spec: ExperimentSpec, records: list[RunRecord], *, status: str, heldout: dict[str, Any],
                experiment: str) -> dict[str, Any]:
    """The table for `records` (in plan order); `status` is the experiment's (running, succeeded, ...)."""
    answers = bool(heldout.get("generated"))
    metrics = metrics_for(spec.method, answers, retain=spec.retain_dataset is not None)
    primary = by_name(spec.primary_metric or default_primary(spec.method, answers))
    if primary not in metrics:  # e.g. normalized_match asked, but the held-out rows have no answers to check
        metrics = (*metrics, primary)
    done = [r for r in records if r.status == "succeeded"]
    values = {m.name: {arm.name: {str(r.seed): r.metrics[m.name] for r in done if r.arm == arm.name
                                  and m.name in r.metrics} for arm in spec.arms} for m in metrics}
    baseline = spec.baseline_arm
    comparisons = [stats.compare(m, arm.name, baseline, values[m.name][arm.name], values[m.name][baseline])
                   for m in metrics for arm in spec.arms if arm.name != baseline]
    on_primary = [c for c in comparisons if c.metric == primary.name]
    return {
        "experiment": experiment,
        "status": status,
        "method": spec.method,
        "task": spec.method,  # the name tables had before methods were named
        "model": spec.model,
        "dataset": spec.dataset,
        "arms": [{"name": a.name, "loss": a.describe(), "enable_entropy_weighting": a.enable_entropy_weighting,
                  "entropy": a.entropy} for a in spec.arms],
        "baseline": baseline,
        "seeds": spec.seeds,
        "runs_total": len(records),
        "runs_finished": len(done),
        "heldout": heldout,
        "metrics": [{"name": m.name, "label": m.label, "better": m.better, "unit": m.unit} for m in metrics],
        "primary_metric": primary.name,
        "runs": [r.to_json() for r in records],
        "summary": {m: {arm: stats.spread(v).to_json() for arm, v in per_arm.items()} for m, per_arm in values.items()},
        "comparisons": [c.to_json() for c in comparisons],
        "verdict": "; ".join(c.verdict for c in on_primary),
        "recommendation": recommend(primary, baseline, on_primary),
        "overhead": overhead(records),
        "statistics": {
            "pairing": "arm − baseline per seed (same seed, same held-out rows)",
            "interval": f"percentile bootstrap of the mean difference, {stats.RESAMPLES} resamples, RNG seed "
                        f"{stats.BOOTSTRAP_SEED}, {int(stats.CONFIDENCE * 100)} %",
            "test": "exact two-sided sign-flip (paired permutation) test",
            "alpha": stats.ALPHA,
            "seeds_needed_for_alpha": stats.seeds_needed(),
        },
    }


def recommend(primary: Metric, baseline: str, comparisons: list[stats.Comparison]) -> dict[str, Any]:
    """Which arm to use and why, or that the evidence cannot tell (arm None)."""
    if primary.better is None:
        return {"arm": None, "reason": f"{primary.name} has no better direction; set primary_metric to a metric "
                "that does (e.g. eval_ce or normalized_match) to get a recommendation"}
    better = [c for c in comparisons if c.supported == "better"]
    if better:
        best = max(better, key=lambda c: abs(c.mean_difference or 0.0))
        return {"arm": best.arm, "reason": f"use {best.arm}: {best.verdict}"}
    if comparisons and all(c.supported == "worse" for c in comparisons):
        return {"arm": baseline, "reason": f"use {baseline}: every other arm is worse on {primary.name} "
                f"({'; '.join(c.verdict for c in comparisons)})"}
    n = min((c.n for c in comparisons), default=0)
    return {"arm": None, "reason": (
        f"cannot tell at {n} seed{'s' if n != 1 else ''}: no arm differs from {baseline} on {primary.name} beyond "
        f"what chance gives ({stats.seeds_needed()} seeds are the fewest with which the exact paired test can reach "
        f"p < {stats.ALPHA}); without evidence either way {baseline} (the baseline) is the default, or run more seeds")}


def overhead(records: list[RunRecord]) -> dict[str, Any]:
    """What each run cost beyond its training steps (model load or LoRA reset, data, trainer set-up,
    evaluation during training, saving, held-out scoring), first run apart: it loads the model."""
    timed = [r for r in records if r.timing.get("overhead_s") is not None]
    later = [r.timing["overhead_s"] for r in timed[1:]]
    return {
        "per_run": {r.name: r.timing for r in timed},
        "first_run_s": timed[0].timing["overhead_s"] if timed else None,
        "later_runs_mean_s": round(sum(later) / len(later), 3) if later else None,
        "model_load_s": timed[0].timing.get("model_s") if timed else None,
        "lora_reset_mean_s": round(sum(r.timing.get("model_s", 0.0) for r in timed[1:]) / len(later), 4)
        if later else None,
    }
