"""Supervised fine-tuning on chat/instruction data: the `sft` method's worker body.

Rows are tokenised through the model's chat template with the label mask of `data.chat_tokens`
(loss on assistant tokens by default), then trained by `EnhancedUnslothTrainer` (`trainer.py`),
whose loss goes through the fused entropy-weighted kernel.
"""

from __future__ import annotations

import os
from typing import Any

from finetune_mcp.train.builder import TrainerParts, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save


def sft_parts(training: TrainingRun, *, trainer_class: type | None = None, config_kwargs: dict[str, Any] | None = None,
              **trainer_kwargs: Any) -> TrainerParts:
    """SFTConfig and the entropy-aware SFT trainer (or a subclass: the reranker's) with the run's
    entropy settings; `config_kwargs` and `trainer_kwargs` add or override the method's arguments."""
    from trl import SFTConfig

    from finetune_mcp.train.sft.trainer import EnhancedUnslothTrainer

    config, plan = training.config, training.plan
    # the step plan's decoder applies to this trainer's own loss path; a subclass (the reranker)
    # computes its own forward, and its collator builds its own batches
    own = trainer_class is None and plan is not None
    return TrainerParts(
        config_class=SFTConfig,
        trainer_class=trainer_class or EnhancedUnslothTrainer,
        config_kwargs={"max_length": config.max_seq_length, **(plan.sft_arguments() if own else {}),
                       **(config_kwargs or {})},
        trainer_kwargs={
            "entropy_weighting": config.enable_entropy_weighting,
            "entropy_config": config.entropy,
            "entropy_sample_tokens": config.entropy_sample_tokens,
            "loss_implementation": os.environ.get("FINETUNE_MCP_LOSS_IMPL", "auto"),
            "decoder": plan.decoder if own else "model",
            **trainer_kwargs,
        },
    )


def train_sft(training: TrainingRun) -> dict[str, Any]:
    from finetune_mcp.data.chat_tokens import tokenize_examples

    config, tokenizer = training.config, training.loaded.tokenizer
    train_ds = tokenize_examples(training.data.train, tokenizer, config.max_seq_length, config.assistant_only_loss)
    eval_ds = (
        tokenize_examples(training.data.validation, tokenizer, config.max_seq_length, config.assistant_only_loss)
        if training.data.validation else None
    )
    built = build_trainer(training, train_ds, eval_ds, sft_parts(training))
    return fit_and_save(training, built, train_ds, eval_ds)
