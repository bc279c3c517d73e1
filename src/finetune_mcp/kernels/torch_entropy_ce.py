"""Chunked torch implementation of the entropy-weighted linear cross-entropy (and the test oracle).

For token t with hidden x_t, logits z = x_t·Wᵀ (+ b) (optionally softcapped: c·tanh(z/c)):
    p = softmax(z),  H = −Σ p log p,  CE = logsumexp(z) − z[y],  w = f(H, log p(y) = −CE) (detached)
    loss = Σ_t w_t·CE_t / normaliser           (normaliser: number of valid tokens unless given)
    dL/dz = w·(p − onehot(y)) / normaliser      (w is a constant: no term through H or p(y))

Memory: tokens are processed `chunk` at a time and the gradient is computed in the forward pass,
so at most one [chunk, V] block of fp32 logits (plus three same-size temporaries) exists at once;
the backward pass only scales the stored gradients. Batch-level weights (top_entropy: w needs every
token's H) are applied after the pass: w is a per-row scalar of dL/dz, so each row of dX is scaled
once the last chunk is done; when dW or db are wanted (they sum over rows, so they cannot be scaled
afterwards) a statistics-only pre-pass computes H for every token first (one extra X·Wᵀ).
Default chunk: 2^26 / V tokens, i.e. a 256 MB fp32 logit block (441 tokens at V = 151,936).
"""

from __future__ import annotations

import math

import torch

from finetune_mcp.kernels.weights import WeightSpec, token_loss_weights

_CHUNK_ELEMENTS = 1 << 26


def default_chunk(vocab_size: int) -> int:
    return max(1, _CHUNK_ELEMENTS // vocab_size)


def _chunk_stats(x, weight, bias, softcap, y):
    """(p, tanh, H, CE) of one chunk: p = softmax(z) [n, V] fp32 of the (softcapped) logits z,
    tanh [n, V] (None without softcap), H and CE [n]."""
    z = (x @ weight.T).float()  # [n, V]
    if bias is not None:
        z = z + bias.float()
    tanh = None
    if softcap:
        tanh = torch.tanh(z / softcap)
        z = softcap * tanh
    lse = torch.logsumexp(z, dim=-1)  # [n]
    p = torch.exp(z - lse[:, None])  # [n, V]
    # H = Σ p·(lse − z): a sum of non-negative terms. (lse − Σ p z cancels two numbers near
    # lse and goes negative on peaked rows with large logits.) In place: no extra [n, V] temporary.
    c = lse - z.gather(1, y[:, None]).squeeze(1)
    h = (lse[:, None] - z).mul_(p).sum(-1)
    return p, tanh, h, c


class ChunkedEntropyCE(torch.autograd.Function):
    """Autograd Function: returns (loss, ce [N], entropy [N], weights [N]); grads to hidden/weight/bias."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # [N, d]
        weight: torch.Tensor,  # [V, d]
        bias: torch.Tensor | None,  # [V]
        labels: torch.Tensor,  # [N], already shifted
        spec: WeightSpec | None,
        ignore_index: int,
        normalizer: torch.Tensor | float | None,
        softcap: float | None,
        chunk: int,
        token_weights: torch.Tensor | None = None,  # [N] multipliers of w (detached)
    ):
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        device = hidden.device
        valid = labels != ignore_index  # [N]
        if normalizer is None:
            norm = valid.sum().clamp(min=1).to(torch.float32)
        else:
            norm = torch.as_tensor(normalizer, dtype=torch.float32, device=device).clamp(min=1e-12)
        log_vocab = math.log(vocab)
        want_dx, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_db = bias is not None and ctx.needs_input_grad[2]

        ce = torch.zeros(n_tokens, dtype=torch.float32, device=device)
        ent = torch.zeros(n_tokens, dtype=torch.float32, device=device)
        wts = torch.zeros(n_tokens, dtype=torch.float32, device=device)
        grad_hidden = torch.zeros_like(hidden) if want_dx else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=device) if want_dw else None
        grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device) if want_db else None

        batch_level = spec is not None and spec.is_batch_level
        # dW and db sum over rows, so their w must be known in the pass: H of every token first.
        known_w = None
        if batch_level and (want_dw or want_db):
            for start in range(0, n_tokens, chunk):
                end = min(start + chunk, n_tokens)
                mask = valid[start:end]
                *_, h, c = _chunk_stats(hidden[start:end], weight, bias, softcap, torch.where(mask, labels[start:end], 0))
                ce[start:end] = torch.where(mask, c, 0.0)
                ent[start:end] = torch.where(mask, h, 0.0)
            known_w = token_loss_weights(ent, ce, valid, log_vocab, spec, token_weights)
        defer = batch_level and known_w is None  # w = 1 in the pass; dX rows scaled by w afterwards

        for start in range(0, n_tokens, chunk):
            end = min(start + chunk, n_tokens)
            x = hidden[start:end]  # [n, d]
            mask = valid[start:end]  # [n]
            y = torch.where(mask, labels[start:end], 0)  # [n]
            p, tanh, h, c = _chunk_stats(x, weight, bias, softcap, y)
            if known_w is not None:
                w = known_w[start:end]
            elif defer:
                w = mask.float()
            else:
                tw = token_weights[start:end] if token_weights is not None else None
                w = token_loss_weights(h, c, mask, log_vocab, spec, tw)
            ce[start:end] = torch.where(mask, c, 0.0)
            ent[start:end] = torch.where(mask, h, 0.0)
            wts[start:end] = w
            if not (want_dx or want_dw or want_db):
                continue
            g = p  # reuse the buffer: g = w·(p − onehot(y)) / norm
            g[torch.arange(end - start, device=device), y] -= 1.0
            g *= (w / norm)[:, None]
            if softcap:
                g *= 1.0 - tanh * tanh
            if want_dx:
                grad_hidden[start:end] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
            if want_dw:
                grad_weight += g.T @ x.float()
            if want_db:
                grad_bias += g.sum(0)

        if defer:
            wts = token_loss_weights(ent, ce, valid, log_vocab, spec, token_weights)
            if want_dx:
                grad_hidden.mul_(wts[:, None].to(grad_hidden.dtype))
        loss = (wts * ce).sum() / norm
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_hidden, grad_weight, grad_bias))
        )
        ctx.has = (want_dx, want_dw, want_db)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(ce, ent, wts)
        return loss, ce, ent, wts

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        want_dx, want_dw, want_db = ctx.has
        dx = grad_hidden * grad_loss.to(grad_hidden.dtype) if want_dx else None
        dw = (grad_weight * grad_loss).to(ctx.dtypes[0]) if want_dw else None
        db = (grad_bias * grad_loss).to(ctx.dtypes[1]) if want_db else None
        return dx, dw, db, None, None, None, None, None, None, None
