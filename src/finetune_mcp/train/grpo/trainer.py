"""`FusedGRPOTrainer`: TRL's GRPOTrainer whose log-probabilities and loss go through the fused kernel.

Overridden hooks, each because TRL's needs full logits or its Triton-only head:
- `_get_per_token_logps_and_entropies`: reference / old log-probs (no gradient) from the decoder's
  hidden states and `linear_entropy_ce`;
- `_compute_loss`: `loss.fused_grpo_loss` (policy term as signed per-token CE weights, the top-entropy
  mask global over ranks, KL, the entropy bonus), plus the metrics TRL logs and the entropy of the
  tokens inside and outside the mask; the completion tokens' entropies feed the entropy tracker.
`fused_loss=false` keeps TRL's own loss.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer

from finetune_mcp.train.grpo.loss import fused_grpo_loss, token_scale
from finetune_mcp.train.sft.trainer import last_hidden_states, unwrap_causal_lm
from finetune_mcp.train.trl_method import MethodTrainerMixin


class FusedGRPOTrainer(MethodTrainerMixin, GRPOTrainer):
    def __init__(self, *args: Any, settings: Any, loss_implementation: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.loss_implementation = loss_implementation

    def _completion_hidden(self, model, input_ids, attention_mask, logits_to_keep):
        causal_lm = unwrap_causal_lm(model)
        hidden = last_hidden_states(model, causal_lm, {"input_ids": input_ids, "attention_mask": attention_mask})
        return causal_lm, hidden[:, -logits_to_keep - 1:-1]  # position p−1 predicts token p

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **_: Any):
        if not self.settings.fused_loss:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **_)
        from finetune_mcp.kernels import linear_entropy_ce

        causal_lm, hidden = self._completion_hidden(model, input_ids, attention_mask, logits_to_keep)
        ids = input_ids[:, -logits_to_keep:]
        labels = ids.masked_fill(attention_mask[:, -logits_to_keep:] == 0, -100)
        lm_head = causal_lm.lm_head
        out = linear_entropy_ce((hidden / self.temperature).reshape(-1, hidden.shape[-1]), lm_head.weight,
                                labels.reshape(-1), weight_fn=None, bias=lm_head.bias,
                                implementation=self.loss_implementation)
        logps = (-out.ce).view_as(ids)
        return logps, (out.entropy.view_as(ids) if compute_entropy else None), None

    def _gather(self, values: torch.Tensor) -> torch.Tensor:
        pad = -1e9  # entropies are ≥ 0: the sentinel cannot be a real value (as TRL's get_high_entropy_mask)
        gathered = self.accelerator.gather(self.accelerator.pad_across_processes(values, dim=0, pad_index=pad))
        return gathered[gathered != pad]

    def _compute_loss(self, model, inputs):
        if not self.settings.fused_loss:
            return super()._compute_loss(model, inputs)
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], mask], dim=1)
        causal_lm, hidden = self._completion_hidden(model, input_ids, attention_mask, completion_ids.size(1))
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        num_items = inputs["num_items_in_batch"].float().clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            num_items = num_items * accumulation / self.args.steps_per_generation
        scale = token_scale(self.loss_type, mask, num_items=num_items, accumulation=accumulation,
                            max_completion_length=self.max_completion_length)
        lm_head = causal_lm.lm_head
        out = fused_grpo_loss(
            hidden, lm_head.weight, completion_ids, mask, inputs["advantages"], scale=scale,
            temperature=self.temperature, top_entropy_quantile=self.settings.top_entropy_quantile,
            entropy_bonus=self.settings.entropy_bonus, accumulation=accumulation, beta=self.beta,
            ref_logps=inputs.get("ref_per_token_logps"), bias=lm_head.bias,
            gather=self._gather if self.accelerator.num_processes > 1 else None,
            implementation=self.loss_implementation,
        )
        self._log_entropy(mode, out, mask, completion_ids)
        return out.loss

    def _log_entropy(self, mode: str, out: Any, mask: torch.Tensor, completion_ids: torch.Tensor) -> None:
        valid = mask.bool()

        def global_mean(values: torch.Tensor, where: torch.Tensor) -> float:
            totals = self.accelerator.reduce(torch.stack([(values * where).sum(), where.sum().float()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["entropy"].append(global_mean(out.entropy, valid.float()))
        if out.entropy_mask is not None:
            inside = out.entropy_mask.float()
            self._metrics[mode]["entropy/masked_in"].append(global_mean(out.entropy, inside))
            self._metrics[mode]["entropy/masked_out"].append(global_mean(out.entropy, valid.float() - inside))
            self._metrics[mode]["entropy/mask_share"].append(global_mean(inside, valid.float()))
        if out.kl is not None:
            self._metrics[mode]["kl"].append(self.accelerator.gather(out.kl.reshape(1)).mean().item())
        ent = out.entropy[valid]
        self.entropy_trackers[mode].update(ent, -out.logps[valid], torch.ones_like(ent), completion_ids[valid])
