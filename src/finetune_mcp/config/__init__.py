"""Configuration as composed pydantic models that validate at the door (no torch).

Field groups, one module each: `data` (DataConfig, MetadataFilters), `lora` (LoraConfig),
`optim` (OptimConfig), `entropy` (EntropyConfig, EntropyFields), `rerank` (RerankConfig), `tracking`
(TrackingConfig: report_to, project, run name; the trackers' extras and variables);
`training` composes them into `TrainingConfig` (alias `EnhancedTrainingConfig`, the GRANGER name)
with the GRANGER field aliases; `settings` reads the process environment; `roots` the folders an
MCP tool's paths must lie in (`AllowedRoots`); `validation` words pydantic's errors for the caller. Other kinds' specs (evaluation, enhancement, ...) compose the
groups they need in their own packages.
"""

from finetune_mcp.config.data import DataConfig, MetadataFilters
from finetune_mcp.config.entropy import BUILTIN_WEIGHT_FNS, EntropyConfig, EntropyFields
from finetune_mcp.config.lora import DEFAULT_TARGET_MODULES, LoraConfig
from finetune_mcp.config.optim import OptimConfig
from finetune_mcp.config.rerank import RerankConfig
from finetune_mcp.config.roots import ROOTS_ENV, AllowedRoots, LocalPath
from finetune_mcp.config.settings import Settings
from finetune_mcp.config.tracking import TrackingConfig
from finetune_mcp.config.training import (
    GRANGER_IGNORED_FIELDS,
    EnhancedTrainingConfig,
    ModelFields,
    RunFields,
    TrainingConfig,
    build_config,
)
from finetune_mcp.config.validation import format_validation_error

__all__ = [
    "BUILTIN_WEIGHT_FNS",
    "DEFAULT_TARGET_MODULES",
    "GRANGER_IGNORED_FIELDS",
    "ROOTS_ENV",
    "AllowedRoots",
    "DataConfig",
    "EnhancedTrainingConfig",
    "EntropyConfig",
    "EntropyFields",
    "LocalPath",
    "LoraConfig",
    "MetadataFilters",
    "ModelFields",
    "OptimConfig",
    "RerankConfig",
    "RunFields",
    "Settings",
    "TrackingConfig",
    "TrainingConfig",
    "build_config",
    "format_validation_error",
]
