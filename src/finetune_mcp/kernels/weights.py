"""Per-token loss weights w = f(H, log p(y)), shared by the torch path and the fused kernel.

Every loss variant is a weighted CE, loss = Σ w·CE / normaliser, with w detached: w scales the
token's CE gradient and is not itself optimised. Entropy-based built-ins take the normalised
entropy h = H / log V ∈ [0, 1], so the same settings mean the same thing for a 512-token toy
vocabulary and a 151k one. Each built-in's formula (the docstrings of the `_w_*` functions, one
line each, are the reference the README and model card quote):

    linear         w = 1 + s·h
    relu           w = 1 + s·max(h − t, 0)
    exponential    w = exp(s·h)
    sigmoid        w = 1 + sigmoid(s·(h − 0.5))
    dft            w = p(y) = exp(−CE)
    entropy_gated  w = h^s
    top_entropy    w = 1 if H ≥ Q_q(H over the call's valid tokens) else 0 (`global_quantile`: over
                   the valid tokens of every rank, all-gathered, as TRL's GRPO takes it)

(s = `scale`, t = `relu_threshold`, q = `quantile`; every w is then clipped to [min_weight, max_weight].)

Row-level functions (all but top_entropy) need only the token's own H and CE, so the fused kernel
computes them in its epilogue. top_entropy is batch-level: its threshold needs every token's H
first, so both implementations compute the unscaled gradient and scale it afterwards (see
`is_batch_level`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from finetune_mcp.user_functions import load_callable

BUILTIN_WEIGHT_FNS = ("linear", "relu", "exponential", "sigmoid", "dft", "entropy_gated", "top_entropy")
# Built-ins whose weight of one token depends on the other tokens of the call.
BATCH_WEIGHT_FNS = ("top_entropy",)

# A user function: the new form (H [N], log p(y) [N], log V) or the old one (H [N], log V) → w [N].
UserWeightFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class WeightSpec:
    """A weight function with its parameters; `fn` is a builtin name or a 'pkg.mod:callable' path.

    `scale` (s) is each built-in's shape parameter: the slope for linear / relu, the rate for
    exponential, the steepness for sigmoid, the exponent for entropy_gated (dft and top_entropy
    ignore it). `quantile` (q ∈ [0, 1]) is top_entropy's entropy quantile: the top 1 − q train.
    """

    fn: str = "linear"
    scale: float = 1.0
    min_weight: float = 0.0
    max_weight: float = 10.0
    relu_threshold: float = 0.5
    quantile: float = 0.8
    global_quantile: bool = False  # top_entropy: the quantile over every rank's tokens (all-gathered), not this call's

    def __post_init__(self) -> None:
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"WeightSpec.quantile must be in [0, 1]; got {self.quantile}")

    @classmethod
    def coerce(cls, value: WeightSpec | str | None) -> WeightSpec | None:
        """None → None (no weighting, w = 1); a name → that function with default parameters."""
        if value is None or isinstance(value, WeightSpec):
            return value
        return cls(fn=value)

    @property
    def is_builtin(self) -> bool:
        return self.fn in BUILTIN_WEIGHT_FNS

    @property
    def is_batch_level(self) -> bool:
        """True when a token's w depends on the whole call's entropies (it cannot be set row by row)."""
        return self.fn in BATCH_WEIGHT_FNS


def load_user_fn(path: str) -> UserWeightFn:
    """Import 'pkg.mod:fn' (or 'pkg.mod.fn'); see `takes_log_prob` for the two call forms.

    Only from a module the operator allowed (FINETUNE_MCP_USER_FUNCTIONS, `finetune_mcp.user_functions`),
    checked before the import: importing a module runs its code."""
    return load_callable(path, "entropy weight function", builtins=BUILTIN_WEIGHT_FNS)


def takes_log_prob(fn: UserWeightFn) -> bool:
    """Whether a user function has the new form fn(H, log_p_y, log_V) rather than fn(H, log_V).

    The rule: three or more positional parameters without defaults, or a *args, is the new form;
    anything else, and a callable whose signature Python cannot read (a C builtin such as
    `torch.add`), is called the old way, as it was before log p(y) existed.
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind in positional and p.default is inspect.Parameter.empty)
    return required >= 3 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


# ---- the built-ins: one line each, h = H / log V, s = spec.scale --------------------------------


def _w_linear(h, spec):
    """w = 1 + s·h"""
    return 1.0 + spec.scale * h


def _w_relu(h, spec):
    """w = 1 + s·max(h − t, 0), t = relu_threshold"""
    return 1.0 + spec.scale * torch.clamp(h - spec.relu_threshold, min=0.0)


def _w_exponential(h, spec):
    """w = exp(s·h)"""
    return torch.exp(spec.scale * h)


def _w_sigmoid(h, spec):
    """w = 1 + sigmoid(s·(h − 0.5))"""
    return 1.0 + torch.sigmoid(spec.scale * (h - 0.5))


def _w_dft(log_prob):
    """w = p(y) = exp(−CE), detached: Dynamic Fine-Tuning, Wu et al. 2025, "On the Generalization of
    SFT: A Reinforcement Learning Perspective with Reward Rectification" (TRL's loss_type="dft")."""
    return torch.exp(log_prob)


def _w_entropy_gated(h, spec):
    """w = h^s (s = 1: w = H / log V): the entropy gate of EAFT, Diao et al. 2026, "Entropy-Adaptive
    Fine-Tuning: Resolving Confident Conflicts to Mitigate Forgetting" (arXiv 2601.02151).

    Confident tokens (low H) barely train, so a confident but wrong prediction ("confident
    conflict": low H, low p(y)) no longer drives a large, forgetting-prone update, while uncertain
    tokens keep most of their gradient. EAFT's paper writes L = −Σ H̃_t·log p(y_t) and its code uses
    H̃ = (H_top20 / ln 20)^α, the entropy of the renormalised top-20 logits; here H is the exact
    full-vocabulary entropy, normalised by log V like every built-in, and α is `scale`. At a
    151k vocabulary the weights are therefore ≈ 4× smaller than EAFT's (log V ≈ 11.9 against
    ln 20 ≈ 3.0): the same ordering of tokens, a lower effective learning rate.
    """
    return h.clamp(min=0.0).pow(spec.scale)


def _w_top_entropy(entropy, valid, spec):
    """w = 1 if H ≥ Q_q(H over the call's valid tokens — or every rank's, `global_quantile`) else 0
    (ties at the threshold train): Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority
    Tokens Drive Effective RL"."""
    quantile = gathered_quantile if spec.global_quantile else batch_quantile
    return (entropy >= quantile(entropy, valid, spec.quantile)).float()


def gathered_quantile(values: torch.Tensor, valid: torch.Tensor | None, q: float) -> torch.Tensor:
    """The q-quantile of the valid `values` of every rank of the process group (TRL's GRPO takes its
    top-entropy quantile so: one threshold for the whole step, not one per rank's micro-batch, which
    ms-swift called a bug). Each rank sends its valid values padded with +inf to the longest count;
    without a process group (or with one rank) it is `batch_quantile`. Every rank must call it the
    same number of times (a collective): the loss of every micro-batch does."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batch_quantile(values, valid, q)
    local = values.float() if valid is None else values.float()[valid]
    count = torch.tensor([local.numel()], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    padded = torch.full((int(max(c.item() for c in counts)),), math.inf, device=local.device)
    padded[: local.numel()] = local
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    everything = torch.cat(gathered)
    return batch_quantile(everything, torch.isfinite(everything), q)


def batch_quantile(values: torch.Tensor, valid: torch.Tensor | None, q: float) -> torch.Tensor:
    """The q-quantile of `values[valid]` (linear interpolation, as `torch.quantile`) as a 0-dim tensor.

    No host synchronisation: invalid entries are sorted to the end as +inf and the rank is taken
    from the device-side count of valid entries. No valid entry: +inf (nothing reaches it).
    """
    values = values.float()
    if valid is None:
        valid = torch.ones_like(values, dtype=torch.bool)
    n_valid = valid.sum()
    ordered = torch.sort(torch.where(valid, values, math.inf)).values  # [N], the valid ones first
    rank = q * (n_valid - 1).clamp(min=0).to(values.dtype)
    below = torch.gather(ordered, 0, rank.floor().long().reshape(1))
    above = torch.gather(ordered, 0, rank.ceil().long().reshape(1))
    threshold = torch.lerp(below, above, (rank - rank.floor()).reshape(1)).squeeze(0)
    return torch.where(n_valid > 0, threshold, math.inf)


@torch.no_grad()
def entropy_weights(
    entropy: torch.Tensor,
    log_vocab: float,
    spec: WeightSpec | None,
    *,
    log_prob: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token weights w = f(H, log p(y)) in fp32, clipped to [min_weight, max_weight]; ones when spec is None.

    `log_prob` [N] is log p(y) = −CE (`-out.ce` of `linear_entropy_ce`): needed by dft and by user
    functions of the new form, ignored otherwise. `valid` [N] bool marks the tokens top_entropy's
    quantile is taken over (default: all). Weights come back for every token; callers zero the
    ignored ones.
    """
    entropy = entropy.float()
    if spec is None:
        return torch.ones_like(entropy)
    h = entropy / log_vocab
    if spec.fn == "linear":
        w = _w_linear(h, spec)
    elif spec.fn == "relu":
        w = _w_relu(h, spec)
    elif spec.fn == "exponential":
        w = _w_exponential(h, spec)
    elif spec.fn == "sigmoid":
        w = _w_sigmoid(h, spec)
    elif spec.fn == "dft":
        w = _w_dft(_require_log_prob(log_prob, entropy, spec.fn))
    elif spec.fn == "entropy_gated":
        w = _w_entropy_gated(h, spec)
    elif spec.fn == "top_entropy":
        w = _w_top_entropy(entropy, valid, spec)
    else:
        fn = load_user_fn(spec.fn)
        if takes_log_prob(fn):
            w = fn(entropy, _require_log_prob(log_prob, entropy, spec.fn), log_vocab)
        else:
            w = fn(entropy, log_vocab)
        w = torch.as_tensor(w).float()
        if w.shape != entropy.shape:
            raise ValueError(
                f"entropy weight function {spec.fn!r} returned shape {tuple(w.shape)}, expected {tuple(entropy.shape)}"
            )
    return w.clamp(spec.min_weight, spec.max_weight)


@torch.no_grad()
def token_loss_weights(
    entropy: torch.Tensor,  # [N] fp32
    ce: torch.Tensor,  # [N] fp32
    valid: torch.Tensor,  # [N] bool
    log_vocab: float,
    spec: WeightSpec | None,
    token_weights: torch.Tensor | None,  # [N] multipliers
) -> torch.Tensor:
    """The w the loss uses: f(H, −CE) (valid tokens only count toward batch statistics) × token weights, 0 where ignored."""
    w = entropy_weights(entropy, log_vocab, spec, log_prob=-ce, valid=valid) * valid
    return w * token_weights.float() if token_weights is not None else w


def _require_log_prob(log_prob: torch.Tensor | None, entropy: torch.Tensor, fn: str) -> torch.Tensor:
    if log_prob is None:
        raise ValueError(
            f"weight function {fn!r} needs the target-token log-probability: pass log_prob= "
            "(log p(y) = -ce, e.g. entropy_weights(out.entropy, log_v, spec, log_prob=-out.ce))"
        )
    if log_prob.shape != entropy.shape:
        raise ValueError(f"log_prob must be [N] = [{entropy.shape[0]}]; got {tuple(log_prob.shape)}")
    return log_prob.float()


