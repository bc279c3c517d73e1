"""Start checks and placement for sample jobs, run in the server (no torch).

The promise of every kind: a job that cannot work fails in a second with the fix, before any
worker exists, and leaves nothing behind. Checked here: each model is a model folder (config.json)
or a Hub id in reach, each adapter folder holds adapter_config.json, a GGUF entry is a GGUF file
with its training tokenizer beside and llama-cpp-python installed (the `export` extra), a conversation is not sent
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
    from finetune_mcp.model import read_gguf_header, resolve_gguf

    models = [_absolute(m) for m in spec.models]
    update: dict[str, object] = {}
    for index, entry in enumerate(models):
        if entry.is_gguf:
            _check_gguf(entry)
            continue
        if (entry.adapter or "").lower().endswith(".gguf"):
            raise ModelError(f"{entry.adapter}: a GGUF file is not a LoRA adapter; pass it as the model (imported "
                             "for transformers) or sample an export with sample_model(job_id=..., weights='gguf')")
        if entry.adapter is not None and not (Path(entry.adapter) / "adapter_config.json").is_file():
            raise ModelError(f"{entry.adapter} holds no adapter_config.json; point at a run's adapter/ folder")
        gguf = resolve_gguf(entry.model)  # a GGUF as a model: its header checked here, imported by the worker
        if gguf is not None:
            models[index] = entry = entry.model_copy(update={"model": str(gguf)})
            update.setdefault("gguf_source", read_gguf_header(gguf).source_record())
        load_model_info(entry.model)
    update.update(models=models, model=models[0].model)
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
    ggufs = [m for m in spec.models if m.is_gguf]
    on_cpu = (f"{'the GGUF runs' if len(ggufs) == 1 else 'GGUF files run'} on the CPU through llama.cpp "
              "(n_gpu_layers=0: the llama-cpp-python build of the export extra has no CUDA)")
    others = [m for m in spec.models if not m.is_gguf]
    if not others:
        return Placement("local", "cpu", None, "sampling: " + on_cpu, {"gguf": [m.model for m in ggufs]})
    base = next((m.model for m in others if m.weights in ("adapter", "base")), others[0].model)
    placement = place_model(base, "local", settings, load_in_4bit=spec.load_in_4bit,
                            max_seq_length=spec.max_seq_length, batch_size=spec.settings.batch_size)
    reason = "sampling: " + placement.reason + (f"; {on_cpu}" if ggufs else "")
    return Placement(placement.backend, placement.device, placement.gpu_index, reason, placement.details)


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


def _check_gguf(entry: SampledModel) -> None:
    """A GGUF entry: the file is a GGUF, llama-cpp-python is installed, the training tokenizer is there."""
    from finetune_mcp.export.llama import llama_cpp_missing

    path = Path(entry.model)
    if not path.is_file():
        raise ModelError(f"{entry.model}: no such GGUF file; export one with export_model(job_id=...)")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{entry.model} is not a GGUF file (no GGUF header); give an export_model output")
    missing = llama_cpp_missing()
    if missing is not None:
        raise ConfigError(f"sampling a GGUF needs llama.cpp: {missing}")
    if entry.tokenizer is None or not (Path(entry.tokenizer) / "tokenizer_config.json").is_file():
        raise ModelError(f"{entry.model}: no training tokenizer (tokenizer_config.json) in {entry.tokenizer}; the "
                         "prompts are rendered with it as in training. Sample the GGUF through its job "
                         "(sample_model(job_id=..., weights='gguf'))")


def _absolute(entry: SampledModel) -> SampledModel:
    update = {}
    for name in ("model", "adapter", "tokenizer"):
        value = getattr(entry, name)
        if value is not None and Path(value).expanduser().exists():
            update[name] = str(Path(value).expanduser().resolve())
    return entry.model_copy(update=update)


def _check_chat_template(entry: SampledModel) -> None:
    """A local tokenizer folder must carry a chat template for conversational prompts."""
    folder = Path(entry.tokenizer or entry.adapter or entry.model)
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
