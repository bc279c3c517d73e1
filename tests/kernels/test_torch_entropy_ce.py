"""The oracle (chunked torch) against naive float64 torch, and the entropy math itself."""

from __future__ import annotations

import math

import pytest
import torch

from finetune_mcp.kernels import linear_entropy_ce
from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE
from finetune_mcp.kernels.weights import BUILTIN_WEIGHT_FNS, WeightSpec, entropy_weights


def naive_loss(x, w, b, y, spec, ignore_index, softcap, normalizer=None):
    """Full-logit float64 torch: the definition, differentiated by autograd (w detached)."""
    z = x @ w.T + (b if b is not None else 0.0)
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    valid = y != ignore_index
    logp = torch.log_softmax(z, -1)
    ce = -logp.gather(1, torch.where(valid, y, 0)[:, None]).squeeze(1)
    ent = -(logp.exp() * logp).sum(-1)
    wts = entropy_weights(
        ent.detach(), math.log(w.shape[0]), spec, log_prob=-ce.detach(), valid=valid
    ).double() * valid
    norm = valid.sum().clamp(min=1) if normalizer is None else torch.as_tensor(normalizer, dtype=torch.float64)
    return (wts * torch.where(valid, ce, 0.0)).sum() / norm, torch.where(valid, ce, 0.0), torch.where(valid, ent, 0.0)


@pytest.mark.parametrize("fn", [*BUILTIN_WEIGHT_FNS, None])
@pytest.mark.parametrize(("softcap", "with_bias"), [(None, False), (4.0, True)])
def test_oracle_matches_naive_float64(fn, softcap, with_bias):
    g = torch.Generator().manual_seed(1)
    n, d, v = 29, 16, 211
    x = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.randn(v, d, dtype=torch.float64, generator=g) * 0.7).requires_grad_()
    b = (torch.randn(v, dtype=torch.float64, generator=g)).requires_grad_() if with_bias else None
    y = torch.randint(0, v, (n,), generator=g)
    y[[2, 7]] = -100
    spec = WeightSpec(fn=fn, scale=1.5) if fn else None
    loss, ce, ent, _ = ChunkedEntropyCE.apply(x, w, b, y, spec, -100, None, softcap, 8)
    grads = torch.autograd.grad(loss, [t for t in (x, w, b) if t is not None])
    ref_loss, ref_ce, ref_ent = naive_loss(x, w, b, y, spec, -100, softcap)
    ref_grads = torch.autograd.grad(ref_loss, [t for t in (x, w, b) if t is not None])
    torch.testing.assert_close(loss, ref_loss.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ce, ref_ce.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ent, ref_ent.float(), rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_entropy_of_uniform_is_log_vocab_and_of_one_hot_is_zero():
    v, d = 500, 8
    x = torch.randn(3, d, dtype=torch.float64)
    w = torch.zeros(v, d, dtype=torch.float64)  # every logit equal: the uniform distribution
    out = linear_entropy_ce(x, w, torch.tensor([0, 1, 2]), implementation="torch")
    torch.testing.assert_close(out.entropy, torch.full((3,), math.log(v), dtype=torch.float32))
    torch.testing.assert_close(out.ce, torch.full((3,), math.log(v), dtype=torch.float32))
    bias = torch.zeros(v, dtype=torch.float64)
    bias[7] = 200.0  # p = one-hot on token 7 (e^-200 underflows nothing in fp64 but is ≈ 0)
    out = linear_entropy_ce(x, w, torch.tensor([7, 7, 3]), bias=bias, implementation="torch")
    assert out.entropy.abs().max().item() < 1e-6
    assert out.ce[:2].abs().max().item() < 1e-6 and out.ce[2].item() == pytest.approx(200.0)


def test_entropy_agrees_with_torch_categorical():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(17, 12, dtype=torch.float64, generator=g)
    w = torch.randn(333, 12, dtype=torch.float64, generator=g) * 0.8
    y = torch.randint(0, 333, (17,), generator=g)
    out = linear_entropy_ce(x, w, y, implementation="torch")
    dist = torch.distributions.Categorical(logits=x @ w.T)
    torch.testing.assert_close(out.entropy.double(), dist.entropy(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.ce.double(), -dist.log_prob(y), rtol=1e-6, atol=1e-6)
