"""Supervised fine-tuning on chat/instruction data: the `task="sft"` method.

Rows are tokenised through the model's chat template with the label mask of `data.chat_tokens`
(loss on assistant tokens by default), then trained by `EnhancedUnslothTrainer`, whose loss goes
through the fused entropy-weighted kernel.
"""

from __future__ import annotations

from typing import Any

from finetune_mcp.train.loop import TrainingRun, build_trainer, fit_and_save


def train_sft(training: TrainingRun) -> dict[str, Any]:
    from finetune_mcp.data.chat_tokens import tokenize_examples

    config, tokenizer = training.config, training.loaded.tokenizer
    train_ds = tokenize_examples(training.data.train, tokenizer, config.max_seq_length, config.assistant_only_loss)
    eval_ds = (
        tokenize_examples(training.data.validation, tokenizer, config.max_seq_length, config.assistant_only_loss)
        if training.data.validation else None
    )
    return fit_and_save(training, build_trainer(training, train_ds, eval_ds), train_ds, eval_ds)
