"""Entropy-aware training settings: how token entropy turns into loss weights (`EntropyConfig`,
the `entropy:` block) and the switch that turns weighting on (`EntropyFields`)."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

# The weight functions `kernels.weights` implements, named here so the server can validate a config
# without importing torch (tests/config/test_entropy.py checks the two lists agree).
BUILTIN_WEIGHT_FNS = ("linear", "relu", "exponential", "sigmoid", "dft", "entropy_gated", "top_entropy")


class EntropyConfig(BaseModel):
    """How token entropy turns into loss weights, and what counts as a high-entropy token.

    Per token, with h = H / log V (in [0, 1]) and p(y) the probability of the target token; each w
    is clipped to [min_weight, max_weight] and detached from the graph:
      linear         w = 1 + scale·h                 (default, scale 1: w = 1 + H/log V, in [1, 2])
      relu           w = 1 + scale·max(0, h − relu_threshold)
      exponential    w = exp(scale·h)
      sigmoid        w = 1 + sigmoid(scale·(h − 0.5))
      dft            w = p(y)                        (DFT, Wu et al. 2025; TRL loss_type="dft")
      entropy_gated  w = h^scale                     (EAFT, Diao et al. 2026: confident tokens, right or
                                                      wrong, are down-weighted to limit forgetting)
      top_entropy    w = 1 if H ≥ the `quantile`-th entropy quantile of the batch, else 0 (only the
                     top 1 − quantile train; Wang et al. 2025, "Beyond the 80/20 rule")
    or `function = "package.module:callable"`, a callable taking (H [N], log p(y) [N], log V) — or the
    older (H [N], log V) — and returning weights [N].
    """

    model_config = ConfigDict(extra="forbid")

    function: str = Field(
        "linear",
        description="Weight function: linear | relu | exponential | sigmoid | dft | entropy_gated | top_entropy, "
        "or a dotted path 'pkg.mod:fn'.",
    )
    scale: float = Field(1.0, gt=0, le=100, description="Slope of the weight function in h = H/log V.")
    min_weight: float = Field(0.0, ge=0, description="Lower clip for weights.")
    max_weight: float = Field(10.0, gt=0, le=1000, description="Upper clip for weights.")
    high_entropy_threshold: float | None = Field(
        None,
        ge=0,
        description="Absolute entropy (nats) above which a token is 'high entropy'. "
        "None: the `high_entropy_percentile` of the first logged window.",
    )
    high_entropy_percentile: float = Field(90.0, gt=0, lt=100)
    relu_threshold: float = Field(0.5, ge=0, le=1, description="For relu: the normalised entropy where weighting starts.")
    quantile: float = Field(0.8, ge=0, le=1, description="For top_entropy: tokens at or above this entropy quantile "
                            "of the batch train (0.8: the top 20 %).")
    global_quantile: bool = Field(False, description="For top_entropy: take the quantile over the tokens of every "
                                  "GPU's micro-batch (all-gathered) rather than each GPU's own; one threshold per "
                                  "step, as TRL's GRPO takes it. No effect on one GPU.")

    @field_validator("function")
    @classmethod
    def _known_function(cls, value: str) -> str:
        if value in BUILTIN_WEIGHT_FNS:
            return value
        module, sep, attr = value.partition(":")
        if not sep:
            module, _, attr = value.rpartition(".")
        if not module or not attr or not all(part.isidentifier() for part in [*module.split("."), attr]):
            raise ValueError(
                f"{value!r} is neither a built-in weight function ({', '.join(BUILTIN_WEIGHT_FNS)}) nor a dotted "
                "path like 'my_pkg.weights:fn'"
            )
        return value

    @model_validator(mode="after")
    def _clip_order(self) -> EntropyConfig:
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight ({self.min_weight}) must not exceed max_weight ({self.max_weight})")
        return self


class EntropyFields(BaseModel):
    """The entropy group of a training config: whether weighting is on, how, and how much to keep."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    enable_entropy_weighting: bool = Field(
        False, validation_alias=AliasChoices("enable_entropy_weighting", "entropy_weighting", "use_entropy_weighting"),
        description="Weight each token's loss by the model's uncertainty (entropy-aware training).",
    )
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    entropy_sample_tokens: int = Field(
        20000, ge=100, le=10_000_000, description="Token entropies kept per epoch for box plots and the card."
    )
