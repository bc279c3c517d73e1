"""An experiment's spec: arms (named loss settings) × seeds over one shared training configuration.

`ExperimentSpec` extends the training config, so every shared setting (model, dataset, steps,
LoRA, learning rate, ...) is an ordinary `EnhancedTrainingConfig` field, read by the same start
checks and placement as a training job. The arms say only how the loss is weighted: each is a name
plus `enable_entropy_weighting` and `entropy` overrides (function, scale, clip, ...). A run is the
shared config + one arm + one seed (`run_config`); its held-out split is fixed by `split_seed`
(default `seed`), so every run is scored on the same rows.

Arms may be given by name: "standard" (plain cross-entropy), "entropy" (the default weighting,
w = 1 + H / log V) or any built-in weight function (`BUILTIN_WEIGHT_FNS`: the list
`kernels.weights` implements, mirrored torch-free in `config.entropy` and checked against it by a
test), which turns weighting on with that function: a new variant is an arm name without a change
here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config import (
    BUILTIN_WEIGHT_FNS,
    EnhancedTrainingConfig,
    EntropyConfig,
    build_config,
    format_validation_error,
)
from finetune_mcp.config.methods import METHODS
from finetune_mcp.errors import ConfigError
from finetune_mcp.experiment.metrics import known_names

ARM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
DEFAULT_SEEDS = 3
# Fields that are the experiment's own (everything else is the shared training config).
EXPERIMENT_FIELDS = frozenset({"kind", "arms", "seeds", "baseline", "eval_dataset", "retain_dataset",
                               "generation_examples", "max_new_tokens", "primary_metric", "share_model", "parallel",
                               "only_runs", "shards"})
MAX_PARALLEL = 64
NO_RETAIN_ROWS = ("holds no rows to check forgetting on; give a retain_dataset with rows (e.g. the base model's "
                  "own replies to everyday prompts) or drop it")  # checked at start, and in the worker for a Hub id


def arm_from_name(name: str) -> dict[str, Any]:
    """A named arm as its settings; a ValueError listing what names mean otherwise."""
    functions = BUILTIN_WEIGHT_FNS
    if name == "standard":
        return {"name": name, "enable_entropy_weighting": False}
    if name == "entropy":
        return {"name": name, "enable_entropy_weighting": True}
    if name in functions:
        return {"name": name, "enable_entropy_weighting": True, "entropy": {"function": name}}
    raise ValueError(
        f"unknown arm {name!r}: a named arm is 'standard' (plain cross-entropy), 'entropy' (the default entropy "
        f"weighting, w = 1 + H/log V) or a built-in weight function ({', '.join(functions)}); for other settings "
        "give an object such as {\"name\": \"linear-x2\", \"enable_entropy_weighting\": true, "
        "\"entropy\": {\"function\": \"linear\", \"scale\": 2.0}}"
    )


class Arm(BaseModel):
    """One loss setting: a name, whether entropy weighting is on, and `entropy` fields that override
    the shared `entropy` config (function, scale, min_weight, max_weight, relu_threshold, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Names the arm's runs (<name>-s<seed>) and its rows.")
    enable_entropy_weighting: bool = False
    entropy: dict[str, Any] = Field(default_factory=dict, description="EntropyConfig fields for this arm.")
    method_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Method blocks this arm overrides, e.g. {\"grpo\": {\"top_entropy_quantile\": "
        "0.8}} (merged into the shared dpo / kto / orpo / grpo block).")

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        return arm_from_name(data) if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not re.fullmatch(ARM_NAME, value):
            raise ValueError(f"arm name {value!r}: use 1-40 letters, digits, '_', '.' or '-', starting with a letter "
                             "or digit (it names the arm's run folders)")
        return value

    @field_validator("entropy")
    @classmethod
    def _entropy_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        fields = EntropyConfig.model_fields
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"unknown entropy field(s) {', '.join(unknown)}; use {', '.join(fields)}")
        function = value.get("function")
        if isinstance(function, str) and ":" not in function and "." not in function \
                and function not in BUILTIN_WEIGHT_FNS:
            raise ValueError(f"function {function!r} is not a built-in weight function ({', '.join(BUILTIN_WEIGHT_FNS)}) "
                             "nor a dotted path 'pkg.module:fn'")
        EntropyConfig.model_validate(value)  # each value checked as in a training config
        return value

    @model_validator(mode="after")
    def _weighting_named(self) -> Arm:
        if self.entropy.get("function") and not self.enable_entropy_weighting:
            raise ValueError(f"arm {self.name!r} names the weight function {self.entropy['function']!r} but "
                             "enable_entropy_weighting is false; set it to true (or drop entropy.function)")
        return self

    def describe(self) -> str:
        """The loss in words, for the report and the card."""
        if not self.enable_entropy_weighting:
            return "plain cross-entropy"
        settings = ", ".join(f"{k} {v}" for k, v in self.entropy.items() if k != "function")
        function = self.entropy.get("function", "linear")
        return f"entropy-weighted CE, w = {function}" + (f" ({settings})" if settings else "")


def default_arms() -> list[Arm]:
    return [Arm.model_validate("standard"), Arm.model_validate("entropy")]


class ExperimentSpec(EnhancedTrainingConfig):
    """A start_experiment job: every arm trained with every seed, one run after another."""

    kind: Literal["experiment"] = "experiment"
    arms: list[Arm] = Field(default_factory=default_arms, min_length=2, max_length=8)
    seeds: list[int] = Field(default_factory=list, max_length=50,
                             description="One run per arm and seed (an int n means n seeds from `seed` on).")
    baseline: str | None = Field(None, description="The arm every other arm is compared with (default: the first).")
    eval_dataset: str | None = Field(None, description="Held-out rows (all of them) instead of the validation split "
                                     "of `dataset`.")
    retain_dataset: str | None = Field(None, description="Rows of behaviour the training should not change (e.g. "
                                       "the base model's own replies to everyday prompts), all of them: every run "
                                       "reports its CE on them (retain_ce) and the rise over the base model's CE on "
                                       "the same rows (retain_ce_rise, nats/token; positive = forgetting). Methods "
                                       "scored by held-out CE only (sft).")
    generation_examples: int = Field(100, ge=0, le=100_000, description="Held-out rows answered by greedy "
                                     "generation for exact / normalised match (0: none).")
    max_new_tokens: int = Field(32, ge=1, le=2048, description="Tokens a greedy reply may have.")
    primary_metric: str | None = Field(None, description="What the verdict and the recommendation are about "
                                       "(default: normalized_match when answers are checkable, else eval_ce; "
                                       "mrr@10 for rerank).")
    share_model: bool = Field(True, description="Load the base model once and re-initialise LoRA for each run "
                              "(false: load it for every run, as separate jobs would).")
    parallel: int | Literal["auto"] = Field(1, description="Workers training runs at once (one per free local GPU, "
                                            "RunPod pod or CPU slot; each keeps its base model loaded for its runs); "
                                            "1: one after another in one worker; 'auto': as many as are free.")
    only_runs: list[str] | None = Field(None, description="Set by the scheduler (experiment.parallel): the runs "
                                        "(<arm>-s<seed>) this worker trains, a share of the experiment.")
    shards: list[dict[str, Any]] | None = Field(None, description="Set by the scheduler: the jobs that train the "
                                                "shares ({job_id, run_dir, runs}); this worker only gathers them.")

    @model_validator(mode="before")
    @classmethod
    def _seed_count(cls, data: Any) -> Any:
        if isinstance(data, dict):
            seeds = data.get("seeds", DEFAULT_SEEDS)
            if isinstance(seeds, int) and not isinstance(seeds, bool):
                if not 1 <= seeds <= 50:
                    raise ValueError(f"seeds must be a count from 1 to 50 or a list of seeds (got {seeds})")
                start = data.get("seed", data.get("random_state", EnhancedTrainingConfig.model_fields["seed"].default))
                data = {**data, "seeds": [int(start) + i for i in range(seeds)]}
        return data

    @model_validator(mode="after")
    def _experiment_rules(self) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        if len(set(names)) < len(names):
            raise ValueError(f"arm names must differ (got {names}); rename the repeated one")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds must differ (got {self.seeds})")
        outside = [s for s in self.seeds if not 0 <= s <= 2**32 - 1]
        if outside:  # torch and numpy take 32-bit seeds: caught here, not in the worker after a run started
            raise ValueError(f"seeds must lie in 0…4294967295 (2**32 − 1); {outside[:3]} do not")
        if self.enable_entropy_weighting:
            raise ValueError("enable_entropy_weighting: an experiment's loss settings belong to its arms; drop it "
                             "and name the arms, e.g. arms=['standard', 'entropy']")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the arms ({', '.join(names)})")
        if self.parallel != "auto" and not 1 <= self.parallel <= MAX_PARALLEL:
            raise ValueError(f"parallel must be 'auto' or a whole number from 1 to {MAX_PARALLEL} (got {self.parallel})")
        known = {self.run_label(arm, seed) for seed in self.seeds for arm in self.arms}
        if self.only_runs is not None and (not self.only_runs or set(self.only_runs) - known):
            raise ValueError(f"only_runs must name runs of this experiment ({', '.join(sorted(known))})")
        if self.num_nodes != 1:
            raise ValueError("num_nodes: an experiment's runs train on one machine each; use parallel=N to spread "
                             "the runs over several workers")
        if self.num_gpus != 1:
            raise ValueError("num_gpus: an experiment runs its runs one after another on one device; use num_gpus=1")
        if self.resume_from_checkpoint:
            raise ValueError("resume_from_checkpoint: each run of an experiment starts fresh; drop it")
        if self.retain_dataset is not None and "eval_ce" not in self.training_method.heldout_metrics:
            raise ValueError(f"retain_dataset: the forgetting check compares held-out CE, which method="
                             f"{self.method!r} is not scored by (only sft is); drop retain_dataset or use method='sft'")
        names = known_names(self.method, retain=self.retain_dataset is not None)
        if self.primary_metric is not None and self.primary_metric not in names:
            if self.primary_metric in known_names(self.method, retain=True):
                raise ValueError(f"primary_metric {self.primary_metric!r} is measured on a retain_dataset; give one "
                                 "(the rows the training should not change) or pick another metric")
            raise ValueError(f"primary_metric {self.primary_metric!r} is not a metric of method={self.method!r}; "
                             f"use one of {', '.join(names)}")
        for arm in self.arms:  # every run's config must be valid, or the experiment would fail halfway
            self.run_config(arm, self.seeds[0])
        return self

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name

    @property
    def plan(self) -> list[tuple[int, Arm]]:
        """The runs in the order they train: seed by seed, every arm of a seed before the next seed, so
        an experiment stopped early leaves complete pairs (the statistics compare arms within a seed)."""
        every = [(seed, arm) for seed in self.seeds for arm in self.arms]
        if self.only_runs is None:
            return every
        return [(seed, arm) for seed, arm in every if self.run_label(arm, seed) in self.only_runs]

    @property
    def full_plan(self) -> list[tuple[int, Arm]]:
        """Every run of the experiment, whichever share of it this worker trains."""
        return self.model_copy(update={"only_runs": None}).plan

    @staticmethod
    def run_label(arm: Arm | str, seed: int) -> str:
        return f"{arm if isinstance(arm, str) else arm.name}-s{seed}"

    def run_config(self, arm: Arm, seed: int, run_dir: Path | None = None) -> EnhancedTrainingConfig:
        """The training config of one run: the shared settings, the arm's loss, the seed, the fixed split."""
        data = self.model_dump(exclude={*EXPERIMENT_FIELDS, "ignored_fields"})
        blocks = [m.settings_block for m in METHODS.values() if m.settings_block]
        for block, fields in arm.method_settings.items():
            if block not in blocks:
                raise ConfigError(f"arm {arm.name!r}: method_settings has {block!r}; use one of {', '.join(blocks)}")
            data[block] = {**data[block], **fields}
        data.update(enable_entropy_weighting=arm.enable_entropy_weighting, entropy={**data["entropy"], **arm.entropy},
                    seed=seed, split_seed=self.data_split_seed, run_dir=str(run_dir) if run_dir else None)
        try:
            return build_config(data)
        except ConfigError as exc:
            raise ConfigError(f"arm {arm.name!r}: {str(exc).removeprefix('invalid training config: ')}") from None

    def heldout_config(self) -> EnhancedTrainingConfig:
        """A config that reads the held-out rows: `eval_dataset` whole, or the validation split of `dataset`
        (as every run splits it: the same `split_seed`)."""
        config = self.run_config(self.arms[0], self.seeds[0])
        if self.eval_dataset is None:
            return config
        return self._whole_file_config(config, self.eval_dataset)

    def retain_config(self) -> EnhancedTrainingConfig | None:
        """A config that reads the retain rows (`retain_dataset` whole), or None when there are none."""
        if self.retain_dataset is None:
            return None
        return self._whole_file_config(self.run_config(self.arms[0], self.seeds[0]), self.retain_dataset)

    @staticmethod
    def _whole_file_config(config: EnhancedTrainingConfig, dataset: str) -> EnhancedTrainingConfig:
        # dataset_files is the start check's record of `dataset`'s files, not of this file
        return build_config({**config.model_dump(exclude={"ignored_fields", "dataset_files"}), "dataset": dataset,
                             "validation_split": 0.0, "max_examples": None, "dataset_format": "auto"})


def build_experiment_spec(data: dict[str, Any]) -> ExperimentSpec:
    """Validate a mapping into a spec, with one `ConfigError` naming each problem and its fix."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def _format(exc: ValidationError) -> str:
    """As `config.format_validation_error`, but a rule about the whole spec is said without quoting it back."""
    whole = [e["msg"].removeprefix("Value error, ") for e in exc.errors() if not e["loc"]]
    fields = [e for e in exc.errors() if e["loc"]]
    parts = [format_validation_error(ValidationError.from_exception_data(exc.title, fields)).removeprefix(
        "invalid training config: ")] if fields else []
    return "invalid experiment: " + "; ".join(whole + parts)


def load_experiment_spec(spec_path: Path) -> ExperimentSpec:
    """An experiment job's spec.json; a ConfigError that says what is wrong otherwise."""
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the experiment spec {spec_path}: {exc}") from None
    return build_experiment_spec(data)
