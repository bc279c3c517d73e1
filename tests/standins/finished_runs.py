"""Two real finished tiny runs (entropy weighting on and off, same data and seed), trained once per
test session through `run_training` and shared by the screenshot, card and deploy tests.

The runs live under pytest's session temp dir in folders named like job ids, so the tool tests can
register them as jobs. Tests that change a run work on `copy_run(...)`, never on these.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from finetune_mcp.runs.rundir import RunDirectory

WEIGHTED_ID = "ft-00000000e1e1"
PLAIN_ID = "ft-00000000ba5e"
_CACHE: dict[Path, TinyRuns] = {}


@dataclass(frozen=True)
class TinyRuns:
    model: Path
    dataset: Path
    weighted: RunDirectory
    plain: RunDirectory


def tiny_config(model: Path, dataset: Path, *, entropy: bool) -> dict:
    """Two epochs of 15 steps: enough for curves, box plots per epoch and eval points, ~2 s of CPU."""
    return {
        "model": str(model), "dataset": str(dataset), "num_train_epochs": 2, "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1, "max_seq_length": 128, "learning_rate": 5e-3, "lora_r": 8,
        "logging_steps": 2, "enable_entropy_weighting": entropy, "entropy_sample_tokens": 2000,
    }


def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """Train (once per session) and return the A/B pair."""
    key = tmp_path_factory.getbasetemp()
    if key not in _CACHE:
        from finetune_mcp.config import build_config
        from finetune_mcp.testing import build_tiny_model, write_dataset
        from finetune_mcp.train.workflow import run_training

        base = tmp_path_factory.mktemp("finished-runs")
        model = build_tiny_model(base / "tiny-model")
        dataset = write_dataset(base / "qa.jsonl", "messages", n=64)
        runs = {}
        for job_id, entropy in ((WEIGHTED_ID, True), (PLAIN_ID, False)):
            run = RunDirectory(base / "runs" / job_id)
            run_training(build_config(tiny_config(model, dataset, entropy=entropy)), run.root)
            runs[entropy] = run
        _CACHE[key] = TinyRuns(model=model, dataset=dataset, weighted=runs[True], plain=runs[False])
    return _CACHE[key]


def copy_run(run: RunDirectory, dest: Path) -> RunDirectory:
    """A private copy (same folder name, i.e. job id) that a test may change."""
    target = dest / run.root.name
    shutil.copytree(run.root, target, ignore=shutil.ignore_patterns("checkpoints", "screenshots", "card"))
    return RunDirectory(target)
