"""The fused GRPO loss against a naive full-logits GRPO loss (TRL's formula), gradients included."""

from __future__ import annotations

import pytest
import torch

from finetune_mcp.train.grpo.loss import fused_grpo_loss, global_quantile, token_scale


def _batch(seed: int = 0, b: int = 4, t: int = 7, d: int = 16, v: int = 37):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64) * 0.5
    ids = torch.randint(0, v, (b, t), generator=g)
    mask = torch.ones(b, t)
    mask[1, 4:] = 0  # a short completion
    mask[3, 2:] = 0
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    ref = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    return hidden, weight, ids, mask, adv, ref


def _naive(hidden, weight, ids, mask, adv, ref, *, loss_type, temperature, rho, beta, bonus, accumulation, num_items,
           max_len):
    """TRL 1.15 GRPOTrainer._compute_loss with full logits, on-policy (old logps = logps.detach())."""
    logits = hidden @ weight.T / temperature
    logp_all = torch.log_softmax(logits, -1)
    logps = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    entropy_mask = None
    if rho < 1.0:
        thr = torch.quantile(ent.detach()[mask.bool()].float(), 1 - rho)
        entropy_mask = (ent.detach() >= thr) & mask.bool()
    coef_1 = torch.exp(logps - logps.detach())
    coef_2 = torch.clamp(coef_1, 0.8, 1.28)
    a = adv.unsqueeze(1)
    per_token = -torch.min(coef_1 * a, coef_2 * a)
    if entropy_mask is not None:
        per_token = per_token * entropy_mask
    if beta:
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        per_token = per_token + beta * kl
    b = mask.shape[0]
    if loss_type == "dapo":
        loss = (per_token * mask).sum() / num_items
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum() / accumulation
    elif loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1)).mean() / accumulation
    else:
        loss = (per_token * mask).sum() / (b * max_len) / accumulation
    if bonus:
        eff = mask if entropy_mask is None else mask * entropy_mask
        loss = loss - bonus * (ent * eff).sum() / eff.sum() / accumulation
    return loss


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("rho,beta", [(1.0, 0.0), (0.8, 0.0), (0.5, 0.04)])
def test_fused_matches_naive_value_and_gradient(loss_type, rho, beta):
    hidden, weight, ids, mask, adv, ref = _batch()
    kw = dict(loss_type=loss_type, temperature=0.7, rho=rho, beta=beta, bonus=0.0, accumulation=2, num_items=11.0,
              max_len=9)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    naive = _naive(h1, w1, ids, mask, adv, ref, **kw)
    naive.backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    scale = token_scale(loss_type, mask, num_items=11.0, accumulation=2, max_completion_length=9)
    out = fused_grpo_loss(h2, w2, ids, mask, adv, scale=scale.double(), temperature=0.7, top_entropy_quantile=rho,
                          beta=beta, ref_logps=ref, accumulation=2, implementation="torch")
    out.loss.backward()
    torch.testing.assert_close(out.loss.double(), naive.double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-6)
    if rho < 1.0:
        share = out.entropy_mask.sum() / mask.sum()
        assert 0 < share < 1  # the mask keeps some tokens and drops others


def test_signed_token_weights_reach_the_kernel_gradient():
    """Negative advantages push log p(y) down: the kernel must keep the sign of token weights."""
    hidden, weight, ids, mask, _, _ = _batch(1)
    scale = token_scale("bnpo", mask, num_items=1, accumulation=1, max_completion_length=7)
    grads = []
    for sign in (1.0, -1.0):
        w = weight.clone().requires_grad_()
        out = fused_grpo_loss(hidden, w, ids, mask, torch.full((4,), sign, dtype=torch.float64), scale=scale.double(),
                              implementation="torch")
        out.loss.backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[0], -grads[1])
    assert grads[0].abs().sum() > 0


def test_entropy_bonus_gradient_is_the_expected_entropy_gradient():
    """The bonus's per-token weight (CE − H) is the score-function estimator of ∇H: averaged over
    y ~ p exactly (every vocabulary entry weighted by its probability) it equals autograd's ∇H."""
    g = torch.Generator().manual_seed(3)
    d, v = 8, 11
    x = torch.randn(1, d, generator=g, dtype=torch.float64)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64)
    w_exact = weight.clone().requires_grad_()
    logp = torch.log_softmax(x @ w_exact.T, -1)
    entropy = -(logp.exp() * logp).sum()
    (-entropy).backward()  # the bonus term, λ = 1
    probs = torch.softmax(x @ weight.T, -1).squeeze(0)
    w_est = weight.clone().requires_grad_()
    hidden = x.expand(v, d).reshape(v, 1, d)
    ids = torch.arange(v).reshape(v, 1)
    mask = torch.ones(v, 1)
    # every y once; the estimator's mean over y ~ p is Σ_y p(y)·(term for y): scale each row by p(y)·v
    out = fused_grpo_loss(hidden, w_est, ids, mask, torch.zeros(v, dtype=torch.float64),
                          scale=torch.zeros(v, 1, dtype=torch.float64), entropy_bonus=1.0, implementation="torch")
    ce = -torch.log_softmax(x @ weight.T, -1).squeeze(0)
    h = entropy.detach()
    w_probe = weight.clone().requires_grad_()
    lp = torch.log_softmax(x @ w_probe.T, -1).squeeze(0)
    (-(probs * (ce - h) * lp).sum()).backward()  # −E_y[(CE − H)·∇log p(y)] = −∇H
    torch.testing.assert_close(w_probe.grad, w_exact.grad, rtol=1e-6, atol=1e-9)
    out.loss.backward()  # and the fused call carries the same per-row weights (CE − H)/v
    manual = torch.zeros_like(weight)
    for y in range(v):
        wy = weight.clone().requires_grad_()
        lpy = torch.log_softmax(x @ wy.T, -1).squeeze(0)[y]
        (-((ce[y] - h) / v) * lpy).backward()
        manual += wy.grad
    torch.testing.assert_close(w_est.grad, manual, rtol=1e-6, atol=1e-9)


def test_global_quantile_uses_every_rank():
    local = torch.tensor([0.0, 1.0])
    other = torch.tensor([10.0, 11.0, 12.0])
    assert global_quantile(local, 0.5, lambda t: torch.cat([t, other])) == torch.tensor(10.0)
    assert global_quantile(local, 0.5, None) == torch.tensor(0.5)
