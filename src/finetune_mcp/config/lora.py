"""The adapter: LoRA rank, scaling, targets, and how the base is loaded under it (`LoraConfig`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraConfig(BaseModel):
    """LoRA / QLoRA settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    lora_r: int = Field(16, ge=1, le=1024, validation_alias=AliasChoices("lora_r", "r", "rank"),
                        description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1)
    use_rslora: bool = False
    load_in_4bit: bool = Field(False, description="QLoRA: load the base in 4 bits (needs CUDA + bitsandbytes).")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", validation_alias=AliasChoices("gradient_checkpointing", "use_gradient_checkpointing"),
        description="Recompute layers in backward to save memory. auto: off when the step fits easily "
        "(train.step_plan), on otherwise.",
    )

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _unsloth_checkpointing(cls, value: Any) -> Any:
        # GRANGER configs say use_gradient_checkpointing: "unsloth" (Unsloth's offloaded variant, which
        # this project uses whenever checkpointing is on with the unsloth backend)
        return True if value == "unsloth" else value
