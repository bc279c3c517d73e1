"""Full-size heads on the device (`pytest -m gpu tests/kernels`): numerics against an fp32 reference
from the same bf16 inputs, and the extra memory. The small-shape oracle comparisons in
test_triton_entropy_ce.py also run compiled there."""

from __future__ import annotations

import math

import pytest
import torch

from finetune_mcp.kernels import linear_entropy_ce
from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE
from finetune_mcp.kernels.weights import WeightSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def head(d, v, n, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d, device="cuda", generator=g).bfloat16()
    w = (torch.randn(v, d, device="cuda", generator=g) * (3.0 / math.sqrt(d))).bfloat16()
    y = torch.randint(0, v, (n,), device="cuda", generator=g)
    y[torch.rand(n, device="cuda", generator=g) < 0.05] = -100
    return x, w, y


@pytest.mark.parametrize("fn", ["dft", "entropy_gated", "top_entropy"])
def test_new_variants_full_head_numerics(fn):
    """Each new variant at the Qwen3-4B head (LoRA: dX only; top_entropy scales dX after the pass)."""
    x, w, y = head(2560, 151936, 8192)
    spec = WeightSpec(fn=fn)
    xr = x.float().requires_grad_()
    ref = ChunkedEntropyCE.apply(xr, w.float(), None, y, spec, -100, None, None, 256)
    ref[0].backward()
    xs = x.clone().requires_grad_()
    out = linear_entropy_ce(xs, w, y, weight_fn=spec, implementation="triton")
    out.loss.backward()
    # dft's w = exp(−CE) carries the bf16 logits' CE error (~0.1 nat on a few tokens) into w
    assert abs(out.loss.item() - ref[0].item()) / ref[0].item() < (1e-2 if fn == "dft" else 2e-3)
    cos = torch.nn.functional.cosine_similarity(xs.grad.float().flatten(), xr.grad.flatten(), dim=0)
    if fn != "top_entropy":
        assert cos.item() > 0.999
        return
    valid = y != -100
    trained = (out.weights > 0).float().sum() / valid.sum()
    assert abs(trained.item() - 0.2) < 0.01  # the top 20 % of valid tokens by H
    # bf16 logits move H by up to ~0.1 nat, so tokens within that of the quantile may flip against
    # the fp32 oracle (seen: dX cosine 0.990 on the H200); few may, and given the kernel's own
    # selection the gradient must match the oracle's exactly as for every other variant.
    flipped = ((out.weights > 0) != (ref[3] > 0)) & valid
    assert flipped.float().sum() / valid.sum() < 0.01
    xm = x.float().requires_grad_()
    masked = ChunkedEntropyCE.apply(xm, w.float(), None, y, None, -100, None, None, 256, out.weights.float())
    masked[0].backward()
    cos = torch.nn.functional.cosine_similarity(xs.grad.float().flatten(), xm.grad.flatten(), dim=0)
    assert cos.item() > 0.999


@pytest.mark.parametrize(("d", "v"), [(2560, 151936), (4096, 128256)], ids=["qwen3-4b", "llama3-8b"])
def test_full_head_numerics_and_memory(d, v):
    n = 8192
    x, w, y = head(d, v, n)
    xr = x.float().requires_grad_()
    ref = ChunkedEntropyCE.apply(xr, w.float(), None, y, WeightSpec(), -100, None, None, 256)
    ref[0].backward()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    xs = x.clone().requires_grad_()
    base += xs.numel() * 2
    out = linear_entropy_ce(xs, w, y, implementation="triton")
    out.loss.backward()
    torch.cuda.synchronize()
    extra_mb = (torch.cuda.max_memory_allocated() - base) / 1e6
    assert abs(out.loss.item() - ref[0].item()) / ref[0].item() < 1e-3
    cos = torch.nn.functional.cosine_similarity(xs.grad.float().flatten(), xr.grad.flatten(), dim=0)
    assert cos.item() > 0.999
    # Per token, bf16 logits move H and CE by up to ~0.1 nat on a few tokens (as in every bf16-tile
    # kernel); on average far less.
    for got, want in ((out.entropy, ref[2]), (out.ce, ref[1])):
        assert (got - want).abs().max().item() < 0.3
        assert (got - want).abs().mean().item() < 1e-2
    assert extra_mb < 1.5 * x.numel() * 2 / 1e6 + 256, f"{extra_mb:.0f} MB above the inputs"


@pytest.mark.parametrize("fn", ["exponential", "dft", "entropy_gated", "top_entropy"])
def test_vocab_not_multiple_of_16_bias_softcap_trainable_head(fn):
    # top_entropy with a trainable head and bias: the statistics pre-pass, compiled
    x, w, y = head(512, 32003, 1000, seed=1)
    b = torch.randn(32003, device="cuda").bfloat16()
    outs = []
    for impl in ("triton", "torch"):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        out = linear_entropy_ce(xs, ws, y, bias=bs, softcap=10.0, weight_fn=fn, implementation=impl)
        out.loss.backward()
        outs.append((out, xs.grad, ws.grad, bs.grad))
    (o, *g), (r, *rg) = outs
    # top_entropy: a token whose H sits within rounding of the threshold may fall on either side
    tol = 5e-3 if fn == "top_entropy" else 1e-3
    torch.testing.assert_close(o.loss, r.loss, rtol=tol, atol=tol)
    torch.testing.assert_close(o.entropy, r.entropy, rtol=1e-2, atol=1e-2)
    for got, want in zip(g, rg, strict=True):
        cos = torch.nn.functional.cosine_similarity(got.float().flatten(), want.float().flatten(), dim=0)
        assert cos.item() > 0.999
