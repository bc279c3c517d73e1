"""Token lengths, truncation and the step count a run would have.

Steps follow transformers' Trainer: a device's dataloader has ceil(rows / (batch × devices))
batches, an epoch ceil(batches / gradient_accumulation_steps) optimiser steps (at least one), the
run max_steps or ceil(epochs × steps per epoch); warm-up is warmup_steps, else ceil(total ×
warmup_ratio) (`TrainingArguments.get_warmup_steps`). Statistics measured on a sample are scaled to
the whole split.
"""

from __future__ import annotations

import math
import random
import statistics

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.data.chat_tokens import IGNORE_INDEX
from finetune_mcp.preview.examples import EncodedRow
from finetune_mcp.preview.report import LengthReport


def steps(train_rows: int, config: EnhancedTrainingConfig, devices: int = 1) -> tuple[int, int, int, float]:
    """(steps per epoch, total steps, warm-up steps, epochs covered) for `train_rows` rows."""
    per_device = math.ceil(train_rows / devices) if train_rows else 0
    batches = math.ceil(per_device / config.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches / config.gradient_accumulation_steps), 1)
    total = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * per_epoch)
    warmup = config.warmup_steps if config.warmup_steps >= 1 else math.ceil(total * config.warmup_ratio)
    return per_epoch, total, warmup, round(total / per_epoch, 3)


def padded_tokens_per_step(lengths: list[int], batch: int, accumulation: int, seed: int) -> int:
    """Mean tokens a device processes per optimiser step when each micro-batch is padded to its
    longest row (the default collator), over seeded random batches as the trainer's sampler draws them."""
    if not lengths:
        return 0
    order = list(lengths)
    random.Random(seed).shuffle(order)
    if len(order) < batch:
        order = (order * math.ceil(batch / len(order)))[:batch]
    micro = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    per_micro = statistics.fmean(max(chunk) * len(chunk) for chunk in micro)
    return round(per_micro * accumulation)


def length_report(rows: list[EncodedRow], train_rows: int, config: EnhancedTrainingConfig,
                  devices: int = 1) -> tuple[LengthReport, int]:
    """The report, and the number of training rows estimated to lose every trained token."""
    limit = config.max_seq_length
    scale = train_rows / len(rows) if rows else 0.0
    full = [len(r.ids) for r in rows]
    kept = [min(n, limit) for n in full]
    cut = [r for r in rows if len(r.ids) > limit]
    trained_kept = [sum(label != IGNORE_INDEX for label in r.labels[:limit]) for r in rows]
    lost = sum(r.trained for r in rows) - sum(trained_kept)
    dropped = sum(1 for t in trained_kept if t == 0)
    per_epoch, total, warmup, epochs = steps(train_rows - round(dropped * scale), config, devices)
    quantiles = statistics.quantiles(full, n=20, method="inclusive") if len(full) > 1 else full * 19
    report = LengthReport(
        sampled_rows=len(rows),
        min=min(full, default=0),
        median=float(statistics.median(full)) if full else 0.0,
        p95=round(float(quantiles[18]), 1) if full else 0.0,
        max=max(full, default=0),
        truncated=round(len(cut) * scale),
        truncated_share=round(len(cut) / len(rows), 4) if rows else 0.0,
        truncated_part=_what_is_cut(cut, limit),
        trained_tokens_lost=round(lost * scale),
        tokens_per_epoch=round(sum(kept) * scale),
        trained_tokens_per_epoch=round(sum(trained_kept) * scale),
        padded_tokens_per_step=padded_tokens_per_step(
            [k for k, t in zip(kept, trained_kept, strict=True) if t], config.per_device_train_batch_size,
            config.gradient_accumulation_steps, config.seed),
        steps_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=warmup,
        epochs=epochs,
    )
    return report, round(dropped * scale)


def _what_is_cut(cut: list[EncodedRow], limit: int) -> str:
    if not cut:
        return f"nothing: every row fits max_seq_length={limit}"
    losing = [r for r in cut if any(label != IGNORE_INDEX for label in r.labels[limit:])]
    if not losing:
        return f"only untrained tokens (the end of {len(cut)} prompts or conversations after the last trained reply)"
    return (f"trained tokens in {len(losing)} of the {len(cut)} cut rows: the end of their last reply, its "
            "end-of-turn token included (those rows never learn to stop there)")
