"""Configuration: what to train and how, as pydantic models that validate at the door.

`EnhancedTrainingConfig` keeps the name GRANGER's `unsloth_wip` users know, and accepts that
project's field names (`model_name`, `dataset_path`, `max_samples`, `output_dir`, ...) as aliases,
so their YAML files load unchanged. Fields it had that mean nothing here are dropped with a note in
`ignored_fields` rather than silently accepted or refused. Unknown fields are errors.

The config is plain data (no torch import): the server validates `start_finetune` arguments with it
and the worker reads the same `spec.json` back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from finetune_mcp.errors import ConfigError

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# GRANGER EnhancedTrainingConfig fields that this project does not use; accepted and reported.
GRANGER_IGNORED_FIELDS = frozenset(
    {
        "dtype", "dataset_source", "bias", "loftq_config", "use_dora", "modules_to_save", "rank_pattern",
        "alpha_pattern", "per_device_eval_batch_size", "fp16", "bf16", "neftune_noise_alpha",
        "torch_compile", "gradient_checkpointing_kwargs", "dataloader_num_workers", "save_strategy",
        "save_total_limit", "evaluation_strategy", "load_best_model_at_end", "metric_for_best_model",
        "greater_is_better", "eval_accumulation_steps", "include_inputs_for_metrics",
        "early_stopping_patience", "early_stopping_threshold", "report_to", "run_name",
        "tensorboard_log_dir", "log_gradient_norm", "log_weight_histogram", "log_learning_rate",
        "logging_first_step", "logging_nan_inf_filter", "cpu_offload", "zero_stage",
        "activation_checkpointing", "optim_args", "dataset_num_proc", "group_by_length",
        "length_column_name", "adapter_name", "force_retrain", "compute_metrics",
        "preprocess_logits_for_metrics", "grokking", "use_grokking",
    }
)

WeightFnName = Literal["linear", "relu", "exponential", "sigmoid"]


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class EntropyConfig(BaseModel):
    """How token entropy turns into loss weights, and what counts as a high-entropy token.

    Functions of the normalised entropy h = H / log V (in [0, 1]), each clipped to
    [min_weight, max_weight] and detached from the graph:
      linear       w = 1 + scale·h                      (default scale 1: w = 1 + H/log V, in [1, 2])
      relu         w = 1 + scale·max(0, h − threshold_norm)
      exponential  w = exp(scale·h)
      sigmoid      w = 1 + sigmoid(scale·(h − 0.5))
    or `function = "package.module:callable"`, a callable taking (H [N] tensor, log V float) and
    returning weights [N].
    """

    model_config = ConfigDict(extra="forbid")

    function: str = Field(
        "linear",
        description="Weight function: linear | relu | exponential | sigmoid, or a dotted path 'pkg.mod:fn'.",
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

    @field_validator("function")
    @classmethod
    def _known_function(cls, value: str) -> str:
        if value in ("linear", "relu", "exponential", "sigmoid"):
            return value
        module, sep, attr = value.partition(":")
        if not sep:
            module, _, attr = value.rpartition(".")
        if not module or not attr or not all(part.isidentifier() for part in [*module.split("."), attr]):
            raise ValueError(
                f"{value!r} is neither linear, relu, exponential, sigmoid nor a dotted path like 'my_pkg.weights:fn'"
            )
        return value

    @model_validator(mode="after")
    def _clip_order(self) -> EntropyConfig:
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight ({self.min_weight}) must not exceed max_weight ({self.max_weight})")
        return self


class MetadataFilters(BaseModel):
    """Row filters for ArangoDB Q&A exports (their `metadata` object)."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float | None = Field(None, ge=0, le=1, description="Keep rows with metadata.confidence >= this.")
    validated_only: bool = Field(False, description="Keep only rows with metadata.validated == true.")
    question_types: list[str] | None = Field(None, description="Keep only these metadata.question_type values.")


class EnhancedTrainingConfig(BaseModel):
    """One fine-tuning run. Every field has a default except `model` and `dataset`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    # What
    model: str = Field(
        validation_alias=_alias("model", "model_name", "base_model"),
        min_length=1,
        description="Hugging Face model id (e.g. 'unsloth/Qwen3-4B') or a local model folder.",
    )
    dataset: str = Field(
        validation_alias=_alias("dataset", "dataset_path", "dataset_name"),
        min_length=1,
        description="Local file/folder (JSONL, JSON, CSV, Parquet) or a Hugging Face dataset id.",
    )
    task: Literal["sft", "rerank"] = Field(
        "sft", description="Training objective: sft (next-token loss on the replies) or rerank (Qwen3-Reranker "
        "yes/no relevance on ranking data: query + positive(s)/negatives, triples, or graded docs).",
    )
    dataset_format: Literal[
        "auto", "alpaca", "messages", "sharegpt", "prompt_completion", "text", "arangodb", "ranking", "triples", "graded"
    ] = "auto"
    dataset_split: str = Field("train", description="Split to read from a hub dataset.")
    metadata_filters: MetadataFilters = Field(default_factory=MetadataFilters)
    max_examples: int | None = Field(
        None, ge=1, validation_alias=_alias("max_examples", "max_samples"),
        description="Seeded random subset of this many examples.",
    )
    validation_split: float = Field(0.1, ge=0, le=0.5, description="Fraction held out for evaluation.")
    max_seq_length: int = Field(2048, ge=16, le=131072)
    assistant_only_loss: bool = Field(True, description="Compute loss on assistant tokens only.")

    # LoRA
    lora_r: int = Field(16, ge=1, le=1024, validation_alias=_alias("lora_r", "r", "rank"))
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1)
    use_rslora: bool = False
    load_in_4bit: bool = Field(False, description="QLoRA: load the base in 4 bits (needs CUDA + bitsandbytes).")
    gradient_checkpointing: bool = Field(
        True, validation_alias=_alias("gradient_checkpointing", "use_gradient_checkpointing")
    )

    # Optimisation
    num_train_epochs: float = Field(1.0, gt=0, le=100, validation_alias=_alias("num_train_epochs", "epochs"))
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimiser steps (-1: run the epochs).")
    per_device_train_batch_size: int = Field(
        2, ge=1, le=1024, validation_alias=_alias("per_device_train_batch_size", "batch_size")
    )
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = Field("auto", description="Optimizer name for transformers; auto = adamw_8bit with 4-bit, else adamw_torch.")
    seed: int = Field(3407, validation_alias=_alias("seed", "random_state"))

    # Cadence
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (None: at the end of each epoch).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (None: at the end of each epoch).")
    resume_from_checkpoint: str | bool | None = None

    # Where and how
    backend: Literal["auto", "unsloth", "hf"] = Field(
        "auto", description="unsloth on CUDA when it imports; hf = transformers + PEFT (any device)."
    )
    num_gpus: int | Literal["auto"] = Field(
        1, description="GPUs for one run (DDP through torchrun, one process per GPU); 'auto' = every local GPU.",
    )
    run_dir: str | None = Field(
        None, validation_alias=_alias("run_dir", "output_dir"),
        description="Where the run writes everything (default: $FINETUNE_MCP_HOME/runs/<job id>).",
    )
    save_merged: bool = Field(False, description="Also save a merged 16-bit model under merged/.")

    # Entropy-aware training
    enable_entropy_weighting: bool = Field(
        False, validation_alias=_alias("enable_entropy_weighting", "entropy_weighting", "use_entropy_weighting")
    )
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    entropy_sample_tokens: int = Field(
        20000, ge=100, le=10_000_000, description="Token entropies kept per epoch for box plots and the card."
    )

    # Reranking (task="rerank"; see train/rerank/prompt.py)
    rerank_loss: Literal["pointwise", "listwise"] = Field(
        "pointwise", description="pointwise: yes/no cross-entropy per (query, document); listwise: softmax over the "
        "yes-vs-no log-odds of one query's documents, cross-entropy on the relevant one.",
    )
    rerank_instruction: str | None = Field(
        None, max_length=2000, description="The <Instruct> line for rows without an 'instruction' (default: "
        "Qwen3-Reranker's 'Given a web search query, retrieve relevant passages that answer the query').",
    )
    rerank_group_size: int = Field(
        8, ge=2, le=256, description="listwise: documents per group (one relevant + up to this many - 1 less relevant).",
    )

    ignored_fields: list[str] = Field(default_factory=list, description="GRANGER fields accepted but unused.")

    @model_validator(mode="before")
    @classmethod
    def _granger_compat(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        ignored = sorted(k for k in data if k in GRANGER_IGNORED_FIELDS)
        for key in ignored:
            data.pop(key)
        if "entropy_weight_fn" in data:  # flat spelling used by CLI flags and the GRANGER notes
            entropy = dict(data.get("entropy") or {})
            entropy["function"] = data.pop("entropy_weight_fn")
            data["entropy"] = entropy
        if ignored:
            data["ignored_fields"] = sorted({*data.get("ignored_fields", []), *ignored})
        return data

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _unsloth_checkpointing(cls, value: Any) -> Any:
        # GRANGER configs say use_gradient_checkpointing: "unsloth" (Unsloth's offloaded variant, which
        # this project uses whenever checkpointing is on with the unsloth backend)
        return True if value == "unsloth" else value

    @field_validator("num_gpus")
    @classmethod
    def _gpu_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError("must be 'auto' or a whole number from 1 to 64")
        return value

    @field_validator("optim")
    @classmethod
    def _optim_name(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"{value!r} is not an optimizer name (e.g. adamw_torch, adamw_8bit)")
        return value

    @property
    def resolved_optim(self) -> str:
        if self.optim != "auto":
            return self.optim
        return "adamw_8bit" if self.load_in_4bit else "adamw_torch"

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> EnhancedTrainingConfig:
        """Load from YAML or JSON, then apply `overrides` (CLI flags) on top."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass the path of a .yaml or .json file")
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as exc:  # yaml and json raise different types; both mean "unparseable"
            raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of field names to values")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return build_config(data)


TrainingConfig = EnhancedTrainingConfig


def build_config(data: dict[str, Any]) -> EnhancedTrainingConfig:
    """Validate a mapping into a config, turning pydantic's errors into one `ConfigError`."""
    try:
        return EnhancedTrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: the field, the rule it broke, and the value given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see EnhancedTrainingConfig fields)"
        given = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
        lines.append(f"{loc}: {msg}{given}")
    return "invalid training config: " + "; ".join(lines)


class Settings(BaseModel):
    """Process-wide settings from the environment. Secrets stay here and in child environments only."""

    model_config = ConfigDict(frozen=True)

    home: Path
    hf_token: str | None = Field(None, repr=False)
    runpod_api_key: str | None = Field(None, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("FINETUNE_MCP_HOME") or Path.home() / ".finetune-mcp").expanduser()
        return cls(
            home=home,
            hf_token=os.environ.get("HF_TOKEN") or None,
            runpod_api_key=os.environ.get("RUNPOD_API_KEY") or None,
        )

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def db_path(self) -> Path:
        return self.home / "jobs.db"

