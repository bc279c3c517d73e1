"""Fused entropy-weighted linear cross-entropy: cuBLAS GEMMs per token chunk + one Triton epilogue.

Math, for token t with hidden x [d], head W [V, d] (bias b, logit softcap c optional):
    z = x·Wᵀ (+ b);  z ← c·tanh(z / c)  when softcapped
    m = max z,  s = Σ_j e^(z_j − m),  t = Σ_j e^(z_j − m)·(z_j − m)
    lse = m + log s,   CE = lse − z[y],   H = −Σ p log p = log s − t / s
    w = f(H, log p(y) = −CE) (detached; a builtin of h = H / log V and CE, or a user function in torch)
    loss = Σ_t w_t·CE_t / normaliser       (TRL's num_items_in_batch; default: #valid tokens)
    dL/dz = w·(p − onehot(y)) / normaliser  (· (1 − tanh²) under softcap; no term through w)
Keeping t relative to the running max (rather than Σ e^(z−m)·z) makes H = log s − t/s a sum of two
non-negative-ish terms: no cancellation of two numbers near lse for peaked rows (H → 0 exactly).

Design. Tokens go C at a time (C = chunk); per chunk three kernels, no recompute:
    1. cuBLAS  Z = X_c·Wᵀ into a [C, V] buffer in the inputs' dtype (bf16: half the bytes of fp32);
    2. Triton, one row per program: pass 1 streams the row once for (m, s, t, z[y]) → CE, H, lse,
       w = f(H, −CE) in-kernel for the row-level builtins; pass 2 streams it again and writes dL/dz
       in place;
    3. cuBLAS  dX_c = dZ·W  (and dW += dZᵀ·X_c in fp32 when the head is trainable).
The gradient is computed in the forward (as Liger does): the backward only scales dX by the
incoming gradient. The trade-off: two GEMMs in all (the floor: 4·N·d·V FLOPs) and no second pass
over W, against holding dX [N, d] from forward to backward (it is needed there anyway) and one
extra read of the chunk buffer (pass 1 must finish before pass 2 since w needs the whole row's H).
A user weight function splits step 2 in two launches (stats; torch w = f(H_chunk); gradient); it is
applied per chunk, exactly as the torch oracle does, so it must be per-token (elementwise).
A batch-level builtin (top_entropy: w needs the whole call's H) runs the epilogue with w = 1 and
scales the rows of dX by w once every chunk is done (w is a per-row scalar of dL/dz: exact, one
extra read and write of dX, 42 MB at Qwen3-4B). dW and db sum over rows and cannot be scaled after
the fact; with a trainable head or a bias, a statistics-only pass over every chunk (GEMM + pass 1)
computes H first and the gradient pass then reads the known w (one extra GEMM per chunk).

Memory math (Qwen3-4B head, d = 2560, V = 151,936, N = 8,192, bf16):
    chunk buffer  C·V·2 B            = 233 MB at C = 768 (the one block buffer)
    dX            N·d·2 B            =  42 MB (held from forward to backward: it is the output)
    per token     4 fp32 vectors [N] = 0.13 MB (ce, entropy, weights, lse)
    dW (trainable head only)   V·d·4 B fp32 accumulator = 1.56 GB (cast to W's dtype in backward)
Never more than one [C, V] block of logits exists.

Speed notes: the epilogue streams the buffer three times (read, read, write), ~3 ms of the total
at Qwen3-4B next to 16 ms of GEMMs; its loads are 16 bytes wide when V is a multiple of 16 (Triton
specialises such integer arguments; 151,936 and 128,256 are), element-wise otherwise (correct, slower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from finetune_mcp.kernels.weights import WeightSpec, token_loss_weights

# The chunk buffer's byte budget. C = budget / (V · element size), rounded down to a multiple of
# 256 (cuBLAS's M tiles): 768 tokens at Qwen3-4B (233 MB), 1,024 at Llama-3-8B (263 MB). Larger C
# raises GEMM efficiency (each chunk re-reads all of W: 0.78 GB at Qwen3-4B, i.e. C FLOPs per byte
# of W, and an H100 needs ≳ 300 to stay compute-bound), smaller C saves memory; 264 MiB keeps the
# extra memory under 300 MB at Qwen3-4B with dX included. Measured on an H100 (RESULTS.md): at
# Llama-3-8B, C = 1,024 runs ~3 ms faster than 896 or 768; at Qwen3-4B, 512 to 1,024 are within noise.
_BUFFER_BYTES = 264 << 20
_GEMM_ROWS = 256
# Epilogue launch: one program per row, a vocabulary block of 4,096 elements per loop step, 8 warps
# (16 elements a thread: two 16-byte loads). Measured on an H100 (RESULTS.md), epilogue alone: 3.1 ms
# at Qwen3-4B against 3.6 ms for 8,192 × 16 warps: at 8 warps a program, 8 programs fit on an SM, so
# a chunk's 768 to 1,024 rows run in one wave instead of 1.5. A persistent grid (one program an SM,
# L2 eviction hints so that pass 2 re-reads its row from L2) measured no faster, and was dropped.
_BLOCK_V = 4096
_NUM_WARPS = 8
# Weight function ids for the WEIGHT_FN constexpr (0: no weighting, w = 1): the row-level builtins
# (every builtin but weights.BATCH_WEIGHT_FNS), in the order the kernel's branches number them.
_KERNEL_WEIGHT_FNS = ("linear", "relu", "exponential", "sigmoid", "dft", "entropy_gated")
_WEIGHT_FN_IDS = {None: 0, **{name: i + 1 for i, name in enumerate(_KERNEL_WEIGHT_FNS)}}


@triton.jit
def _softcapped(z, softcap, HAS_SOFTCAP: tl.constexpr):
    """c·tanh(z / c), with tanh(x) = 2·sigmoid(2x) − 1 (no tanh in tl; the interpreter runs this too)."""
    if HAS_SOFTCAP:
        z = softcap * (2.0 * tl.sigmoid(2.0 * z / softcap) - 1.0)
    return z


@triton.jit
def _entropy_ce_rows_kernel(
    z_ptr,
    z_stride,
    bias_ptr,
    labels_ptr,
    tw_ptr,
    ce_ptr,
    ent_ptr,
    w_ptr,
    lse_ptr,
    norm_ptr,
    vocab,
    ignore_index,
    inv_log_vocab,
    softcap,
    w_scale,
    w_min,
    w_max,
    relu_threshold,
    STATS: tl.constexpr,
    WEIGHTS_IN_KERNEL: tl.constexpr,
    GRAD: tl.constexpr,
    WEIGHT_FN: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    HAS_TOKEN_WEIGHTS: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Per-row statistics and, in place, the logits gradient of one chunk.

    z_ptr      [C, V] raw logits x·Wᵀ of the chunk (inputs' dtype); with GRAD overwritten by dL/dz
    z_stride   elements between consecutive rows of z
    bias_ptr   [V] bias (read only when HAS_BIAS)
    labels_ptr [C] int64 targets (already shifted); ignore_index marks ignored rows
    tw_ptr     [C] per-token multipliers of w (read only when HAS_TOKEN_WEIGHTS; e.g. example weights)
    ce_ptr, ent_ptr   [C] fp32 out (STATS): CE and H, 0 on ignored rows
    w_ptr      [C] fp32 weights: written when WEIGHTS_IN_KERNEL, else read (GRAD with a user fn)
    lse_ptr    [C] fp32 logsumexp: written with STATS, read by a GRAD-only launch
    norm_ptr   [1] fp32 normaliser (a device scalar: no host sync)
    inv_log_vocab   1 / log V (the builtins take h = H / log V)
    softcap    c of c·tanh(z / c) (read only when HAS_SOFTCAP)
    w_scale, w_min, w_max, relu_threshold   the WeightSpec's parameters
    STATS      pass 1: m, s, t, z[y] → CE, H, lse
    WEIGHTS_IN_KERNEL   w = f(H, −CE) here (row-level builtins, or 1 when WEIGHT_FN == 0)
    GRAD       pass 2: dL/dz = w·(p − onehot(y)) / norm written over z
    WEIGHT_FN  0 none (w = 1), 1 linear, 2 relu, 3 exponential, 4 sigmoid, 5 dft, 6 entropy_gated
    BLOCK_V    vocabulary elements per loop step (a power of two)
    """
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_V)  # [BLOCK_V]
    row_ptr = z_ptr + tl.cast(row, tl.int64) * z_stride
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    target = tl.where(valid, label, 0)

    if STATS:
        # Pass 1. Per-lane sums s_vec, t_vec against a per-row scalar max m: one exp per element;
        # the rescale e^(m_old − m_new) is a scalar per block. Ignored rows skip the loop.
        # A finite "minus infinity" start: keeps 0·(m_old − m_new) finite on the first block.
        m = tl.full([], -1.0e30, tl.float32)
        s_vec = tl.zeros((BLOCK_V,), tl.float32)
        t_vec = tl.zeros((BLOCK_V,), tl.float32)
        stats_end = tl.where(valid, vocab, 0)
        for start in range(0, stats_end, BLOCK_V):
            cols = start + offs
            in_vocab = cols < vocab
            z = tl.load(row_ptr + cols, mask=in_vocab, other=0.0).to(tl.float32)
            if HAS_BIAS:
                z += tl.load(bias_ptr + cols, mask=in_vocab, other=0.0).to(tl.float32)
            z = _softcapped(z, softcap, HAS_SOFTCAP)
            z = tl.where(in_vocab, z, -1.0e30)  # finite: e = 0, e·(z − m) = 0 outside the vocabulary
            m_new = tl.maximum(m, tl.max(z, axis=0))
            alpha = tl.exp(m - m_new)
            e = tl.exp(z - m_new)
            # t relative to the new max: Σ e^(z−m)(z−m) → α·(t + s·(m − m_new)) + Σ e^(z−m_new)(z−m_new),
            # the guard keeps a −inf logit (a −inf bias entry) from making 0·(−inf) = NaN.
            t_vec = alpha * (t_vec + s_vec * (m - m_new)) + tl.where(e > 0.0, e * (z - m_new), 0.0)
            s_vec = alpha * s_vec + e
            m = m_new
        s = tl.sum(s_vec, axis=0)
        t = tl.sum(t_vec, axis=0)
        s_safe = tl.where(valid, s, 1.0)
        lse = tl.where(valid, m + tl.log(s_safe), 0.0)
        entropy = tl.maximum(tl.log(s_safe) - t / s_safe, 0.0)
        z_target = tl.load(row_ptr + target).to(tl.float32)
        if HAS_BIAS:
            z_target += tl.load(bias_ptr + target).to(tl.float32)
        z_target = _softcapped(z_target, softcap, HAS_SOFTCAP)
        ce = tl.where(valid, lse - z_target, 0.0)
        tl.store(ce_ptr + row, ce)
        tl.store(ent_ptr + row, tl.where(valid, entropy, 0.0))
        tl.store(lse_ptr + row, lse)
        if WEIGHTS_IN_KERNEL:
            h = entropy * inv_log_vocab
            if WEIGHT_FN == 0:
                w = tl.full([], 1.0, tl.float32)
            else:
                if WEIGHT_FN == 1:
                    w = 1.0 + w_scale * h
                elif WEIGHT_FN == 2:
                    w = 1.0 + w_scale * tl.maximum(h - relu_threshold, 0.0)
                elif WEIGHT_FN == 3:
                    w = tl.exp(w_scale * h)
                elif WEIGHT_FN == 4:
                    w = 1.0 + tl.sigmoid(w_scale * (h - 0.5))
                elif WEIGHT_FN == 5:
                    w = tl.exp(-ce)  # p(y)
                else:
                    # h^s as exp(s·log h); h = 0 gives 0 (s > 0) without a log(0)
                    w = tl.where(h > 0.0, tl.exp(w_scale * tl.log(tl.maximum(h, 1.0e-30))), 0.0)
                w = tl.minimum(tl.maximum(w, w_min), w_max)
            if HAS_TOKEN_WEIGHTS:
                w = w * tl.load(tw_ptr + row).to(tl.float32)
            w = tl.where(valid, w, 0.0)
            tl.store(w_ptr + row, w)
        else:
            w = tl.full([], 0.0, tl.float32)  # a user function fills w_ptr in torch
    else:
        lse = tl.load(lse_ptr + row)
        w = tl.load(w_ptr + row)

    if GRAD:
        # Pass 2: dL/dz = w/norm·(p − onehot(y)), in place. Ignored rows (w = 0) load nothing and
        # write zeros, which the dX GEMM then multiplies away.
        coef = tl.where(valid, w / tl.load(norm_ptr), 0.0)
        load_end = tl.where(valid, vocab, 0)  # ignored rows: every load masked off
        for start in range(0, vocab, BLOCK_V):
            cols = start + offs
            in_vocab = cols < vocab
            z = tl.load(row_ptr + cols, mask=cols < load_end, other=0.0).to(tl.float32)
            if HAS_BIAS:
                z += tl.load(bias_ptr + cols, mask=cols < load_end, other=0.0).to(tl.float32)
            zc = _softcapped(z, softcap, HAS_SOFTCAP)
            p = tl.exp(zc - lse)
            g = coef * (p - tl.where(cols == target, 1.0, 0.0))
            if HAS_SOFTCAP:
                tanh = zc / softcap
                g = g * (1.0 - tanh * tanh)
            g = tl.where(valid, g, 0.0)
            tl.store(row_ptr + cols, g.to(z_ptr.dtype.element_ty), mask=in_vocab)


@dataclass(frozen=True)
class EpilogueConfig:
    """Launch shape of the epilogue kernel and the chunk size (tokens per GEMM; None = derived)."""

    block_v: int = _BLOCK_V
    num_warps: int = _NUM_WARPS
    chunk_tokens: int | None = None


def default_chunk_tokens(n_tokens: int, vocab: int, element_size: int) -> int:
    """Tokens per chunk: the buffer budget over one row's bytes, a multiple of 256 when ≥ 256."""
    rows = max(1, _BUFFER_BYTES // (vocab * element_size))
    if rows >= _GEMM_ROWS:
        rows -= rows % _GEMM_ROWS
    return max(1, min(n_tokens, rows))


def _launch_epilogue(
    zbuf: torch.Tensor,  # [n, V]
    labels: torch.Tensor,  # [n]
    token_weights: torch.Tensor | None,  # [n]
    outs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],  # ce, ent, w, lse: [n] fp32
    norm: torch.Tensor,  # [1] fp32
    bias: torch.Tensor | None,
    softcap: float | None,
    spec: WeightSpec | None,
    ignore_index: int,
    config: EpilogueConfig,
    *,
    stats: bool,
    weights_in_kernel: bool,
    grad: bool,
) -> None:
    n_rows, vocab = zbuf.shape
    ce, ent, w, lse = outs
    fn_id = _WEIGHT_FN_IDS[spec.fn if spec is not None and spec.fn in _WEIGHT_FN_IDS else None]
    spec = spec or WeightSpec()
    block_v = min(config.block_v, triton.next_power_of_2(vocab))
    _entropy_ce_rows_kernel[(n_rows,)](
        zbuf, zbuf.stride(0), bias if bias is not None else zbuf, labels,
        token_weights if token_weights is not None else labels, ce, ent, w, lse, norm,
        vocab, ignore_index, 1.0 / math.log(vocab) if vocab > 1 else 0.0,
        float(softcap or 1.0), float(spec.scale), float(spec.min_weight), float(spec.max_weight),
        float(spec.relu_threshold),
        STATS=stats, WEIGHTS_IN_KERNEL=weights_in_kernel, GRAD=grad, WEIGHT_FN=fn_id,
        HAS_BIAS=bias is not None, HAS_SOFTCAP=bool(softcap), HAS_TOKEN_WEIGHTS=token_weights is not None,
        BLOCK_V=block_v,
        num_warps=min(config.num_warps, max(1, block_v // 256)),
    )


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b into an fp32 accumulator without rounding each chunk's product to bf16 first."""
    if acc.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a.float(), b.float())


class FusedLinearEntropyCE(torch.autograd.Function):
    """Returns (loss, ce [N], entropy [N], weights [N]) like `ChunkedEntropyCE`; grads to hidden/weight/bias."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # [N, d]
        weight: torch.Tensor,  # [V, d]
        bias: torch.Tensor | None,  # [V]
        labels: torch.Tensor,  # [N] int64, already shifted
        spec: WeightSpec | None,
        ignore_index: int,
        normalizer: torch.Tensor | float | None,
        softcap: float | None,
        grad_enabled: bool,
        config: EpilogueConfig,
        token_weights: torch.Tensor | None,  # [N] multipliers of w (detached)
    ):
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        device = hidden.device
        valid = labels != ignore_index  # [N]
        if normalizer is None:
            norm = valid.sum().clamp(min=1).to(torch.float32).reshape(1)
        else:
            norm = torch.as_tensor(normalizer, dtype=torch.float32, device=device).clamp(min=1e-12).reshape(1)
        want_dx = grad_enabled and ctx.needs_input_grad[0]
        want_dw = grad_enabled and ctx.needs_input_grad[1]
        want_db = grad_enabled and bias is not None and ctx.needs_input_grad[2]
        want_grad = want_dx or want_dw or want_db
        batch_level = spec is not None and spec.is_batch_level
        prepass = batch_level and (want_dw or want_db)  # dW, db need w in the pass: H of every token first
        defer = batch_level and not prepass  # the pass runs with w = 1; dX rows are scaled by w afterwards
        in_kernel = spec is None or (spec.is_builtin and not batch_level)
        log_vocab = math.log(vocab)

        ce = torch.empty(n_tokens, dtype=torch.float32, device=device)  # [N]
        ent = torch.empty_like(ce)  # [N]
        wts = torch.empty_like(ce)  # [N]
        lse = torch.empty_like(ce)  # [N]
        grad_hidden = torch.empty_like(hidden) if want_dx else None  # [N, d]
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=device) if want_dw else None
        grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device) if want_db else None

        chunk = config.chunk_tokens or default_chunk_tokens(n_tokens, vocab, hidden.element_size())
        zbuf_all = torch.empty((min(chunk, n_tokens), vocab), dtype=hidden.dtype, device=device)  # [C, V]
        launch = dict(norm=norm, bias=bias, softcap=softcap, ignore_index=ignore_index, config=config)
        chunks = [(start, min(start + chunk, n_tokens)) for start in range(0, n_tokens, chunk)]

        def outs(start: int, end: int) -> tuple[torch.Tensor, ...]:
            return ce[start:end], ent[start:end], wts[start:end], lse[start:end]

        def logits(start: int, end: int) -> torch.Tensor:
            zbuf = zbuf_all[: end - start]  # [n, V]
            torch.mm(hidden[start:end], weight.t(), out=zbuf)
            return zbuf

        if prepass:
            for start, end in chunks:
                _launch_epilogue(
                    logits(start, end), labels[start:end], None, outs(start, end), **launch, spec=None,
                    stats=True, weights_in_kernel=False, grad=False,
                )
            wts.copy_(token_loss_weights(ent, ce, valid, log_vocab, spec, token_weights))
        for start, end in chunks:
            zbuf = logits(start, end)
            tw = token_weights[start:end] if token_weights is not None else None
            if prepass:  # w known: the gradient pass alone, reading lse and w
                if want_grad:
                    _launch_epilogue(
                        zbuf, labels[start:end], None, outs(start, end), **launch, spec=spec,
                        stats=False, weights_in_kernel=False, grad=True,
                    )
            elif in_kernel or defer:  # defer: w = 1 (no spec, no token weights) until every H is known
                _launch_epilogue(
                    zbuf, labels[start:end], None if defer else tw, outs(start, end), **launch,
                    spec=None if defer else spec, stats=True, weights_in_kernel=True, grad=want_grad,
                )
            else:
                _launch_epilogue(
                    zbuf, labels[start:end], tw, outs(start, end), **launch, spec=spec,
                    stats=True, weights_in_kernel=False, grad=False,
                )
                # A user function sees the chunk's entropies and log p(y), as in the oracle; w = 0 where ignored.
                wts[start:end] = token_loss_weights(
                    ent[start:end], ce[start:end], valid[start:end], log_vocab, spec, tw
                )
                if want_grad:
                    _launch_epilogue(
                        zbuf, labels[start:end], tw, outs(start, end), **launch, spec=spec,
                        stats=False, weights_in_kernel=False, grad=True,
                    )
            if want_dx:
                torch.mm(zbuf, weight, out=grad_hidden[start:end])
            if want_dw:
                _addmm_fp32(grad_weight, zbuf.t(), hidden[start:end])
            if want_db:
                grad_bias += zbuf.sum(0, dtype=torch.float32)
        if defer:
            wts.copy_(token_loss_weights(ent, ce, valid, log_vocab, spec, token_weights))
            if want_dx:
                grad_hidden.mul_(wts[:, None].to(grad_hidden.dtype))

        loss = (wts * ce).sum() / norm[0]
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_hidden, grad_weight, grad_bias))
        )
        ctx.has = (want_dx, want_dw, want_db)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.backward_done = False
        ctx.mark_non_differentiable(ce, ent, wts)
        return loss, ce, ent, wts

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        if ctx.backward_done:
            raise RuntimeError(
                "fused_linear_entropy_ce scales its stored gradient in place, so it supports one backward "
                "per forward; recompute the loss instead of retain_graph=True"
            )
        ctx.backward_done = True
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        want_dx, want_dw, want_db = ctx.has
        # In place: a second [N, d] buffer would double the memory held by dX.
        dx = grad_hidden.mul_(grad_loss.to(grad_hidden.dtype)) if want_dx else None
        dw = (grad_weight * grad_loss).to(ctx.dtypes[0]) if want_dw else None
        db = (grad_bias * grad_loss).to(ctx.dtypes[1]) if want_db else None
        return dx, dw, db, None, None, None, None, None, None, None, None


def fused_linear_entropy_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    spec: WeightSpec | None,
    ignore_index: int = -100,
    normalizer: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    token_weights: torch.Tensor | None = None,
    config: EpilogueConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, ce [N], entropy [N], weights [N]) of `hidden [N, d] @ weight[V, d]ᵀ` against `labels [N]`.

    Same contract as `ChunkedEntropyCE` (the oracle); `token_weights [N]` multiply w (detached). Labels outside [0, V) other than
    `ignore_index` are not checked (that would need a host sync). `config` tunes the launch.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [N, d] and weight [V, d] with the same d; got {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [N] = [{hidden.shape[0]}]; got {tuple(labels.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(
            f"hidden and weight must share a dtype for the GEMMs; got {hidden.dtype} and {weight.dtype}: "
            "cast one of them (e.g. hidden.to(weight.dtype))"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}]; got {tuple(bias.shape)}")
    if token_weights is not None and token_weights.shape != labels.shape:
        raise ValueError(f"token_weights must be [N] = [{labels.shape[0]}]; got {tuple(token_weights.shape)}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap must be positive or None; got {softcap}")
    if not hidden.is_cuda and not _INTERPRETED:
        raise ValueError(
            "the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 set before it is imported, for "
            "tests); use implementation='torch' on the CPU"
        )
    return FusedLinearEntropyCE.apply(
        hidden.contiguous(), weight.contiguous(), bias.contiguous() if bias is not None else None,
        labels.contiguous().long(), spec, ignore_index, normalizer, softcap, torch.is_grad_enabled(),
        config or EpilogueConfig(), token_weights.detach().contiguous() if token_weights is not None else None,
    )


# True when Triton's interpreter runs the kernel (TRITON_INTERPRET=1 at import): CPU tensors work.
_INTERPRETED = type(_entropy_ce_rows_kernel).__name__ == "InterpretedFunction"
