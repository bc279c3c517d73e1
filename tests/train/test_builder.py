"""The trainer builder's shared base works for a trainer that keeps no entropy bookkeeping (as TRL's
DPO/GRPO trainers): callbacks and `fit_and_save` write events, TensorBoard and result.json without
entropy trackers; the base arguments are the one place the shared TrainingArguments are decided."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.testing import write_dataset
from finetune_mcp.train.builder import TrainerParts, base_arguments, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save


def _training(model: Path, tmp_path: Path, **fields) -> TrainingRun:
    from finetune_mcp.data.loader import load_examples
    from finetune_mcp.train.model import load_with_lora

    config = build_config({"model": str(model), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=12)),
                           "max_steps": 3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                           "max_seq_length": 96, "logging_steps": 1, "lora_r": 4, "backend": "hf", **fields})
    run = RunDirectory(tmp_path / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    return TrainingRun(config=config, run=run, loaded=load_with_lora(config, "hf"), data=load_examples(config.data),
                       started=time.time())


def test_base_arguments_build_every_trl_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import TrainingArguments
    from trl import SFTConfig

    training = _training(tiny_model_dir, tmp_path)
    base = base_arguments(training, evaluate=True)
    assert base["save_total_limit"] == 2 and base["report_to"] == "none"
    assert base["output_dir"] == str(training.run.checkpoints) and base["eval_strategy"] == "epoch"
    assert base_arguments(training, evaluate=False)["eval_strategy"] == "no"
    for config_class in (TrainingArguments, SFTConfig):  # every field is a TrainingArguments field
        config_class(**base)


@pytest.mark.slow
def test_a_trainer_without_entropy_trackers_trains_and_saves(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from finetune_mcp.data.chat_tokens import tokenize_examples

    training = _training(tiny_model_dir, tmp_path)
    tokenizer = training.loaded.tokenizer
    train_ds = tokenize_examples(training.data.train, tokenizer, 96)
    eval_ds = tokenize_examples(training.data.validation, tokenizer, 96)
    parts = TrainerParts(TrainingArguments, Trainer, trainer_kwargs={"data_collator": DataCollatorForSeq2Seq(tokenizer)})
    built = build_trainer(training, train_ds, eval_ds, parts)
    assert not hasattr(built.trainer, "entropy_trackers")

    result = fit_and_save(training, built, train_ds, eval_ds)

    assert result["status"] == "succeeded" and result["global_step"] == 3
    assert result["high_entropy_threshold"] is None and result["method"] == "sft"
    events = [json.loads(line) for line in training.run.events.read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "progress" in kinds and "epoch_end" in kinds
    assert (training.run.adapter / "adapter_config.json").is_file()
    assert list(training.run.tensorboard.glob("events.out.tfevents.*"))
