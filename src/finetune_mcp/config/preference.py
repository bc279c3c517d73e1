"""Settings of the preference and RL methods, one nested block each: `dpo`, `kto`, `orpo`, `grpo`.

Defaults follow TRL 1.15 where they are safe on a small GPU and say so where they differ
(GRPO's `max_completion_length` is 256 here, TRL's 512). A block is read only by its method; the
others keep their defaults, so one experiment's arms can differ in one method setting
(`{"grpo": {"top_entropy_quantile": 0.2}}`). Plain pydantic: the server validates with it.

`RewardSpec` names one GRPO reward: a built-in (`REWARD_BUILTINS`, implemented in
`train/grpo/rewards/builtin_rewards.py`) or an allowed user function 'pkg.mod:fn' (FINETUNE_MCP_USER_FUNCTIONS),
with its weight in the combined reward Σ wᵢ·rᵢ.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from finetune_mcp.config.methods import MemoryExtras

# Built-in rewards (train/grpo/rewards/builtin_rewards.py implements them; tests check the two lists agree).
REWARD_BUILTINS = ("exact", "normalized", "numeric", "regex", "think_format", "length_penalty")
# Built-ins that compare the completion with a dataset column (the reference answer).
ANSWER_REWARDS = ("exact", "normalized", "numeric")
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                  "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft")


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DPOSettings(_Block):
    """Direct Preference Optimisation (Rafailov et al. 2023) through TRL's DPOTrainer."""

    beta: float = Field(0.1, ge=0, le=100, description="Strength of the implicit KL to the reference (TRL 0.1).")
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], min_length=1,
                                 description="TRL loss types (a list; several are summed with loss_weights).")
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type (default: all 1).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust/cDPO label noise (0 = off).")

    @field_validator("loss_type")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in DPO_LOSS_TYPES]
        if unknown:
            raise ValueError(f"unknown DPO loss_type {unknown}; use some of {', '.join(DPO_LOSS_TYPES)}")
        return value

    @model_validator(mode="after")
    def _weights_match(self) -> DPOSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} "
                             "loss types; give one weight per loss_type")
        return self


class KTOSettings(_Block):
    """Kahneman–Tversky Optimisation (Ethayarajh et al. 2024): unpaired good/bad completions."""

    beta: float = Field(0.1, ge=0, le=100, description="KL strength (TRL 0.1).")
    desirable_weight: float = Field(1.0, gt=0, le=100, description="Loss weight of label=true rows.")
    undesirable_weight: float = Field(1.0, gt=0, le=100, description="Loss weight of label=false rows.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"


class ORPOSettings(_Block):
    """Odds-Ratio Preference Optimisation (Hong et al. 2024): SFT + λ·odds-ratio term, no reference."""

    beta: float = Field(0.1, gt=0, le=100, description="λ, the odds-ratio term's weight (TRL 0.1).")


class RewardSpec(_Block):
    """One reward function of a GRPO run and its weight in the sum."""

    function: str = Field(description="Built-in (exact | normalized | numeric | regex | think_format | "
                          "length_penalty) or an allowed 'pkg.mod:fn'.")
    weight: float = Field(1.0, ge=-100, le=100)
    column: str = Field("answer", min_length=1, description="Dataset column holding the reference answer "
                        "(exact, normalized, numeric).")
    tolerance: float = Field(1e-6, ge=0, description="numeric: |answer − reference| ≤ tolerance·max(1, |reference|).")
    pattern: str | None = Field(None, description="regex: the completion must match (re.search, DOTALL).")
    target_length: int = Field(256, ge=1, description="length_penalty: characters beyond this cost reward.")

    @field_validator("function")
    @classmethod
    def _builtin_or_path(cls, value: str) -> str:
        if value in REWARD_BUILTINS:
            return value
        module, sep, attr = value.partition(":")
        if not sep:
            module, _, attr = value.rpartition(".")
        if not module or not attr or not all(p.isidentifier() for p in [*module.split("."), attr]):
            raise ValueError(f"{value!r} is neither a built-in reward ({', '.join(REWARD_BUILTINS)}) nor a "
                             "dotted path like 'my_pkg.rewards:fn'")
        return value

    @model_validator(mode="after")
    def _pattern_given(self) -> RewardSpec:
        if self.function == "regex":
            if not self.pattern:
                raise ValueError("the regex reward needs `pattern` (e.g. '^\\\\d+$')")
            import re

            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self


class GRPOSettings(_Block):
    """Group Relative Policy Optimisation with verifiable rewards, optionally entropy-aware.

    Policy term per completion token t (on-policy, one update per generation batch):
      A_i = (r_i − mean(r_group)) / std(r_group)       (scale_rewards="group"; "none": no division)
      loss = −Σ_t m_t·A_t·log p(y_t) / N − λ_H·Σ_t H_t / N  (+ β·KL when beta > 0)
    m_t = 1 when H_t ≥ Q_{1−ρ}(H over every completion token of the step, all ranks), else 0 (ρ =
    top_entropy_quantile, the share kept: 0.2 = top 20 %; 1.0 turns the mask off). Masked tokens still count in N (TRL semantics).
    """

    num_generations: int = Field(4, ge=2, le=64, description="Completions per prompt (a group). TRL's default is 8.")
    max_completion_length: int = Field(256, ge=1, le=32768, description="New tokens per completion (TRL 512).")
    temperature: float = Field(1.0, gt=0, le=4)
    beta: float = Field(0.0, ge=0, le=10, description="KL coefficient; 0 (TRL's default) loads no reference "
                        "model, and the loss can then be exactly 0 at the first step (A sums to 0 per group).")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    rewards: list[RewardSpec] = Field(default_factory=list, description="At least one reward.")
    top_entropy_quantile: float = Field(1.0, ge=0, le=1, description="ρ: the share of completion tokens the "
                                        "policy term trains, the highest-entropy ones (0.2 = top 20 %, the 80/20 paper; TRL's semantics); "
                                        "1.0 = every token.")
    entropy_bonus: float = Field(0.0, ge=0, le=1, description="λ_H: coefficient of the mean-entropy bonus (0 = off).")
    fused_loss: bool = Field(True, description="Compute log p and H with the project's fused kernel "
                             "(no N×V logits). false = TRL's own loss (no entropy mask or bonus).")

    def check_run(self, config: Any) -> None:
        """GRPO's two recurring start failures, refused with the fix: no reward, and a generation batch
        that is not whole groups (TRL: per_device_train_batch_size × GPUs × gradient_accumulation_steps
        must be divisible by num_generations). `config`: the whole TrainingConfig."""
        if not self.rewards:
            raise ValueError("method='grpo' needs at least one reward in grpo.rewards, e.g. "
                             "[{'function': 'exact', 'column': 'answer'}]")
        gpus = config.num_gpus if isinstance(config.num_gpus, int) else 1
        per_device, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
        batch = per_device * gpus * accumulation
        if batch % self.num_generations:
            options = sorted({n for n in range(2, batch + 1) if batch % n == 0})
            raise ValueError(
                f"the generation batch (per_device_train_batch_size {per_device} × {gpus} GPU(s) × "
                f"gradient_accumulation_steps {accumulation} = {batch}) is not divisible by grpo.num_generations "
                f"({self.num_generations}), so a prompt's group would be split; set num_generations to one of "
                f"{options or '(none: raise the batch)'} or per_device_train_batch_size to a multiple of "
                f"{self.num_generations}")

    def user_functions(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(function, what it is, the built-in names) of each reward, for the allow-list check at start."""
        return [(reward.function, "GRPO reward function", REWARD_BUILTINS) for reward in self.rewards]

    @staticmethod
    def zero_loss_note(block: dict[str, Any]) -> str | None:
        """Why the loss reads ~0 with β = 0 (`block`: the stored grpo settings)."""
        if block.get("beta", 0.0) != 0:
            return None
        return ("a loss near 0 is expected with grpo.beta = 0: the group's advantages sum to zero and the "
                "on-policy ratio is 1, so the value says nothing; watch train/reward and train/frac_reward_zero_std "
                "(1.0 = every group got one reward: nothing to learn)")

    def memory_extras(self, extras: MemoryExtras, config: Any) -> MemoryExtras:
        """TRL generates a whole generation batch (gradient_accumulation_steps micro-batches) before the
        first of them trains: its KV cache is that many micro-batches' worth."""
        return replace(extras, generations=config.gradient_accumulation_steps)

    @model_validator(mode="after")
    def _entropy_needs_fused(self) -> GRPOSettings:
        if not self.fused_loss and (self.top_entropy_quantile < 1.0 or self.entropy_bonus > 0):
            raise ValueError("top_entropy_quantile < 1 and entropy_bonus need fused_loss=true "
                             "(they are computed by the fused kernel)")
        return self


class PreferenceRLFields(BaseModel):
    """The method blocks of a training config: each read only by its method."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    dpo: DPOSettings = Field(default_factory=DPOSettings, description="DPO settings (method='dpo').")
    kto: KTOSettings = Field(default_factory=KTOSettings, description="KTO settings (method='kto').")
    orpo: ORPOSettings = Field(default_factory=ORPOSettings, description="ORPO settings (method='orpo').")
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="GRPO settings (method='grpo').")


def zero_loss_note(config: dict) -> str | None:
    """get_job's explanation of a zero loss for a run whose method's block explains one (spec.json as
    a mapping): GRPO with β = 0."""
    from finetune_mcp.config.methods import method_of

    block = method_of(config).settings_block
    note = getattr(PreferenceRLFields.model_fields[block].annotation, "zero_loss_note", None) if block else None
    return note(config.get(block) or {}) if note else None
