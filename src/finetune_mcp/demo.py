"""`finetune-mcp demo`: the whole product on a laptop, offline, in under two minutes.

Builds a small random Qwen3 and synthetic tasks with checkable answers under $FINETUNE_MCP_HOME/demo
and runs an experiment: entropy weighting off (`standard`) and on (`entropy`), 3 seeds each, the
same data and settings otherwise, every run scored on the same held-out paraphrases (questions
asked in words training never used). It reports what 3 seeds can support: each arm's mean ± std
with every seed's value, the paired difference with its 95 % interval, and the verdict — next to
the untrained base on the same rows (`experiment/base.json`). Everything lands in an ordinary
experiment directory (one run directory per arm and seed), so TensorBoard, the MCP tools and the
card generator work on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.experiment.spec import ExperimentSpec, build_experiment_spec

# A model size that learns the synthetic tasks in ~150 CPU steps with LoRA alone.
DEMO_MODEL = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256)
DEMO_TRAINING = dict(
    max_steps=150, learning_rate=1e-2, per_device_train_batch_size=16, gradient_accumulation_steps=1,
    lora_r=16, lora_alpha=16, max_seq_length=64, logging_steps=10, warmup_ratio=0.05,
    lr_scheduler_type="cosine", save_steps=10_000, validation_split=0.1, seed=3407,
)
DEMO_SEEDS = 3
HELDOUT = 60
MAX_NEW_TOKENS = 6  # every answer is one short word or number


@dataclass
class DemoReport:
    home: Path
    model_dir: Path
    dataset: Path
    heldout: Path
    experiment: Path  # the experiment's directory (runs/, experiment/table.json, report.md, plot.png)
    table: dict[str, Any]
    base: dict[str, float]  # the untrained base model's held-out metrics, on the same rows


def demo_spec(model_dir: Path, dataset: Path, heldout: Path, run_dir: Path) -> ExperimentSpec:
    return build_experiment_spec({
        "kind": "experiment", "model": str(model_dir), "dataset": str(dataset), **DEMO_TRAINING,
        "arms": ["standard", "entropy"], "seeds": DEMO_SEEDS, "eval_dataset": str(heldout),
        "max_new_tokens": MAX_NEW_TOKENS, "run_dir": str(run_dir),
    })


def write_heldout(path: Path, n: int = HELDOUT, seed: int = 1) -> Path:
    """The held-out paraphrases as conversations: the assistant reply is the reference answer."""
    from finetune_mcp.testing import heldout_examples

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": e["question"]}, {"role": "assistant", "content": e["answer"]}]}
            for e in heldout_examples(n, seed=seed)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def score_base(spec: ExperimentSpec) -> dict[str, float]:
    """The untrained base model on the experiment's held-out rows, scored as every run is."""
    from finetune_mcp.experiment.scoring import load_heldout, score_run
    from finetune_mcp.train.inference import load_base
    from finetune_mcp.train.model import LoadedModel

    model, tokenizer = load_base(spec.model)
    metrics, _ = score_run(LoadedModel(model, tokenizer, "hf", "cpu"), load_heldout(spec), spec)
    return metrics


def run_demo(home: Path, run: Callable[[ExperimentSpec, Path], object] | None = None) -> DemoReport:
    """Build, score the base, run the experiment. `run(spec, run_dir)` defaults to `run_experiment`."""
    from finetune_mcp.experiment.workflow import experiment_paths, run_experiment
    from finetune_mcp.runs.rundir import RunDirectory
    from finetune_mcp.testing import build_tiny_model, write_dataset

    root = home / "demo"
    model_dir = build_tiny_model(root / "model", **DEMO_MODEL)
    dataset = write_dataset(root / "data" / "train.jsonl", "messages", n=600, seed=0)
    heldout = write_heldout(root / "data" / "heldout.jsonl")
    run_dir = home / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = demo_spec(model_dir, dataset, heldout, run_dir)
    base = score_base(spec)
    (run or run_experiment)(spec, run_dir)
    paths = experiment_paths(RunDirectory(run_dir))
    RunDirectory(run_dir).write_json(paths["folder"] / "base.json", base)  # the untrained base, same rows
    table = json.loads(paths["table"].read_text(encoding="utf-8"))
    return DemoReport(home=home, model_dir=model_dir, dataset=dataset, heldout=heldout, experiment=run_dir,
                      table=table, base=base)
