"""Checks at `start_finetune`: fail in a second with the reason, not minutes later in the worker.

Runs in the server process, so it imports no torch: the model check reads config.json (local
folder, Hugging Face cache, or the Hub under a deadline, via `jobs.vram`), the dataset check is the
`data.loader.validate_dataset` (reads local files in full, looks hub ids up). Local paths are
made absolute here because the worker runs in the run directory, not in the server's folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from finetune_mcp.config import DataConfig, Settings, TrainingConfig
from finetune_mcp.config.entropy import BUILTIN_WEIGHT_FNS
from finetune_mcp.config.tracking import SINKS, TrackingConfig
from finetune_mcp.errors import ConfigError
from finetune_mcp.runs.artifacts import RunArtifacts, parse_checkpoint_ref
from finetune_mcp.user_functions import UserFunctionError, check_resolves, require_allowed

Spec = TypeVar("Spec", bound=DataConfig)


def check_start(config: TrainingConfig, settings: Settings) -> TrainingConfig:
    """The `train` kind's start check: `config` with local model/dataset paths made absolute, or
    the FinetuneError that says what to fix (ModelError, DatasetError). `settings` is for checks
    that need secrets (HF_TOKEN reaches the Hub client through the environment). The method's own
    start check (`train.methods.check_method_start`: GRPO calls its rewards) runs last, on checked
    data; its warnings are kept in `start_warnings`, which the start tools return."""
    from finetune_mcp.train.methods import check_method_start

    check_user_function(config.entropy.function, "entropy weight function", BUILTIN_WEIGHT_FNS)
    for function, what, builtins in getattr(config.method_settings, "user_functions", list)():
        check_user_function(function, what, builtins)
    check_trackers(config)
    if config.resume_from_checkpoint:
        config = config.model_copy(update={"resume_from_checkpoint": check_checkpoint(config.resume_from_checkpoint)})
    config = check_model_and_data(config)
    warnings = check_method_start(config)
    return config.model_copy(update={"start_warnings": warnings}) if warnings else config


# What transformers' Trainer saves in each checkpoint-N folder: its state, and the weights (a PEFT
# adapter for LoRA runs, the full model otherwise).
CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", "adapter_model.bin", "adapter_config.json",
                    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def resolve_checkpoint_ref(config: TrainingConfig, run_dir_of: Callable[[str], Path]) -> TrainingConfig:
    """`resume_from_checkpoint='<job_id>:<step>'` (or ':latest', or the bare id) made the path of that
    job's checkpoint folder, so the roots check and `check_checkpoint` see a path like any other.
    `run_dir_of(job_id)` is the job store's answer (a JobError for an unknown id)."""
    value = config.resume_from_checkpoint
    ref = parse_checkpoint_ref(value) if isinstance(value, str) else None
    if ref is None:
        return config
    job_id, step = ref
    checkpoint = RunArtifacts(run_dir_of(job_id), job_id).checkpoint(step)
    return config.model_copy(update={"resume_from_checkpoint": str(checkpoint.path)})


def check_checkpoint(value: str | bool) -> str:
    """`resume_from_checkpoint` as an absolute path to a checkpoint folder, or a ConfigError that
    says what to pass. `true` (resume from the run's own latest checkpoint) cannot work for a new
    job, whose run directory starts empty."""
    field = "resume_from_checkpoint"
    if value is True:
        raise ConfigError("true resumes from the run directory's own checkpoints, and a new job's run directory "
                          "starts empty; pass an earlier job's checkpoint as '<job_id>:<step>' (or "
                          "'<job_id>:latest'; get_job lists them), or the path of a checkpoint folder", field=field)
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise ConfigError(f"{str(value)!r} {problem}; pass a checkpoint folder of an earlier run "
                          "(<run>/checkpoints/checkpoint-<step>)", field=field)
    path = path.resolve()
    if any((path / name).is_file() for name in CHECKPOINT_FILES):
        return str(path)
    found = sorted((p for p in path.glob("checkpoints/checkpoint-*") if p.is_dir()),
                   key=lambda p: int(p.name.rpartition("-")[2]) if p.name.rpartition("-")[2].isdigit() else -1)
    found = found or sorted((p for p in path.glob("checkpoint-*") if p.is_dir()), key=lambda p: p.name)
    hint = (f"; this looks like a run: pass one of its checkpoints, e.g. {found[-1]}" if found
            else "; pass a checkpoint folder of an earlier run (<run>/checkpoints/checkpoint-<step>)")
    raise ConfigError(f"{str(path)!r} is not a training checkpoint (no trainer_state.json or adapter files in it)"
                      + hint, field=field)


def check_trackers(config: TrackingConfig) -> None:
    """Every tracker in `report_to` imports here (the worker uses this Python), or a ConfigError that
    names the extra to install: a job that would fail at its first step is never started. A Space for
    Trackio needs HF_TOKEN."""
    from importlib.util import find_spec

    missing = [SINKS[name] for name in config.trackers if find_spec(SINKS[name].module) is None]
    if missing:
        extras = ",".join(sink.extra for sink in missing)
        raise ConfigError(f"report_to asks for {', '.join(s.name for s in missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed here; install "
                          f"pip install 'finetune-mcp[{extras}]' and restart the server, or leave "
                          f"{'it' if len(missing) == 1 else 'them'} out of report_to", field="report_to")
    if config.trackio_space_id and "trackio" not in config.trackers:
        raise ConfigError("trackio_space_id is set but report_to has no 'trackio'; add it, or drop the Space",
                          field="trackio_space_id")


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
    absolute, the model's config.json readable (a GGUF file's header: `gguf_source` records it), every
    row of the dataset valid."""
    from finetune_mcp.data.loader import check_dataset
    from finetune_mcp.jobs.vram import load_model_info
    from finetune_mcp.model import read_gguf_header, resolve_gguf

    updates: dict[str, Any] = {}
    for name in ("model", "dataset"):
        path = Path(getattr(spec, name)).expanduser()
        if path.exists():
            updates[name] = str(path.resolve())
    gguf = resolve_gguf(spec.model)  # a GGUF file: checked from its header here, imported by the worker
    if gguf is not None:
        updates.update(model=str(gguf), gguf_source=read_gguf_header(gguf).source_record())
    spec = spec.model_copy(update=updates)
    load_model_info(spec.model)
    _, identities = check_dataset(spec.data)
    # the worker reads exactly the files checked here, or refuses (`data.loader.read_checked`)
    return spec.model_copy(update={"dataset_files": identities or None})
