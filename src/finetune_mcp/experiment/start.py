"""Start checks and placement for experiments (`start_experiment`), run in the server (no torch).

The same promise as a training job's `check_start`: an experiment that cannot work fails in a
second with the reason, before any worker exists — and an experiment has more ways to fail late
(an arm's settings, an empty held-out split), so they are checked here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from finetune_mcp.config import Settings
from finetune_mcp.errors import ConfigError, DatasetError
from finetune_mcp.experiment.spec import NO_RETAIN_ROWS, ExperimentSpec
from finetune_mcp.jobs.placement import Placement


def check_experiment_start(spec: ExperimentSpec, settings: Settings) -> ExperimentSpec:
    """`spec` with local paths made absolute, or the FinetuneError that says what to fix."""
    from finetune_mcp.config.entropy import BUILTIN_WEIGHT_FNS
    from finetune_mcp.data.loader import validate_dataset
    from finetune_mcp.train.preflight import check_start, check_user_function

    for arm in spec.arms:  # before anything else: a function the operator did not allow is never looked at
        check_user_function(arm.entropy.get("function"), f"arm {arm.name!r}: entropy weight function",
                            BUILTIN_WEIGHT_FNS)
    spec = check_start(spec, settings)  # model readable, every row of the dataset checked
    for name in ("eval_dataset", "retain_dataset"):
        value = getattr(spec, name)
        if value is not None and Path(value).expanduser().exists():
            spec = spec.model_copy(update={name: str(Path(value).expanduser().resolve())})
    with _named("eval_dataset" if spec.eval_dataset else None):
        heldout = validate_dataset(spec.heldout_config().data)
    rows = heldout.get("train_rows" if spec.eval_dataset else "validation_rows")
    if rows == 0:
        if spec.eval_dataset:
            raise DatasetError("holds no rows to score the runs on; give an eval_dataset with rows",
                               path=spec.eval_dataset)
        raise ConfigError("the validation split is empty, so there is nothing to score the runs on; set "
                          "validation_split (e.g. 0.1), use more examples, or give an eval_dataset",
                          field="validation_split")
    retain = spec.retain_config()
    if retain is None:
        return spec
    with _named("retain_dataset"):
        rows = validate_dataset(retain.data).get("train_rows")
    if rows == 0:  # None: a Hub id, counted in the worker
        raise DatasetError(NO_RETAIN_ROWS, path=spec.retain_dataset)
    return spec


@contextlib.contextmanager
def _named(field: str | None) -> Iterator[None]:
    """A data error of an experiment's own file, led by the field that names it (it reads like the training
    dataset's otherwise)."""
    try:
        yield
    except DatasetError as exc:
        if field is None:
            raise
        named = DatasetError(f"{field}: {exc}")
        named.path, named.line = exc.path, exc.line
        raise named from None


def place_experiment(spec: ExperimentSpec, target: str, settings: Settings) -> Placement:
    """Where the experiment's runs train. Serially (parallel=1): one worker on a local GPU that fits
    one run, else the CPU, the runs one after another sharing the loaded base model. In parallel, or
    on RunPod: a gathering worker whose placement lists the shares (`experiment.parallel`): one
    worker per free local GPU, CPU slot or RunPod pod, each keeping its model loaded for its runs."""
    from finetune_mcp.experiment.parallel import place_parallel
    from finetune_mcp.jobs.manager import queue_limits
    from finetune_mcp.jobs.router import place_job

    cpu_slots, remote_slots = queue_limits()
    spread = place_parallel(spec, target, settings, cpu_slots=cpu_slots, remote_slots=remote_slots)
    if spread is not None:
        return spread
    placement = place_job(spec.run_config(spec.arms[0], spec.seeds[0]), "local", settings)
    runs = len(spec.plan)
    return Placement(placement.backend, placement.device, placement.gpu_index,
                     f"experiment of {len(spec.arms)} arms × {len(spec.seeds)} seeds ({runs} runs, one after "
                     "another in one worker): " + placement.reason, placement.details)
