"""Start checks and placement for sample jobs, run in the server (no torch).

The promise of every kind: a job that cannot work fails in a second with the fix, before any
worker exists, and leaves nothing behind. Checked here: each model is a model folder (config.json)
or a Hub id in reach, each adapter folder holds adapter_config.json, a conversation is not sent
to a local model without a chat template, and a local dataset yields prompts (its rows are read
now, so spec.json records exactly which prompts were asked; a Hub dataset is looked up here and
read by the worker).
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_mcp.config import Settings
from finetune_mcp.errors import ConfigError, ModelError
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.sample.spec import SampledModel, SampleSpec


def check_sample_start(spec: SampleSpec, settings: Settings) -> SampleSpec:
    """`spec` with local paths made absolute and local dataset rows turned into prompts, or the
    FinetuneError that says what to fix."""
    from finetune_mcp.jobs.vram import load_model_info

    models = [_absolute(m) for m in spec.models]
    for entry in models:
        if entry.model.lower().endswith(".gguf") or (entry.adapter or "").lower().endswith(".gguf"):
            raise ModelError(f"{entry.model}: sampling an exported GGUF file is not supported yet; sample the job's "
                             "adapter (weights='adapter') or its merged model (weights='merged') instead")
        if entry.adapter is not None and not (Path(entry.adapter) / "adapter_config.json").is_file():
            raise ModelError(f"{entry.adapter} holds no adapter_config.json; point at a run's adapter/ folder")
        load_model_info(entry.model)
    update: dict[str, object] = {"models": models, "model": models[0].model}
    rows = spec.rows
    if rows is not None:
        dataset = Path(rows.dataset).expanduser()
        if dataset.exists():
            rows = rows.model_copy(update={"dataset": str(dataset.resolve())})
            update.update(rows=rows, dataset=rows.dataset)
    spec = spec.model_copy(update=update)
    if spec.rows is not None and not spec.prompts:
        spec = _resolve_rows(spec)
    if any(p.messages is not None for p in spec.prompts):
        for entry in spec.models:
            _check_chat_template(entry)
    return spec


def place_sample_job(spec: SampleSpec, target: str, settings: Settings) -> Placement:
    """A local GPU when one fits, else the CPU; sized for the weights the job loads at its batch size
    (generous: the estimate is a training step's, which holds more than generation). Not on RunPod:
    the adapters and merged models are this machine's files."""
    from finetune_mcp.jobs.router import place_model

    if target == "runpod":
        raise ConfigError("sample jobs run on this machine (a local GPU, or the CPU for small models); use "
                          "target='auto' or 'local'", field="target")
    base = next((m.model for m in spec.models if m.weights in ("adapter", "base")), spec.models[0].model)
    placement = place_model(base, "local", settings, load_in_4bit=spec.load_in_4bit,
                            max_seq_length=spec.max_seq_length, batch_size=spec.settings.batch_size)
    return Placement(placement.backend, placement.device, placement.gpu_index, "sampling: " + placement.reason,
                     placement.details)


def _resolve_rows(spec: SampleSpec) -> SampleSpec:
    from finetune_mcp.data.loader import resolve_dataset_source

    assert spec.rows is not None
    source = resolve_dataset_source(spec.rows.dataset)
    if source.kind == "hub":
        from finetune_mcp.data.hub import check_hub

        check_hub(source.location, spec.rows.dataset_split)
        return spec  # the worker reads a hub dataset's rows
    from finetune_mcp.sample.prompts import row_prompts

    return spec.model_copy(update={"prompts": row_prompts(spec.rows)})


def _absolute(entry: SampledModel) -> SampledModel:
    update = {}
    for name in ("model", "adapter"):
        value = getattr(entry, name)
        if value is not None and Path(value).expanduser().exists():
            update[name] = str(Path(value).expanduser().resolve())
    return entry.model_copy(update=update)


def _check_chat_template(entry: SampledModel) -> None:
    """A local tokenizer folder must carry a chat template for conversational prompts."""
    folder = Path(entry.adapter or entry.model)
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return  # a Hub id, or a folder whose tokenizer lives elsewhere: the worker checks
    try:
        has_template = bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return
    if not has_template and not any((folder / name).is_file() for name in ("chat_template.jinja",
                                                                             "chat_template.json")):
        raise ModelError(f"{folder}: the tokenizer has no chat template, so conversational prompts cannot be "
                         "rendered as in training; use a chat/instruct model, or sample a job trained on "
                         "prompt/completion rows with its validation rows")
