"""What the TRL-trainer methods (DPO, KTO, ORPO, GRPO) share beyond the builder's base
(`train.builder`: TrainingArguments fields, sinks): the entropy trackers the sinks read, and a CPU
stand-in for TRL's Triton-only LM head.

TRL 1.15's DPO/KTO trainers compute log-probabilities through TRL's own Triton kernel
(`add_fused_lm_head`), even on a CPU, where Triton's interpreter cannot run it. On a machine without
CUDA, `MethodTrainerMixin._init_trackers` replaces that head by `torch_lm_head` (the same outputs from
full logits, one micro-batch at a time: fine for the tiny CPU models, never used on CUDA).
"""

from __future__ import annotations

from typing import Any


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


class MethodTrainerMixin:
    """Gives a TRL trainer the attributes the project's callbacks and `fit_and_save` read: entropy
    trackers (GRPO fills them with its completion tokens' entropies; DPO/KTO/ORPO leave them empty).
    `run_config` (the run's TrainingConfig) is the one keyword it adds to the trainer's own."""

    def __init__(self, *args: Any, run_config: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_trackers(run_config)

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


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)
