"""The loss head: weighted linear cross-entropy (entropy- and p(y)-based variants) without N×V logits.

Owns the math of the loss and nothing else (no trainer, no config): `functional.linear_entropy_ce`
is the one entry point callers use; underneath, `triton_entropy_ce` (the fused kernel, CUDA or the
Triton interpreter) and `torch_entropy_ce` (chunked torch: the CPU production path and the tests'
oracle); `weights` holds the weight functions w = f(H, log p(y)) both share (the loss variants).
"""

from finetune_mcp.kernels.functional import EntropyCEOutput, linear_entropy_ce
from finetune_mcp.kernels.weights import BUILTIN_WEIGHT_FNS, WeightSpec, entropy_weights

__all__ = ["BUILTIN_WEIGHT_FNS", "EntropyCEOutput", "WeightSpec", "entropy_weights", "linear_entropy_ce"]
