"""The training config: one fine-tuning run, composed of the field groups each part reads.

`TrainingConfig` is flat on the wire — GRANGER YAML files, spec.json, `config_overrides` — and
composed in code from the groups in this package: `DataConfig` (what `data.loader` reads),
`LoraConfig` (what `train.model` builds), `OptimConfig` (what the trainer runs), `EntropyFields`,
`RerankConfig` and `TrackingConfig` (report_to, project, run name), plus the run's own fields (model, backend, GPUs, run_dir). A consumer that
needs one group takes that group (`load_examples(config.data)`); other job kinds compose only the
groups they use (`EvaluationSpec` has data and model fields, no LoRA or optimiser).

`EnhancedTrainingConfig` is the same class under the name GRANGER's `unsloth_wip` users know; it
accepts that project's field names (`model_name`, `dataset_path`, `max_samples`, `output_dir`, ...)
as aliases, so their YAML files load unchanged. Fields it had that mean nothing here are dropped
with a note in `ignored_fields` rather than silently accepted or refused. Unknown fields are errors.

Plain data (no torch import): the server validates `start_finetune` arguments with it and the
worker reads the same `spec.json` back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config.data import DataConfig
from finetune_mcp.config.entropy import EntropyFields
from finetune_mcp.config.lora import LoraConfig
from finetune_mcp.config.methods import MemoryExtras
from finetune_mcp.config.optim import OptimConfig, auto_optim
from finetune_mcp.config.preference import PreferenceRLFields
from finetune_mcp.config.rerank import RerankConfig
from finetune_mcp.config.tracking import TrackingConfig
from finetune_mcp.config.validation import format_validation_error
from finetune_mcp.errors import ConfigError

# GRANGER EnhancedTrainingConfig fields that this project does not use; accepted and reported.
GRANGER_IGNORED_FIELDS = frozenset(
    {
        "dtype", "dataset_source", "bias", "loftq_config", "use_dora", "modules_to_save", "rank_pattern",
        "alpha_pattern", "per_device_eval_batch_size", "fp16", "bf16", "neftune_noise_alpha",
        "torch_compile", "gradient_checkpointing_kwargs", "dataloader_num_workers", "save_strategy",
        "evaluation_strategy", "load_best_model_at_end", "metric_for_best_model",
        "greater_is_better", "eval_accumulation_steps", "include_inputs_for_metrics",
        "early_stopping_patience", "early_stopping_threshold", "tensorboard_log_dir", "log_gradient_norm", "log_weight_histogram", "log_learning_rate",
        "logging_first_step", "logging_nan_inf_filter", "cpu_offload", "zero_stage",
        "activation_checkpointing", "optim_args", "dataset_num_proc", "group_by_length",
        "length_column_name", "adapter_name", "force_retrain", "compute_metrics",
        "preprocess_logits_for_metrics", "grokking", "use_grokking",
    }
)



class ModelFields(BaseModel):
    """Which model, loaded by which library (shared by training, evaluation and sampling)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    model: str = Field(
        validation_alias=AliasChoices("model", "model_name", "base_model"),
        min_length=1,
        description="Hugging Face model id (e.g. 'unsloth/Qwen3-4B'), a local model folder, or a GGUF file "
        "(or a folder holding one), imported once into a cached Hugging Face folder.",
    )
    backend: Literal["auto", "unsloth", "hf"] = Field(
        "auto", description="unsloth on CUDA when it imports; hf = transformers + PEFT (any device)."
    )


class ModelSourceField(BaseModel):
    """Where a GGUF `model` came from: set by the server's start check, kept in spec.json for the job
    views, the result and the card (composed first, so the field comes last in spec.json)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    gguf_source: dict[str, Any] | None = Field(
        None, description="Set by the server when `model` is a GGUF file: the file, its quantisation type, and "
        "whether its weights were dequantised (any quantised type) or are exact (F32/F16/BF16).",
    )


class RunFields(BaseModel):
    """Where the run executes and writes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    num_gpus: int | Literal["auto"] = Field(
        1, description="GPUs for one run (DDP through torchrun, one process per GPU); 'auto' = every local GPU.",
    )
    num_nodes: int = Field(
        1, ge=1, le=64, description="Machines for one run (target='runpod': a RunPod Instant Cluster, num_gpus GPUs "
        "each, DDP through torchrun across them; the HF/PEFT backend).",
    )
    run_dir: str | None = Field(
        None, validation_alias=AliasChoices("run_dir", "output_dir"),
        description="Where the run writes everything (default: $FINETUNE_MCP_HOME/runs/<job id>).",
    )
    save_merged: bool = Field(False, description="Also save a merged 16-bit model under merged/.")

    @field_validator("num_gpus")
    @classmethod
    def _gpu_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError("must be 'auto' or a whole number from 1 to 64")
        return value


# Bases are listed last-group-first: pydantic collects fields from the last base on, so spec.json
# (and the card's hyperparameter table) reads model, data, LoRA, optimiser, run, entropy, rerank, method
# settings (DPO / KTO / ORPO / GRPO), tracking, and the GGUF source.
class TrainingConfig(ModelSourceField, TrackingConfig, PreferenceRLFields, RerankConfig, EntropyFields, RunFields,
                     OptimConfig, LoraConfig, DataConfig, ModelFields):
    """One fine-tuning run. Every field has a default except `model` and `dataset`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    ignored_fields: list[str] = Field(default_factory=list, description="GRANGER fields accepted but unused.")
    start_warnings: list[str] = Field(default_factory=list, description="What the start check warned about (set "
                                      "by it, e.g. a GRPO reward constant on the probe completions).")

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

    @model_validator(mode="after")
    def _method_settings_fit(self) -> TrainingConfig:
        """The method's settings block checks itself against the whole run (GRPO: a reward is given,
        and the generation batch is whole groups), so the refusal comes before any job exists."""
        check = getattr(self.method_settings, "check_run", None)
        if check is not None:
            check(self)
        return self

    @property
    def method_settings(self) -> Any | None:
        """The settings block of this run's method (`config.preference`), or None for a method with none."""
        block = self.training_method.settings_block
        return getattr(self, block) if block else None

    @property
    def memory_extras(self) -> MemoryExtras:
        """What the method adds to the memory estimate, refined by its settings block where it can
        (GRPO: the generation batch it generates at once)."""
        extras = self.training_method.memory
        refine = getattr(self.method_settings, "memory_extras", None)
        return refine(extras, self) if refine is not None else extras

    @property
    def resolved_optim(self) -> str:
        if self.optim != "auto":
            return self.optim
        return auto_optim(self.load_in_4bit)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainingConfig:
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


EnhancedTrainingConfig = TrainingConfig  # the GRANGER name (unsloth_wip); same class, same fields


def build_config(data: dict[str, Any]) -> TrainingConfig:
    """Validate a mapping into a config, turning pydantic's errors into one `ConfigError`."""
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


