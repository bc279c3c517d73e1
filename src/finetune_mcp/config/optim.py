"""How long and how fast to train, and how often to log, evaluate and save (`OptimConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


def auto_optim(load_in_4bit: bool) -> str:
    """What `optim="auto"` means: 8-bit AdamW beside 4-bit weights, else fused AdamW (one kernel over all
    LoRA tensors; the transformers default since torch 2.8)."""
    return "adamw_8bit" if load_in_4bit else "adamw_torch_fused"


class OptimConfig(BaseModel):
    """Optimiser, schedule and cadence."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    num_train_epochs: float = Field(1.0, gt=0, le=100, validation_alias=AliasChoices("num_train_epochs", "epochs"),
                                    description="Passes over the training rows.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimiser steps (-1: run the epochs).")
    per_device_train_batch_size: int = Field(
        2, ge=1, le=1024, validation_alias=AliasChoices("per_device_train_batch_size", "batch_size"),
        description="Examples per forward pass on each device."
    )
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024, description="Forward passes per optimiser step.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of the LoRA weights.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = Field("auto", description="Optimizer name for transformers; auto = adamw_8bit with 4-bit, else adamw_torch_fused (one kernel for all LoRA tensors; the transformers default).")

    # Cadence
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (None: at the end of each epoch).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (None: at the end of each epoch).")
    save_total_limit: int | None = Field(
        2, ge=1, le=1000, description="Checkpoints kept in checkpoints/ (the oldest removed first); None keeps every "
        "one. Each holds the adapter and the optimiser state.")
    resume_from_checkpoint: str | bool | None = Field(
        None, description="Continue from a checkpoint: '<job_id>:<step>' (or '<job_id>:latest', or the bare job id) "
        "of an earlier job, or the path of a checkpoint folder.")

    @field_validator("optim")
    @classmethod
    def _optim_name(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"{value!r} is not an optimizer name (e.g. adamw_torch, adamw_8bit)")
        return value
