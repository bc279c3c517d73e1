"""What the TRL-trainer methods (DPO, KTO, ORPO, GRPO) share: the TrainingArguments fields every
TRL config takes, the project's sinks (events, TensorBoard, throughput) and the entropy trackers
the sinks read.

TRL 1.15's DPO/KTO trainers compute log-probabilities through TRL's own Triton kernel
(`add_fused_lm_head`), even on a CPU, where Triton's interpreter cannot run it. On a machine without
CUDA, `MethodTrainerMixin._init_trackers` replaces that head by `torch_lm_head` (the same outputs from
full logits, one micro-batch at a time: fine for the tiny CPU models, never used on CUDA).
"""

from __future__ import annotations

import os
from typing import Any

from finetune_mcp.train.loop import BuiltTrainer, TrainingRun


def prepare_trl() -> None:
    """Call before importing trl in a worker (kept as the one place for TRL's process settings)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def torch_lm_head(model: Any, temperature: float = 1.0) -> None:
    """Patch `model.forward` as TRL's `add_fused_lm_head` does (same `fused_lm_head=True` contract:
    per-token log_probs, entropy, mean_logits, is_top1 over shifted labels) with plain torch logits."""
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    original = type(model).forward.__get__(model)

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return original(*args, **kwargs, **extra)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        head = self.get_output_embeddings()
        logits = head(hidden[mask]).float() / temperature  # [n, V]
        logp = torch.log_softmax(logits, -1)
        target = labels[mask]
        per_token = (logp.gather(-1, target[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1),
                     logits.mean(-1), (logits.argmax(-1) == target).float())
        log_probs, entropy, mean_logits, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / denominator, log_probs=log_probs, entropy=entropy,
                                   mean_logits=mean_logits, is_top1=is_top1.bool(), label_mask=mask)

    model.forward = types.MethodType(forward, model)


def base_args(training: TrainingRun, evaluate: bool) -> dict[str, Any]:
    """The TrainingArguments fields every TRL config shares, from the run's config."""
    import torch

    config, run = training.config, training.run
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps or config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.resolved_optim,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy=("steps" if config.eval_steps else "epoch") if evaluate else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=2,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=config.gradient_checkpointing and training.loaded.backend == "hf" and cuda,
        dataloader_num_workers=0,
    )


class MethodTrainerMixin:
    """Gives a TRL trainer the attributes the project's callbacks and `fit_and_save` read: entropy
    trackers (GRPO fills them with its completion tokens' entropies; DPO/KTO/ORPO leave them empty)."""

    def _init_trackers(self, config: Any) -> None:
        from finetune_mcp.train.entropy import EntropyTracker

        args = dict(threshold=config.entropy.high_entropy_threshold, percentile=config.entropy.high_entropy_percentile,
                    sample_size=config.entropy_sample_tokens, seed=config.seed)
        self.entropy_trackers = {"train": EntropyTracker(**args), "eval": EntropyTracker(**args)}
        self.last_entropy_window = None
        import torch

        if not torch.cuda.is_available():  # TRL's fused head is Triton-only (module docstring)
            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            torch_lm_head(model, getattr(self, "temperature", 1.0))
            if getattr(self, "ref_model", None) is not None:
                torch_lm_head(self.ref_model, getattr(self, "temperature", 1.0))


def attach_sinks(trainer: Any, training: TrainingRun, hparams: dict[str, Any]) -> BuiltTrainer:
    """Events, TensorBoard and throughput callbacks on `trainer` (as `loop.build_trainer` does)."""
    from transformers import PrinterCallback

    from finetune_mcp.train.callbacks import EventsCallback, PerfCallback, TensorBoardCallback

    config, loaded = training.config, training.loaded
    base = {"model": config.model, "method": config.task, "lora_r": config.lora_r, "learning_rate": config.learning_rate,
            "batch_size": config.per_device_train_batch_size, "grad_accum": config.gradient_accumulation_steps,
            "seed": config.seed, "backend": loaded.backend}
    trainer.remove_callback(PrinterCallback)
    tb = TensorBoardCallback(training.run, trainer, {**base, **hparams})
    trainer.add_callback(tb)
    trainer.add_callback(EventsCallback(training.run, trainer, loaded.tokenizer))
    perf = PerfCallback()
    trainer.add_callback(perf)
    return BuiltTrainer(trainer, tb, perf)


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)
