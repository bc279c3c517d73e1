"""Checks at `start_finetune`: fail in a second with the reason, not minutes later in the worker.

Runs in the server process, so it imports no torch: the model check reads config.json (local
folder, Hugging Face cache, or the Hub under a deadline, via `jobs.vram`), the dataset check is the
`data.loader.validate_dataset` (reads local files in full, looks hub ids up). Local paths are
made absolute here because the worker runs in the run directory, not in the server's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from finetune_mcp.config import DataConfig, Settings, TrainingConfig
from finetune_mcp.config.entropy import BUILTIN_WEIGHT_FNS
from finetune_mcp.errors import ConfigError
from finetune_mcp.user_functions import UserFunctionError, check_resolves, require_allowed

Spec = TypeVar("Spec", bound=DataConfig)


def check_start(config: TrainingConfig, settings: Settings) -> TrainingConfig:
    """The `train` kind's start check: `config` with local model/dataset paths made absolute, or
    the FinetuneError that says what to fix (ModelError, DatasetError). `settings` is for checks
    that need secrets (HF_TOKEN reaches the Hub client through the environment)."""
    check_user_function(config.entropy.function, "entropy weight function", BUILTIN_WEIGHT_FNS)
    return check_model_and_data(config)


def check_user_function(path: str | None, what: str, builtins: tuple[str, ...]) -> None:
    """A function named by path: allowed by the operator (FINETUNE_MCP_USER_FUNCTIONS) and found,
    checked without importing it (importing runs the module's code); built-in names pass. A
    ConfigError with the fix otherwise."""
    if not path or path in builtins:
        return
    try:
        require_allowed(path, what, builtins=builtins)
        check_resolves(path, what)
    except UserFunctionError as exc:
        raise ConfigError(str(exc)) from None


def check_model_and_data(spec: Spec) -> Spec:
    """Any spec composed of `ModelFields` and `DataConfig` (training, evaluation, ...): paths made
    absolute, the model's config.json readable, every row of the dataset valid."""
    from finetune_mcp.data.loader import validate_dataset
    from finetune_mcp.jobs.vram import load_model_info

    updates: dict[str, str] = {}
    for name in ("model", "dataset"):
        path = Path(getattr(spec, name)).expanduser()
        if path.exists():
            updates[name] = str(path.resolve())
    spec = spec.model_copy(update=updates)
    load_model_info(spec.model)
    validate_dataset(spec.data)
    return spec
