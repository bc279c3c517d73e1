"""Every loss variant (the built-in weight functions and user ones) against a naive fp32 full-logits
implementation written here from the formulas, through the chunked torch path and the fused Triton
kernel (interpreted on a CPU machine): loss, per-token CE / H / w, gradients to X (and to W and the
bias where the head trains), ignored tokens, N = 1, an odd 32,003-token vocabulary, and the
batch-level top_entropy's edge cases (ties at the threshold, ignored tokens outside the quantile,
all-ignored batches). The naive side uses torch.quantile, not the package's quantile.
"""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from finetune_mcp.kernels import BUILTIN_WEIGHT_FNS, WeightSpec, entropy_weights, linear_entropy_ce
from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE
from finetune_mcp.kernels.weights import BATCH_WEIGHT_FNS, batch_quantile, takes_log_prob

IGNORE = -100
SMALL = {"block_v": 256, "chunk_tokens": 16}  # V = 1003: four vocabulary blocks, the last partial
FUSED_N = 19  # the interpreter is slow: fewer tokens for the kernel, still two uneven chunks of 16


def spec_for(fn: str, **kw) -> WeightSpec:
    return WeightSpec(fn=fn, **{"scale": 1.5, "relu_threshold": 0.3, "quantile": 0.7, **kw})


def naive_weights(fn: str, spec: WeightSpec, ent, logp, valid, vocab):
    """w from the formulas, on detached fp32 H and log p(y); 0 where ignored."""
    h = ent / math.log(vocab)
    s = spec.scale
    if fn == "linear":
        w = 1 + s * h
    elif fn == "relu":
        w = 1 + s * torch.relu(h - spec.relu_threshold)
    elif fn == "exponential":
        w = torch.exp(s * h)
    elif fn == "sigmoid":
        w = 1 + torch.sigmoid(s * (h - 0.5))
    elif fn == "dft":
        w = logp.exp()
    elif fn == "entropy_gated":
        w = h**s
    elif fn == "top_entropy":
        threshold = torch.quantile(ent[valid], spec.quantile) if valid.any() else math.inf
        w = (ent >= threshold).float()
    else:  # the user functions of the `user_fns` module below
        w = logp.exp() * (1 + h) if fn.endswith("new_form") else 2 + h
    return w.clamp(spec.min_weight, spec.max_weight) * valid


def naive(x, w, b, y, spec, *, softcap=None, token_weights=None, normalizer=None):
    """(loss, ce, entropy, weights) with full fp32 logits; autograd differentiates it (w detached)."""
    z = x.float() @ w.float().T + (b.float() if b is not None else 0.0)
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    valid = y != IGNORE
    logp_all = torch.log_softmax(z, -1)
    ce = -logp_all.gather(1, torch.where(valid, y, 0)[:, None]).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    with torch.no_grad():
        wts = naive_weights(spec.fn, spec, ent.detach(), -ce.detach(), valid, w.shape[0])
        if token_weights is not None:
            wts = wts * token_weights
    norm = valid.sum().clamp(min=1) if normalizer is None else torch.as_tensor(normalizer)
    ce, ent = torch.where(valid, ce, 0.0), torch.where(valid, ent.detach(), 0.0)
    return (wts * ce).sum() / norm, ce.detach(), ent, wts


def make(n=37, d=32, v=1003, scale=0.5, seed=0, ignored=(3, 20)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * scale
    y = torch.randint(0, v, (n,), generator=g)
    y[[i for i in ignored if i < n]] = IGNORE
    return x, w, y


def run(impl, kernel, x, w, y, spec, *, bias=None, train_head=False, config=SMALL, chunk=16, **kw):
    """((loss, ce, entropy, weights), grads) of one implementation: 'naive', 'torch' or 'fused'."""
    xs = x.clone().requires_grad_()
    ws = w.clone().requires_grad_(train_head)
    bs = bias.clone().requires_grad_(train_head) if bias is not None else None
    if impl == "naive":
        out = naive(xs, ws, bs, y, spec, **kw)
    elif impl == "torch":
        out = ChunkedEntropyCE.apply(
            xs, ws, bs, y, spec, IGNORE, kw.get("normalizer"), kw.get("softcap"), chunk, kw.get("token_weights")
        )
    else:
        out = kernel.fused_linear_entropy_ce(
            xs, ws, y, spec=spec, bias=bs, config=kernel.EpilogueConfig(**config), **kw
        )
    out[0].backward()
    return out, [t.grad for t in (xs, ws, bs) if t is not None and t.requires_grad]


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    (out, grads), (ref, ref_grads) = got, want
    for name, a, b in zip(("loss", "ce", "entropy", "weights"), out, ref, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    assert len(grads) == len(ref_grads)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.float(), b.float(), rtol=rtol * 20, atol=atol * 20)


def case_kwargs(case: str, x, w):
    g = torch.Generator().manual_seed(11)
    if case == "head":  # trainable head + bias + softcap: for top_entropy, the statistics pre-pass
        return {"bias": torch.randn(w.shape[0], generator=g), "train_head": True, "softcap": 6.0}
    if case == "token_weights":
        return {"token_weights": torch.rand(x.shape[0], generator=g) * 2, "normalizer": torch.tensor(50.0)}
    return {}


@pytest.mark.parametrize("fn", BUILTIN_WEIGHT_FNS)
@pytest.mark.parametrize("case", ["plain", "head", "n1", "token_weights"])
def test_torch_path_matches_naive(kernel, fn, case):
    x, w, y = make(n=1 if case == "n1" else 37)
    kw = case_kwargs(case, x, w)
    spec = spec_for(fn)
    assert_close(run("torch", kernel, x, w, y, spec, **kw), run("naive", kernel, x, w, y, spec, **kw))


# The plain case of every variant runs in test_triton_entropy_ce.py (fused against the torch path,
# which is checked against naive above); here, the trainable head + bias + softcap.
@pytest.mark.parametrize("fn", BUILTIN_WEIGHT_FNS)
@pytest.mark.parametrize("case", ["head"])
def test_fused_kernel_matches_naive(kernel, fn, case):
    x, w, y = make(n=FUSED_N)
    kw = case_kwargs(case, x, w)
    spec = spec_for(fn)
    assert_close(run("fused", kernel, x, w, y, spec, **kw), run("naive", kernel, x, w, y, spec, **kw), atol=2e-6)


@pytest.mark.parametrize("fn", ["dft", "entropy_gated", "top_entropy"])
@pytest.mark.parametrize("case", ["n1", "token_weights"])
def test_fused_kernel_matches_naive_on_new_variants_edge_cases(kernel, fn, case):
    x, w, y = make(n=1 if case == "n1" else FUSED_N)
    kw = case_kwargs(case, x, w)
    spec = spec_for(fn)
    assert_close(run("fused", kernel, x, w, y, spec, **kw), run("naive", kernel, x, w, y, spec, **kw), atol=2e-6)


@pytest.mark.parametrize("fn", BUILTIN_WEIGHT_FNS)
def test_odd_vocabulary_32003_both_paths(kernel, fn):
    # V not a multiple of 16 nor of the 4,096 production block; one ignored token of six.
    x, w, y = make(n=6, d=8, v=32003, scale=1.0, ignored=(4,))
    spec = spec_for(fn)
    ref = run("naive", kernel, x, w, y, spec)
    assert_close(run("torch", kernel, x, w, y, spec, chunk=4), ref)
    assert_close(run("fused", kernel, x, w, y, spec, config={"chunk_tokens": 4}), ref, atol=2e-6)


def test_ignored_tokens_get_no_weight_no_loss_and_no_gradient(kernel):
    x, w, y = make(n=FUSED_N)
    for fn in ("dft", "entropy_gated", "top_entropy"):
        for impl in ("torch", "fused"):
            (out, (dx,)) = run(impl, kernel, x, w, y, spec_for(fn))
            assert (out[3][3] == 0).all() and (out[1][3] == 0).all() and (dx[3] == 0).all()
            trained = out[3] > 0
            assert trained.sum() >= 3 and (dx[trained] != 0).any(-1).all()


# ---- top_entropy: the batch-level variant ---------------------------------------------------------


def tied_batch(seed=2):
    """20 tokens, 8 of them identical (x = 0: logits = the bias, bit-identical H in any implementation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 16, generator=g) * 0.8
    x[[1, 4, 5, 9, 12, 13, 16, 19]] = 0.0
    w = torch.randn(301, 16, generator=g) * 0.6
    b = torch.randn(301, generator=g) * 1.5
    y = torch.randint(0, 301, (20,), generator=g)
    y[[7]] = IGNORE
    return x, w, b, y


@pytest.mark.parametrize("where", ["between", "on_a_rank"])
def test_top_entropy_ties_at_the_threshold_all_train(kernel, where):
    x, w, b, y = tied_batch()
    tied = (x == 0).all(-1)
    ent = naive(x, w, b, y, spec_for("linear"))[2]
    valid = y != IGNORE
    order = torch.sort(ent[valid]).values
    ranks = torch.nonzero(order == ent[tied][0]).squeeze(1)  # where the 8 tied tokens sit, sorted
    assert len(ranks) == 8
    n_valid = int(valid.sum())
    # a quantile rank inside the tie group: strictly between two tied values, or exactly on one
    rank = ranks[2].item() + (0.5 if where == "between" else 0.0)
    spec = spec_for("top_entropy", quantile=rank / (n_valid - 1))
    for impl in ("naive", "torch", "fused"):
        (out, _) = run(impl, kernel, x, w, y, spec, bias=b)
        trained = out[3] > 0
        assert trained[tied].all(), impl  # every tied token at the threshold trains
        assert (trained == (valid & (ent >= ent[tied][0]))).all(), impl
    assert_close(run("torch", kernel, x, w, y, spec, bias=b), run("naive", kernel, x, w, y, spec, bias=b))
    assert_close(run("fused", kernel, x, w, y, spec, bias=b), run("naive", kernel, x, w, y, spec, bias=b))


def test_top_entropy_quantile_is_over_valid_tokens_only(kernel):
    # Eight ignored tokens (whose H is stored as 0) would drag a quantile over all rows down (12 would train).
    x, w, y = make(n=24, ignored=tuple(range(0, 24, 3)))
    spec = spec_for("top_entropy", quantile=0.5)
    for impl in ("torch", "fused"):
        out, _ = run(impl, kernel, x, w, y, spec)
        assert int((out[3] > 0).sum()) == 8  # the top half of 16 valid tokens (interpolated median)


@pytest.mark.parametrize("train_head", [False, True])
def test_top_entropy_all_ignored_batch_is_zero_and_finite(kernel, train_head):
    x, w, y = make(n=9)
    y[:] = IGNORE
    bias = torch.randn(w.shape[0]) if train_head else None
    for impl in ("torch", "fused"):
        out, grads = run(impl, kernel, x, w, y, spec_for("top_entropy"), bias=bias, train_head=train_head)
        assert out[0].item() == 0.0
        assert len(grads) == (3 if train_head else 1)
        for t in (*out[1:], *grads):
            assert torch.isfinite(t).all() and (t == 0).all()


def test_top_entropy_quantile_extremes(kernel):
    x, w, y = make(n=FUSED_N)
    valid = y != IGNORE
    every = run("torch", kernel, x, w, y, spec_for("top_entropy", quantile=0.0))[0][3]
    assert (every == valid.float()).all()  # q = 0: every valid token trains
    top = run("fused", kernel, x, w, y, spec_for("top_entropy", quantile=1.0))[0]
    assert int((top[3] > 0).sum()) == 1 and top[2][top[3] > 0].item() == top[2].max().item()


def test_batch_quantile_equals_torch_quantile():
    g = torch.Generator().manual_seed(4)
    for n in (1, 2, 7, 100):
        values = torch.randn(n, generator=g)
        values[: n // 3] = values[0]  # ties
        mask = torch.rand(n, generator=g) > 0.3
        mask[0] = True
        for q in (0.0, 0.25, 0.8, 0.999, 1.0):
            got = batch_quantile(values, mask, q)
            torch.testing.assert_close(got, torch.quantile(values[mask], q), rtol=0, atol=1e-6)
    assert batch_quantile(torch.randn(5), torch.zeros(5, dtype=torch.bool), 0.8).item() == math.inf


# ---- user functions: the new form (H, log p(y), log V) and the old one (H, log V) ---------------


@pytest.fixture
def user_fns(tmp_path, monkeypatch):
    """A real importable module of user weight functions (imported by path, as a run spec names it)."""
    (tmp_path / "variant_user_fns.py").write_text(textwrap.dedent("""
        import torch

        def new_form(entropy, log_prob, log_vocab):
            return log_prob.exp() * (1 + entropy / log_vocab)

        def old_form(entropy, log_vocab):
            return 2 + entropy / log_vocab

        def old_form_with_option(entropy, log_vocab, offset=2.0):
            return offset + entropy / log_vocab

        def varargs_new_form(*args):
            entropy, log_prob, log_vocab = args
            return log_prob.exp() * (1 + entropy / log_vocab)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", "variant_user_fns")
    return "variant_user_fns"


@pytest.mark.parametrize("name", ["new_form", "old_form", "old_form_with_option", "varargs_new_form"])
def test_user_functions_both_forms_both_paths(kernel, user_fns, name):
    x, w, y = make(n=FUSED_N)
    spec = WeightSpec(fn=f"{user_fns}:{name}")
    ref = run("naive", kernel, x, w, y, spec)
    assert_close(run("torch", kernel, x, w, y, spec), ref)
    assert_close(run("fused", kernel, x, w, y, spec), ref, atol=2e-6)


def test_call_form_detection(user_fns):
    import importlib

    mod = importlib.import_module(user_fns)
    assert takes_log_prob(mod.new_form) and takes_log_prob(mod.varargs_new_form)
    assert not takes_log_prob(mod.old_form) and not takes_log_prob(mod.old_form_with_option)
    assert not takes_log_prob(torch.add)  # no readable signature: the old form, as before


def test_entropy_weights_without_log_prob(user_fns):
    ent = torch.tensor([0.5, 2.0])
    # The old call keeps working for every function that does not need log p(y) ...
    for fn in ("linear", "relu", "exponential", "sigmoid", "entropy_gated", "top_entropy", f"{user_fns}:old_form"):
        assert entropy_weights(ent, math.log(100), WeightSpec(fn=fn)).shape == (2,)
    torch.testing.assert_close(entropy_weights(ent, 2.0, WeightSpec()), 1 + ent / 2.0)
    # ... and those that do say what to pass.
    for fn in ("dft", f"{user_fns}:new_form"):
        with pytest.raises(ValueError, match="log_prob="):
            entropy_weights(ent, math.log(100), WeightSpec(fn=fn))
    torch.testing.assert_close(
        entropy_weights(ent, 2.0, WeightSpec(fn="dft"), log_prob=torch.tensor([-1.0, -3.0])),
        torch.tensor([-1.0, -3.0]).exp(),
    )


# ---- the public surface ---------------------------------------------------------------------------


def test_spec_defaults_and_names_keep_todays_behaviour(kernel):
    assert BUILTIN_WEIGHT_FNS[:4] == ("linear", "relu", "exponential", "sigmoid")
    assert WeightSpec() == WeightSpec(fn="linear", scale=1.0, min_weight=0.0, max_weight=10.0, relu_threshold=0.5)
    assert WeightSpec().quantile == 0.8 and WeightSpec(fn="top_entropy").is_batch_level
    with pytest.raises(ValueError, match="quantile"):
        WeightSpec(fn="top_entropy", quantile=1.5)
    # The kernel numbers every row-level builtin; the batch-level ones are applied on the host.
    assert set(kernel._WEIGHT_FN_IDS) - {None} == set(BUILTIN_WEIGHT_FNS) - set(BATCH_WEIGHT_FNS)


@pytest.mark.parametrize("fn", ["dft", "entropy_gated", "top_entropy"])
def test_entry_point_selects_variants_by_name(kernel, fn):
    x, w, y = make(n=FUSED_N)
    outs = [linear_entropy_ce(x, w, y, weight_fn=fn, implementation=impl) for impl in ("torch", "triton")]
    ref = naive(x, w, None, y, WeightSpec(fn=fn))
    for out in outs:
        torch.testing.assert_close(out.loss, ref[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.weights, ref[3], rtol=1e-5, atol=1e-6)


def test_the_worker_imports_only_modules_the_operator_allowed(tmp_path, monkeypatch):
    """load_user_fn checks FINETUNE_MCP_USER_FUNCTIONS before importing: a refused module never runs."""
    marker = tmp_path / "imported"
    (tmp_path / "refused_user_fns.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef fn(h, v):\n    return h\n")
    (tmp_path / "allowed_pkg").mkdir()
    (tmp_path / "allowed_pkg" / "__init__.py").write_text("")
    (tmp_path / "allowed_pkg" / "weights.py").write_text("def fn(entropy, log_vocab):\n    return 1 + entropy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ent = torch.tensor([0.5, 1.0])
    for allowed in (None, "", "refused_user", "refused_user_fns_other, allowed_pkg"):
        if allowed is None:
            monkeypatch.delenv("FINETUNE_MCP_USER_FUNCTIONS", raising=False)
        else:
            monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", allowed)
        for path in ("refused_user_fns:fn", "os:system"):
            with pytest.raises(ValueError, match=f"{path!r} is not allowed.*set FINETUNE_MCP_USER_FUNCTIONS="):
                entropy_weights(ent, math.log(100), WeightSpec(fn=path))
    assert not marker.exists(), "a refused module was imported"
    # a package prefix allows its modules; built-in names never need the list
    w = entropy_weights(ent, math.log(100), WeightSpec(fn="allowed_pkg.weights:fn"))
    torch.testing.assert_close(w, 1 + ent)
    monkeypatch.delenv("FINETUNE_MCP_USER_FUNCTIONS")
    assert entropy_weights(ent, math.log(100), WeightSpec(fn="linear")).shape == (2,)
