"""`run_training(config, run_dir)`: one fine-tuning run, start to artifacts, in this process.

This is the `train` kind's worker body (local process, RunPod pod, CLI `train`, the demo). It
writes the run directory described in `runs/rundir.py` and nothing outside it. Order matters: the
backend is resolved first because Unsloth must be imported before transformers and TRL.

The method that turns loaded data and model into a finished run is the `train` hook of the
config's method (`train.methods.implementation`, from the registry in `config.methods`). Adding a
training method is a folder under `train/` plus one line in that registry; nothing here changes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import worker_session
from finetune_mcp.train.loop import TrainingRun, leave_process_group
from finetune_mcp.train.methods import implementation
from finetune_mcp.train.preflight import check_trackers

if TYPE_CHECKING:
    from finetune_mcp.model.loading import LoadedModel
    from finetune_mcp.train.step_plan import StepPlan

log = logging.getLogger("finetune_mcp.run")

# (config, backend) -> the model with LoRA attached; `train.model.load_with_lora` unless a caller shares one
ModelLoader = Callable[[EnhancedTrainingConfig, str], "LoadedModel"]

def run_training(config: EnhancedTrainingConfig, run_dir: str | Path, *,
                 load_model: ModelLoader | None = None, evaluate: bool = True) -> dict[str, Any]:
    """Train, evaluate and save; returns the result (also written to result.json).

    On failure an `error` event is written (message + traceback) and the exception propagates.
    `load_model` replaces `train.model.load_with_lora` for a caller that runs several trainings in one
    process on the same base model (an experiment loads it once and re-initialises LoRA per run).
    `evaluate=False` leaves the validation split out of the run (it still trains on exactly the same
    rows): an experiment scores every run on its held-out rows itself, and the Trainer's evaluation of
    them on top cost most of a short run (SmolLM2, 2,160 training rows: 146 of 168 s on the CPU).
    """
    with worker_session(RunDirectory(Path(run_dir)), config, "training") as run:
        method = implementation(config.method)  # before the load: a broken method fails in a second
        check_trackers(config)  # the CLI's run (no server start check) and a pod without the extra
        result = method.train(_load(config, run, load_model, evaluate))
        leave_process_group()
        return result


def _load(config: EnhancedTrainingConfig, run: RunDirectory, load_model: ModelLoader | None,
          evaluate: bool) -> TrainingRun:
    """Data and model, in the order Unsloth needs (it patches transformers and TRL on import)."""
    from finetune_mcp.model.plan import resolve_backend
    from finetune_mcp.train.model import load_with_lora

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.time()
    backend = resolve_backend(config)
    backend, switched = _auto_backend(config, backend)
    if backend == "unsloth":
        import unsloth  # noqa: F401  (patches transformers/TRL; must precede their import)

    import datasets
    import transformers

    from finetune_mcp.data.loader import load_examples

    transformers.utils.logging.disable_progress_bar()  # progress is in events.jsonl; bars garble logs
    datasets.disable_progress_bars()

    plan = _plan(config, backend)
    if switched:
        plan.reasons.insert(0, switched)
    config = config.model_copy(update={"gradient_checkpointing": plan.gradient_checkpointing})
    data = load_examples(config.data)
    log.info("dataset %s (%s): %d train, %d validation examples", data.source, data.format,
             len(data.train), len(data.validation))
    if not evaluate and data.validation:
        log.info("the validation split is not evaluated in this run: the experiment scores it on its held-out rows")
        data = dataclasses.replace(data, validation=[])
    loaded = (load_model or load_with_lora)(config, backend)
    freeze_heap()
    log.info("model %s loaded with backend=%s on %s", config.model, loaded.backend, loaded.device)
    return TrainingRun(config=config, run=run, loaded=loaded, data=data, started=started, plan=plan)


def _auto_backend(config: EnhancedTrainingConfig, backend: str) -> tuple[str, str | None]:
    """`train.step_plan.auto_backend`, given this machine's GPU; logs the switch."""
    if backend != "unsloth":
        return backend, None
    import torch

    from finetune_mcp.train.step_plan import auto_backend

    backend, why = auto_backend(config, backend, torch.cuda.get_device_name(0))
    if why:
        log.info("step plan: %s", why)
    return backend, why


def freeze_heap() -> None:
    """Move every object alive now (the imported libraries, the loaded model) out of the cyclic garbage
    collector's view (`gc.freeze`).

    Why: the Trainer, accelerate and Unsloth call `gc.collect()` at run boundaries (Unsloth a dozen
    times a run); with torch, transformers and a model loaded each call walked millions of objects:
    0.65 s a call on the GPU machine, 0.9 s here, most of an experiment run's overhead. Frozen objects
    are still freed by reference counting; cycles among them only after `gc.unfreeze()`, which
    whoever drops a loaded model calls (`experiment.shared_model.SharedBaseModel.release`).
    """
    import gc

    gc.collect()
    gc.freeze()
    _unfreeze_at_exit()


@functools.cache
def _unfreeze_at_exit() -> None:
    """At exit, hand the frozen objects back, so extension modules' leak checks (triton's nanobind) see a
    clean heap. Registered once per process, however many runs an experiment makes."""
    import atexit
    import gc

    atexit.register(gc.unfreeze)


def _plan(config: EnhancedTrainingConfig, backend: str) -> StepPlan:
    """The run's step plan (`train.step_plan`), logged with its reasons."""
    import torch

    from finetune_mcp.train.step_plan import log_plan, plan_step

    cuda = torch.cuda.is_available()
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
    plan = plan_step(config, backend, cuda=cuda, device_memory_gb=memory,
                     num_processes=int(os.environ.get("WORLD_SIZE", "1")),
                     device_name=torch.cuda.get_device_name(0) if cuda else None)
    log_plan(plan)
    return plan
