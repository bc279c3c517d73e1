"""What an enhancement job leaves behind, and how it picks up after a restart.

Under `<run_dir>/enhance/`: `progress.jsonl` (append-only, one finished example a line, written
as it finishes), and, rebuilt from it whenever the job stops (success, failure, cancel):
`enhanced.jsonl` (the trainer's rows, in dataset order), `iterations.jsonl` (every round, when
`save_iterations`) and `summary.json`. A worker killed mid-write leaves at most a partial last line
in progress.jsonl, which the reader skips: that example is simply done again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_mcp.enhance.config import ExampleWeightConfig, StudentTeacherConfig
from finetune_mcp.errors import DatasetError
from finetune_mcp.runs.rundir import RunDirectory, write_atomic

if TYPE_CHECKING:
    from finetune_mcp.enhance.items import Item

log = logging.getLogger("finetune_mcp.enhance")

ENHANCE_DIR = "enhance"


def enhance_paths(run: RunDirectory) -> dict[str, Path]:
    root = run.root / ENHANCE_DIR
    return {name: root / f"{name}.{ext}" for name, ext in
            (("enhanced", "jsonl"), ("iterations", "jsonl"), ("summary", "json"), ("progress", "jsonl"))}


def summarize(records: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """The numbers of a (partial) enhancement, from its finished records."""
    stats = [r["stats"] for r in records]
    hinted = [r for r in records if r["stats"]["hints"] > 0]
    weights = [r["row"]["weight"] for r in records]

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    n = len(stats)
    return {
        "total_examples": total,
        "enhanced_examples": n,
        "converged_examples": sum(s["converged"] for s in stats),
        "convergence_rate": round(sum(s["converged"] for s in stats) / n, 4) if n else 0.0,
        "correct_final_answers": sum(s["correct"] for s in stats),
        "mean_iterations": mean([s["iterations"] for s in stats]),
        "average_iterations": mean([s["iterations"] for s in stats]),  # GRANGER's name
        "hints_given": sum(s["hints"] for s in stats),
        "examples_with_hints": len(hinted),
        "entropy_first_round_mean": mean([s["entropy_first"] for s in stats]),
        "entropy_final_round_mean": mean([s["entropy_final"] for s in stats]),
        "entropy_before_hints_mean": mean([r["stats"]["entropy_first"] for r in hinted]),
        "entropy_after_hints_mean": mean([r["stats"]["entropy_final"] for r in hinted]),
        "weight_mean": mean(weights),
        "weight_min": min(weights) if weights else None,
        "weight_max": max(weights) if weights else None,
        "zero_weight_examples": sum(w == 0 for w in weights),
        "teacher_calls": sum(s["teacher_calls"] for s in stats),
        "judge_calls": sum(s["judge_calls"] for s in stats),
    }


def progress_metrics(summary: dict[str, Any], failed: int) -> dict[str, float]:
    """What get_job shows while the job runs (keys under enhance/)."""
    keys = ("convergence_rate", "mean_iterations", "hints_given", "entropy_first_round_mean",
            "entropy_after_hints_mean", "weight_mean")
    metrics = {f"enhance/{k}": summary[k] for k in keys if summary.get(k) is not None}
    metrics["enhance/examples_failed"] = failed
    return metrics


def write_outputs(run: RunDirectory, config: StudentTeacherConfig, items: list[Item],
                  done: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """enhanced.jsonl (dataset order), iterations.jsonl and summary.json, from the finished records."""
    paths = enhance_paths(run)
    ordered = [done[item.key] for item in items if item.key in done]
    _write_lines(paths["enhanced"], [r["row"] for r in ordered])
    if config.save_iterations:
        _write_lines(paths["iterations"], [{"index": r["index"], "key": r["key"], **r["stats"],
                                            "weight": r["row"]["weight"], "rounds": r["rounds"]} for r in ordered])
    summary = {**summarize(ordered, len(items)), **extra, "config": {
        "teacher": config.teacher.describe(), "judge": config.judge_name, "hint_rule": config.hint_rule,
        "entropy_threshold": config.entropy_threshold, "min_span_tokens": config.min_span_tokens,
        "max_iterations": config.max_iterations, "student_temperature": config.student_temperature,
        "teacher_temperature": config.teacher.temperature, "thinking_style": config.thinking_style,
        "weight": config.weight.model_dump()},
        "weight_formula": weight_formula(config.weight), "dataset": config.dataset,
        "files": {k: str(v) for k, v in paths.items() if k in ("enhanced", "summary") or v.exists()}}
    run.write_json(paths["summary"], summary)
    return summary


def weight_formula(cfg: ExampleWeightConfig) -> str:
    if cfg.function != "quality_entropy":
        return f"weight = clip({cfg.function}(stats), {cfg.min_weight:g}, {cfg.max_weight:g})"
    return (f"weight = clip(q^{cfg.quality_power:g} · (1 + {cfg.entropy_scale:g} · H₁ / log V), "
            f"{cfg.min_weight:g}, {cfg.max_weight:g}); q = judge score of the final answer, H₁ = mean token "
            "entropy of the student's first attempt")


# -- progress file ------------------------------------------------------------------------------------


def append_progress(path: Path, record: dict[str, Any]) -> None:
    """One finished example, as one line in one write: a kill leaves whole lines or a partial last one."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_progress(path: Path) -> dict[str, dict[str, Any]]:
    """Finished records by key; a damaged line (the worker was killed mid-write) is skipped."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "key" in record and "row" in record:
                records[record["key"]] = record
    return records


def progress_file(path: Path) -> Path:
    """The progress.jsonl that `resume_from` names: the file, an enhance/ folder, or a run directory."""
    for candidate in (path, path / "progress.jsonl", path / ENHANCE_DIR / "progress.jsonl"):
        if candidate.is_file():
            return candidate
    raise DatasetError("resume_from names no progress.jsonl of an enhancement run; pass the earlier job's id or "
                       "its run directory", path=path)


def adopt_progress(source: Path, target: Path, keys: set[str]) -> None:
    """Copy an earlier run's finished examples (those of this dataset) into this run's progress."""
    source = progress_file(source)
    have = read_progress(target)
    adopted = [r for k, r in read_progress(source).items() if k in keys and k not in have]
    for record in adopted:
        append_progress(target, record)
    log.info("resumed %d finished examples from %s", len(adopted), source)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
