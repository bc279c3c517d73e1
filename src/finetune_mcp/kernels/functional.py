"""The functional entry point of the loss head: `linear_entropy_ce` and its output type.

`linear_entropy_ce` is the one entry point the trainer calls. Underneath, the fused Triton kernel
runs on CUDA; everywhere else the chunked torch implementation (also the tests' oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finetune_mcp.kernels.torch_entropy_ce import ChunkedEntropyCE, default_chunk
from finetune_mcp.kernels.weights import WeightSpec

__all__ = ["EntropyCEOutput", "linear_entropy_ce"]


@dataclass
class EntropyCEOutput:
    """`loss`: Σ w·CE / normaliser (differentiable). Per token [N], fp32, zero where ignored:
    `ce`, `entropy` (nats), `weights` (w = f(H, log p(y)) × token weights; 1 for valid tokens when
    weighting is off). log p(y) = −ce."""

    loss: torch.Tensor
    ce: torch.Tensor
    entropy: torch.Tensor
    weights: torch.Tensor


def linear_entropy_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight_fn: WeightSpec | str | None = "linear",
    ignore_index: int = -100,
    normalizer: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    token_weights: torch.Tensor | None = None,
    implementation: str = "auto",
) -> EntropyCEOutput:
    """Entropy-weighted CE of `hidden [N, d] @ weight[V, d]ᵀ` against `labels [N]` (already shifted).

    `weight_fn` picks the loss variant: a `WeightSpec`, a builtin name (`weights.BUILTIN_WEIGHT_FNS`:
    linear, relu, exponential, sigmoid, dft, entropy_gated, top_entropy; formulas in `weights`) or
    'pkg.mod:fn'; `weight_fn=None` gives w = 1 (plain CE, entropy still returned). top_entropy's
    quantile is over this call's valid tokens (one micro-batch, one rank). `normalizer` follows TRL's
    `num_items_in_batch`; default: the number of valid labels. `implementation`: auto | triton | torch.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [N, d] and weight [V, d] with the same d; got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [N] = [{hidden.shape[0]}]; got {tuple(labels.shape)}")
    if token_weights is not None and token_weights.shape != labels.shape:
        raise ValueError(f"token_weights must be [N] = [{labels.shape[0]}]; got {tuple(token_weights.shape)}")
    spec = WeightSpec.coerce(weight_fn)
    if implementation == "auto":
        implementation = "triton" if hidden.is_cuda and _triton_available() else "torch"
    if implementation == "triton":
        from finetune_mcp.kernels.triton_entropy_ce import fused_linear_entropy_ce

        loss, ce, ent, w = fused_linear_entropy_ce(
            hidden, weight, labels, spec=spec, ignore_index=ignore_index, normalizer=normalizer,
            bias=bias, softcap=softcap, token_weights=token_weights,
        )
    elif implementation == "torch":
        loss, ce, ent, w = ChunkedEntropyCE.apply(
            hidden, weight, bias, labels, spec, ignore_index, normalizer, softcap, default_chunk(weight.shape[0]),
            token_weights,
        )
    else:
        raise ValueError(f"implementation must be auto, triton or torch; got {implementation!r}")
    return EntropyCEOutput(loss=loss, ce=ce, entropy=ent, weights=w)


def _triton_available() -> bool:
    try:
        from finetune_mcp.kernels import triton_entropy_ce  # noqa: F401
    except ImportError:
        return False
    return True
