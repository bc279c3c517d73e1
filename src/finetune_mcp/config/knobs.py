"""The training settings that surfaces expose by name, declared once.

`TYPED_KNOBS` are the TrainingConfig inputs that `start_finetune` and `preview_training` take as typed
parameters and that `finetune-mcp train` / `preview` take as flags; every other field goes through
`config_overrides` (tools) or `--config FILE` (CLI). The CLI generates its options from this list and
the fields themselves (`cli.options`): type, description and default come from the config groups, so
an option cannot say something its field does not. The tools' parameters keep their own short
descriptions (they are the agent-facing contract); tests/config/test_knobs.py checks that both surfaces
expose exactly these knobs, so adding one to a surface without the other fails.
"""

from __future__ import annotations

from pydantic.fields import FieldInfo

from finetune_mcp.config.entropy import EntropyConfig
from finetune_mcp.config.training import TrainingConfig

TYPED_KNOBS: tuple[str, ...] = (
    "enable_entropy_weighting", "entropy_weight_fn", "max_steps", "num_train_epochs", "max_examples",
    "max_seq_length", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "lora_r",
    "load_in_4bit", "method", "num_gpus", "report_to", "project", "run_name",
)

# Input spellings that are no field of TrainingConfig itself: the flat name -> the field it fills.
_FLAT_INPUTS: dict[str, FieldInfo] = {"entropy_weight_fn": EntropyConfig.model_fields["function"]}


def knob_field(name: str) -> FieldInfo:
    """The pydantic field a knob sets (its annotation, description and default)."""
    if name in _FLAT_INPUTS:
        return _FLAT_INPUTS[name]
    return TrainingConfig.model_fields[name]


def knob_of(name: str) -> str | None:
    """The knob (field name) a parameter or option name sets, through the config's aliases; None for
    names that set no training field (target, config_overrides, ...)."""
    if name in _FLAT_INPUTS or name in TrainingConfig.model_fields:
        return name
    for field_name, field in TrainingConfig.model_fields.items():
        choices = getattr(field.validation_alias, "choices", ())
        if name in choices:
            return field_name
    return None
