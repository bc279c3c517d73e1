"""`finetune-mcp demo`: the whole product on a laptop, offline, in about a minute.

Builds a small random Qwen3 and synthetic tasks with checkable answers under
$FINETUNE_MCP_HOME/demo, fine-tunes it twice with the same data and seed — entropy weighting off,
then on — and compares loss, entropy and accuracy on held-out paraphrases against the untrained
base. Everything lands in ordinary run directories, so TensorBoard, the MCP tools and the card
generator work on them as on any job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig, build_config

# A model size that learns the synthetic tasks in ~200 CPU steps with LoRA alone.
DEMO_MODEL = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256)
DEMO_TRAINING = dict(
    max_steps=200, learning_rate=1e-2, per_device_train_batch_size=16, gradient_accumulation_steps=1,
    lora_r=16, lora_alpha=16, max_seq_length=64, logging_steps=10, warmup_ratio=0.05,
    lr_scheduler_type="cosine", save_steps=10_000, validation_split=0.1, seed=3407,
)
HELDOUT = 60


@dataclass
class DemoArm:
    name: str
    run_dir: Path
    result: dict[str, Any]
    heldout_accuracy: float


@dataclass
class DemoReport:
    home: Path
    model_dir: Path
    dataset: Path
    base_accuracy: float
    arms: list[DemoArm]


def demo_configs(model_dir: Path, dataset: Path) -> list[tuple[str, EnhancedTrainingConfig]]:
    base = dict(model=str(model_dir), dataset=str(dataset), **DEMO_TRAINING)
    return [
        ("entropy off", build_config({**base, "enable_entropy_weighting": False})),
        ("entropy on", build_config({**base, "enable_entropy_weighting": True})),
    ]


def heldout_accuracy(model: Any, tokenizer: Any, examples: list[dict[str, str]]) -> float:
    from finetune_mcp.testing import answer_is_correct
    from finetune_mcp.train.inference import generate_replies

    replies = generate_replies(model, tokenizer, [e["question"] for e in examples], max_new_tokens=6)
    return sum(answer_is_correct(r, e["answer"]) for r, e in zip(replies, examples, strict=True)) / len(examples)


def run_demo(home: Path, train=None) -> DemoReport:
    """Build, train both arms, evaluate. `train(config, run_dir) -> result` defaults to run_training."""
    from finetune_mcp.testing import build_tiny_model, heldout_examples, write_dataset
    from finetune_mcp.train.inference import load_adapter, load_base
    from finetune_mcp.train.workflow import run_training

    train = train or run_training
    root = home / "demo"
    model_dir = build_tiny_model(root / "model", **DEMO_MODEL)
    dataset = write_dataset(root / "data" / "train.jsonl", "messages", n=600, seed=0)
    heldout = heldout_examples(HELDOUT, seed=1)
    base_model, base_tok = load_base(str(model_dir))
    base_acc = heldout_accuracy(base_model, base_tok, heldout)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    arms = []
    for name, config in demo_configs(model_dir, dataset):
        run_dir = home / "runs" / f"demo-{stamp}-{name.replace(' ', '-')}"
        result = train(config, run_dir)
        model, tokenizer = load_adapter(run_dir / "adapter")
        arms.append(DemoArm(name, run_dir, result, heldout_accuracy(model, tokenizer, heldout)))
    return DemoReport(home=home, model_dir=model_dir, dataset=dataset, base_accuracy=base_acc, arms=arms)
