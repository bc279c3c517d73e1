"""Start checks and placement for student–teacher jobs (`enhance_dataset`), run in the server.

The same promise as `preflight.check_start` for training: a job that cannot work fails in a
second with the reason, before any worker exists. No torch here: the student's config.json is read
by `jobs.vram`, the dataset by `data.loader` (every row, with its reference answer and regex),
and the teacher's key is checked to be bound to its endpoint (`enhance.keys`) and present in the
environment, never read out. The placement names the key variables the worker receives: workers
get an allow-listed environment (`jobs.worker_env`), and these names are the only additions.
"""

from __future__ import annotations

from pathlib import Path

from finetune_mcp.config import Settings
from finetune_mcp.enhance.config import LOCAL_PREFIX, ChatEndpoint, StudentTeacherConfig
from finetune_mcp.errors import ConfigError
from finetune_mcp.jobs.placement import Placement


def check_enhance_start(config: StudentTeacherConfig, settings: Settings) -> StudentTeacherConfig:
    """`config` with local paths made absolute (the worker runs in the run directory), or the
    FinetuneError that says what to fix."""
    from finetune_mcp.enhance.outputs import progress_file
    from finetune_mcp.enhance.teachers import check_endpoint_key
    from finetune_mcp.enhance.workflow import load_items
    from finetune_mcp.jobs.vram import load_model_info
    from finetune_mcp.train.preflight import check_user_function

    check_user_function(config.weight.function, "example weight function (weight.function)", ("quality_entropy",))
    updates: dict[str, object] = {}
    for name in ("model", "dataset", "resume_from"):
        value = getattr(config, name)
        if value and Path(value).expanduser().exists():
            updates[name] = str(Path(value).expanduser().resolve())
    for name in ("teacher", "judge"):
        endpoint: ChatEndpoint | None = getattr(config, name)
        if endpoint is not None and endpoint.is_local and Path(endpoint.local_model).expanduser().exists():
            local = LOCAL_PREFIX + str(Path(endpoint.local_model).expanduser().resolve())
            updates[name] = endpoint.model_copy(update={"model": local})
    config = config.model_copy(update=updates)
    load_model_info(config.model)
    for endpoint in (config.teacher, config.judge):
        if endpoint is not None:
            check_endpoint_key(endpoint)
            if endpoint.is_local:
                load_model_info(endpoint.local_model)
    if config.resume_from:
        config = config.model_copy(update={"resume_from": str(progress_file(Path(config.resume_from)))})
    load_items(config)  # reads and checks every row: formats, an assistant reply to check against, regexes
    return config


def place_enhance_job(config: StudentTeacherConfig, target: str, settings: Settings) -> Placement:
    """Where the student runs: a local GPU when one fits (sized like a training run of the same
    model, which is more than generation needs), else the CPU. Not on RunPod: the teacher endpoint
    and its key are this machine's."""
    from finetune_mcp.jobs.router import place_model

    if target == "runpod":
        raise ConfigError("student–teacher jobs run on this machine (a local GPU, or the CPU for small models); "
                          "use target='auto' or 'local'", field="target")
    placement = place_model(config.model, "local", settings, load_in_4bit=config.load_in_4bit,
                            max_seq_length=config.max_seq_length, batch_size=config.batch_size)
    keys = tuple(dict.fromkeys(e.api_key_env for e in (config.teacher, config.judge)
                               if e is not None and not e.is_local and e.api_key_env))
    return Placement(placement.backend, placement.device, placement.gpu_index,
                     "student–teacher enhancement: " + placement.reason, placement.details, env=keys)
