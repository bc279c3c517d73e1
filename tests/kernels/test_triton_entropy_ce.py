"""The fused Triton kernel against the torch oracle (interpreted on a CPU machine, compiled on CUDA).

Small shapes with every feature switched on somewhere: V not a multiple of the vocabulary block,
N = 1, chunks that split the tokens unevenly, ignore_index and all-ignored batches, very peaked and
very flat rows, softcap, bias, a trainable head, each builtin weight function, none, a user one.
"""

from __future__ import annotations

import math

import pytest
import torch

from finetune_mcp.kernels import linear_entropy_ce
from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE
from finetune_mcp.kernels.weights import BUILTIN_WEIGHT_FNS, WeightSpec

# Vocabulary block 256 against V = 1003: four blocks, the last one partial; chunks of 16 tokens.
SMALL = {"block_v": 256, "chunk_tokens": 16}


def make(device, n=37, d=32, v=1003, scale=0.5, dtype=torch.float32, seed=0, ignored=(3, 20)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(device, dtype)
    w = (torch.randn(v, d, generator=g) * scale).to(device, dtype)
    y = torch.randint(0, v, (n,), generator=g)
    y[[i for i in ignored if i < n]] = -100
    return x, w, y.to(device)


def run_both(kernel, x, w, y, *, spec=WeightSpec(), bias=None, softcap=None, normalizer=None,
             grad_w=False, config=None, grad_scale=1.0, token_weights=None):
    """(fused outputs, fused grads), (oracle outputs, oracle grads) on the same inputs."""
    results = []
    for fused in (True, False):
        xs = x.clone().requires_grad_()
        ws = w.clone().requires_grad_(grad_w)
        bs = bias.clone().requires_grad_() if bias is not None else None
        if fused:
            out = kernel.fused_linear_entropy_ce(
                xs, ws, y, spec=spec, bias=bs, softcap=softcap, normalizer=normalizer,
                token_weights=token_weights, config=kernel.EpilogueConfig(**(config or SMALL)),
            )
        else:
            out = ChunkedEntropyCE.apply(xs, ws, bs, y, spec, -100, normalizer, softcap, 16, token_weights)
        (out[0] * grad_scale).backward()
        grads = [t.grad for t in (xs, ws, bs) if t is not None and t.requires_grad]
        results.append((out, grads))
    return results


def assert_match(fused, oracle, rtol=2e-5, atol=2e-6):
    (out, grads), (ref, ref_grads) = fused, oracle
    for name, got, want in zip(("loss", "ce", "entropy", "weights"), out, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want.float(), rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("fn", [*BUILTIN_WEIGHT_FNS, None, "torch:add"])
def test_weight_functions_match_oracle(kernel, device, fn, monkeypatch):
    monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", "torch")  # user functions load only from allowed modules
    x, w, y = make(device)
    spec = WeightSpec(fn=fn, scale=2.0, relu_threshold=0.3) if fn else None
    assert_match(*run_both(kernel, x, w, y, spec=spec))
    if fn == "torch:add":  # the user-function path (weights in torch between launches) with token weights
        tw = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(7)).to(device)
        assert_match(*run_both(kernel, x, w, y, spec=spec, token_weights=tw))


@pytest.mark.parametrize(
    "case",
    ["n1", "default_block", "one_chunk", "softcap", "bias", "trainable_head", "normalizer", "grad_scale",
     "token_weights"],
)
def test_features_match_oracle(kernel, device, case):
    kw = {}
    x, w, y = make(device, n=1 if case == "n1" else 37)
    if case == "default_block":
        kw["config"] = {}  # the production block (min(8192, next pow2 of V)) and chunk
    elif case == "one_chunk":
        kw["config"] = {"block_v": 512, "chunk_tokens": 64}
    elif case == "softcap":
        w = w * 6.0  # logits of std ~17 against a cap of 5: the tanh saturates
        kw["softcap"] = 5.0
    elif case == "bias":
        kw["bias"] = torch.randn(w.shape[0], generator=torch.Generator().manual_seed(5)).to(device)
        kw["softcap"] = 8.0
    elif case == "trainable_head":
        kw["grad_w"] = True
    elif case == "normalizer":
        kw["normalizer"] = torch.tensor(123.0, device=device)
    elif case == "grad_scale":
        kw["grad_scale"] = 3.0
    elif case == "token_weights":  # per-example weights spread over tokens multiply w
        kw["token_weights"] = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(6)).to(device) * 2
    assert_match(*run_both(kernel, x, w, y, **kw))


def test_bfloat16_inputs_match_oracle(kernel, device):
    x, w, y = make(device, dtype=torch.bfloat16)
    # The same bf16 logit buffer on both sides; the gradient is rounded to bf16 before the dX GEMM.
    assert_match(*run_both(kernel, x, w, y), rtol=1e-3, atol=1e-4)


def test_peaked_and_flat_rows(kernel, device):
    x, w, y = make(device, scale=40.0)  # logits of std ~200: most rows one-hot to fp32 precision
    fused, oracle = run_both(kernel, x, w, y)
    assert fused[0][2].median().item() < 1e-6
    assert_match(fused, oracle, atol=1e-4)
    x, w, y = make(device, scale=1e-4)  # nearly equal logits: H → log V
    fused, oracle = run_both(kernel, x, w, y)
    valid = y != -100
    torch.testing.assert_close(fused[0][2][valid], torch.full_like(fused[0][2][valid], math.log(1003)))
    assert_match(fused, oracle)


def test_all_ignored_batch_gives_zero_loss_and_zero_finite_grads(kernel, device):
    x, w, y = make(device, n=9)
    y[:] = -100
    (out, grads), _ = run_both(kernel, x, w, y, grad_w=True)
    assert out[0].item() == 0.0
    for t in (*out[1:], *grads):
        assert torch.isfinite(t).all() and (t == 0).all()


def test_no_grad_call_returns_the_same_statistics(kernel, device):
    x, w, y = make(device)
    with torch.no_grad():
        out = kernel.fused_linear_entropy_ce(x, w, y, spec=WeightSpec(), config=kernel.EpilogueConfig(**SMALL))
        ref = ChunkedEntropyCE.apply(x, w, None, y, WeightSpec(), -100, None, None, 16)
    for got, want in zip(out, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-6)


def test_entry_point_dispatches_to_the_kernel(kernel, device):
    x, w, y = make(device)
    x.requires_grad_()
    out = linear_entropy_ce(x, w, y, weight_fn="sigmoid", implementation="triton")
    ref = linear_entropy_ce(x.detach(), w, y, weight_fn="sigmoid", implementation="torch")
    torch.testing.assert_close(out.loss, ref.loss, rtol=2e-5, atol=2e-6)
    out.loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_arguments_raise_value_errors(kernel, device):
    x, w, y = make(device)
    with pytest.raises(ValueError, match="same d"):
        kernel.fused_linear_entropy_ce(x[:, :5], w, y, spec=None)
    with pytest.raises(ValueError, match="labels must be"):
        kernel.fused_linear_entropy_ce(x, w, y[:3], spec=None)
    with pytest.raises(ValueError, match="share a dtype"):
        kernel.fused_linear_entropy_ce(x, w.double(), y, spec=None)
    with pytest.raises(ValueError, match="bias must be"):
        kernel.fused_linear_entropy_ce(x, w, y, spec=None, bias=torch.zeros(5, device=device))
    with pytest.raises(ValueError, match="softcap"):
        kernel.fused_linear_entropy_ce(x, w, y, spec=None, softcap=-1.0)


def test_second_backward_through_one_forward_is_refused(kernel, device):
    x, w, y = make(device)
    x.requires_grad_()
    loss = kernel.fused_linear_entropy_ce(x, w, y, spec=None, config=kernel.EpilogueConfig(**SMALL))[0]
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward"):
        loss.backward()
