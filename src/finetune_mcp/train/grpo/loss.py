"""Entropy-aware GRPO loss through the fused kernel: per-token signed weights on CE, never N×V logits.

On-policy GRPO (one update per generation batch: TRL's num_iterations = 1, steps_per_generation =
gradient_accumulation_steps) has ratio π/π_old = 1 at the update, so the clipped surrogate's gradient
is the plain policy gradient. With CE_t = −log p(y_t) (logits divided by the sampling temperature, as
TRL does), s_t the loss type's normaliser per token and m_t the entropy mask:

  policy   L_pg  = Σ_t s_t·(−A_t·m_t·ratio_t)             ∇ = Σ_t s_t·A_t·m_t·∇CE_t
  KL (β>0) L_kl  = Σ_t s_t·β·k3_t, k3 = e^{r−lp} − (r−lp) − 1, r = ref log p, lp = log p
                                                         ∇ = −Σ_t s_t·β·(1 − e^{r−lp})·∇CE_t
  bonus    L_H   = −λ·Σ_t m_t·H_t / (Σ m · accumulation)  ∇H_t ≈ −(CE_t − H_t)·∇CE_t
so one call `linear_entropy_ce(h, W, y, weight_fn=None, token_weights=w, normalizer=1)` with
  w_t = s_t·(A_t·m_t − β·(1 − e^{r−lp})) + λ·m_t·(CE_t − H_t) / (Σ m · accumulation)
has exactly the gradient of L_pg + L_kl, and of L_H through the score-function estimator
∇H = −E_{y∼p}[(log p(y) + H)·∇log p(y)] (unbiased: the completion tokens are sampled from p at the
same temperature). The value returned is the objective's value (TRL's), with that gradient.

m_t (Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective RL for
LLM Reasoning"; TRL's `top_entropy_quantile`): m_t = 1 if H_t ≥ Q_{1−ρ}(H of every completion token of
the step, gathered over all ranks) else 0, so ρ is the share kept (0.2: the top 20 %). It multiplies the policy term only (not KL); masked tokens still
count in the normaliser s_t. ρ = 1 turns it off.

When m, KL or the bonus are on, their weights need CE and H first: a statistics pass of the LM head
runs without gradient (one extra hidden·Wᵀ, no decoder work) before the weighted pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from finetune_mcp.kernels import linear_entropy_ce

Gather = Callable[[torch.Tensor], torch.Tensor]  # a rank's 1-D values → every rank's, concatenated


@dataclass
class GRPOLossOutput:
    """`loss`: the objective's value with the gradient above. Per completion token, [B, T] fp32 (0 on
    padding), detached: `logps`, `entropy`; `entropy_mask` [B, T] bool (None when ρ = 1); `kl` the
    masked mean KL (None without β)."""

    loss: torch.Tensor
    logps: torch.Tensor
    entropy: torch.Tensor
    entropy_mask: torch.Tensor | None
    kl: torch.Tensor | None


def token_scale(loss_type: str, mask: torch.Tensor, *, num_items: torch.Tensor | float, accumulation: int,
                max_completion_length: int) -> torch.Tensor:
    """s_t [B, T]: how TRL's loss type turns Σ per-token terms into the loss (`GRPOTrainer._compute_loss`).
    dapo: 1 / num_items (the generation batch's tokens, rescaled to one accumulation window by the
    caller); bnpo: 1 / (tokens in the micro-batch · accumulation); grpo: 1 / (|o_i| · B · accumulation);
    dr_grpo: 1 / (B · max_completion_length · accumulation)."""
    mask = mask.float()
    batch = mask.shape[0]
    if loss_type == "dapo":
        return mask / torch.as_tensor(num_items, dtype=torch.float32, device=mask.device).clamp(min=1.0)
    if loss_type == "bnpo":
        return mask / (mask.sum().clamp(min=1.0) * accumulation)
    if loss_type == "grpo":
        return mask / (mask.sum(-1, keepdim=True).clamp(min=1.0) * batch * accumulation)
    if loss_type == "dr_grpo":
        return mask / (batch * max_completion_length * accumulation)
    raise ValueError(f"loss_type {loss_type!r} has no fused form; use dapo, bnpo, grpo or dr_grpo")


def global_quantile(values: torch.Tensor, q: float, gather: Gather | None) -> torch.Tensor:
    """The q-quantile of `values` (1-D) over every rank (`gather`), as torch.quantile computes it."""
    everything = gather(values) if gather is not None else values
    if everything.numel() == 0:
        return torch.tensor(float("inf"), device=values.device)
    return torch.quantile(everything.float(), q)


def fused_grpo_loss(
    hidden: torch.Tensor,  # [B, T, d] decoder states at the positions that predict the completion tokens
    weight: torch.Tensor,  # [V, d] lm_head
    completion_ids: torch.Tensor,  # [B, T]
    mask: torch.Tensor,  # [B, T] 1 on completion tokens
    advantages: torch.Tensor,  # [B] or [B, T]
    *,
    scale: torch.Tensor,  # [B, T] s_t (token_scale)
    temperature: float = 1.0,
    top_entropy_quantile: float = 1.0,
    entropy_bonus: float = 0.0,
    accumulation: int = 1,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,  # [B, T], needed when beta > 0
    bias: torch.Tensor | None = None,
    gather: Gather | None = None,
    implementation: str = "auto",
) -> GRPOLossOutput:
    """The loss of the module docstring for one micro-batch."""
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (the reference model's per-token log-probabilities)")
    valid = mask.bool()
    h = hidden[valid] / temperature  # [n, d]: (h/τ)·Wᵀ = z/τ
    y = completion_ids[valid]  # [n]
    adv = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).expand_as(mask)[valid].float()
    s = scale[valid].float()
    with torch.no_grad():
        stats = linear_entropy_ce(h.detach(), weight, y, weight_fn=None, bias=bias, normalizer=1.0,
                                  implementation=implementation)
    ce, ent = stats.ce, stats.entropy
    m = torch.ones_like(ent)
    if top_entropy_quantile < 1.0:
        m = (ent >= global_quantile(ent, 1.0 - top_entropy_quantile, gather)).float()
    w = s * adv * m
    value = -(s * adv * m).sum()
    kl = None
    if beta > 0:
        ref = ref_logps[valid].float()
        diff = ref + ce  # r − lp
        k3 = torch.exp(diff) - diff - 1.0
        w = w - s * beta * (1.0 - torch.exp(diff))
        value = value + (s * beta * k3).sum()
        kl = k3.mean() if k3.numel() else torch.zeros((), device=h.device)
    if entropy_bonus > 0:
        denom = m.sum().clamp(min=1.0) * accumulation
        w = w + entropy_bonus * m * (ce - ent) / denom
        value = value - entropy_bonus * (m * ent).sum() / denom
    out = linear_entropy_ce(h, weight, y, weight_fn=None, bias=bias, normalizer=1.0, token_weights=w.detach(),
                            implementation=implementation)
    loss = out.loss - out.loss.detach() + value.detach()

    def spread(values: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(mask.shape, dtype=torch.float32, device=values.device)
        full[valid] = values
        return full

    entropy_mask = spread(m).bool() & valid if top_entropy_quantile < 1.0 else None
    return GRPOLossOutput(loss=loss, logps=spread(-ce), entropy=spread(ent), entropy_mask=entropy_mask, kl=kl)
