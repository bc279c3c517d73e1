"""`run_training(config, run_dir)`: one fine-tuning run, start to artifacts, in this process.

This is the `train` kind's worker body (local process, RunPod pod, CLI `train`, the demo). It
writes the run directory described in `runs/rundir.py` and nothing outside it. Order matters: the
backend is resolved first because Unsloth must be imported before transformers and TRL.

The method that turns loaded data and model into a finished run is the `train` hook of the
config's method (`train.methods.implementation`, from the registry in `config.methods`). Adding a
training method is a folder under `train/` plus one line in that registry; nothing here changes.
"""

from __future__ import annotations

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
    from finetune_mcp.train.model import LoadedModel

log = logging.getLogger("finetune_mcp.run")

# (config, backend) -> the model with LoRA attached; `train.model.load_model` unless a caller shares one
ModelLoader = Callable[[EnhancedTrainingConfig, str], "LoadedModel"]

def run_training(config: EnhancedTrainingConfig, run_dir: str | Path, *,
                 load_model: ModelLoader | None = None) -> dict[str, Any]:
    """Train, evaluate and save; returns the result (also written to result.json).

    On failure an `error` event is written (message + traceback) and the exception propagates.
    `load_model` replaces `train.model.load_model` for a caller that runs several trainings in one
    process on the same base model (an experiment loads it once and re-initialises LoRA per run).
    """
    with worker_session(RunDirectory(Path(run_dir)), config, "training") as run:
        method = implementation(config.method)  # before the load: a broken method fails in a second
        check_trackers(config)  # the CLI's run (no server start check) and a pod without the extra
        result = method.train(_load(config, run, load_model))
        leave_process_group()
        return result


def _load(config: EnhancedTrainingConfig, run: RunDirectory, load_model: ModelLoader | None) -> TrainingRun:
    """Data and model, in the order Unsloth needs (it patches transformers and TRL on import)."""
    from finetune_mcp.train.model import load_model as load_fresh
    from finetune_mcp.train.model import resolve_backend

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.time()
    backend = resolve_backend(config)
    if backend == "unsloth":
        import unsloth  # noqa: F401  (patches transformers/TRL; must precede their import)

    import datasets
    import transformers

    from finetune_mcp.data.loader import load_examples

    transformers.utils.logging.disable_progress_bar()  # progress is in events.jsonl; bars garble logs
    datasets.disable_progress_bars()

    data = load_examples(config.data)
    log.info("dataset %s (%s): %d train, %d validation examples", data.source, data.format,
             len(data.train), len(data.validation))
    loaded = (load_model or load_fresh)(config, backend)
    log.info("model %s loaded with backend=%s on %s", config.model, loaded.backend, loaded.device)
    return TrainingRun(config=config, run=run, loaded=loaded, data=data, started=started)
