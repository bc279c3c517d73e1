"""`run_export(spec, run_dir)`: the `export` job's worker body, from a training run to a checked GGUF.

Steps (each a `progress` event): merge the adapter (the merged 16-bit save deploy makes, reused when
there), lay out the converter's input (the merged weights + the *training* tokenizer's files),
convert (and quantise), check the metadata, write the Modelfile, verify against transformers.

Everything is written into a staging folder beside the destination and moved into
`<source run>/export/` only when verification passed: a failed or killed export leaves the run's
export/ as it was. Exports of one run take turns (a lock file in the run), since they share its
merged/ folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.errors import ExportError
from finetune_mcp.export.convert import convert_checkpoint, quantize_file, require_tools
from finetune_mcp.export.metadata import TrainingTokenizer, check_gguf_metadata
from finetune_mcp.export.modelfile import NotRoleWrapped, constant_system_prompt, measure_turn_format, modelfile_text
from finetune_mcp.export.quantization import parse_quantization
from finetune_mcp.export.spec import ExportSpec, base_model_name
from finetune_mcp.export.verify import verify_gguf
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session

log = logging.getLogger("finetune_mcp.export")

STAGES = ("merge", "convert", "modelfile", "verify", "publish")
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")
_NOT_TOKENIZER = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md")


def run_export(spec: ExportSpec, run_dir: str | Path) -> dict[str, Any]:
    """Export, verify, publish into the source run's export/; writes result.json and returns it."""
    with worker_session(RunDirectory(Path(run_dir)), spec, "export") as run:
        return _export(spec, run)


def _export(spec: ExportSpec, run: RunDirectory) -> dict[str, Any]:
    from finetune_mcp.data.loader import load_examples
    from finetune_mcp.report.deploy import merge_in_subprocess

    started, timings = time.time(), {}
    tools = require_tools()
    quantization = parse_quantization(spec.quantization)
    source = RunDirectory(Path(spec.source_run_dir))
    adapter = RunArtifacts(source, spec.source_job).adapter(spec.checkpoint)
    config = EnhancedTrainingConfig.from_file(source.spec)
    stem = spec.file_stem(base_model_name(config.model_dump()))
    destination = source.export
    staging = source.root / f".export-{run.root.name}"
    shutil.rmtree(staging, ignore_errors=True)

    def stage(name: str) -> None:
        timings[name] = time.time()
        run.write_event("progress", step=STAGES.index(name), total_steps=len(STAGES), stage=name)
        log.info("export %s: %s", stem, name)

    try:
        with _run_lock(source):
            stage("merge")
            merged = merge_in_subprocess(source, spec.checkpoint)
            stage("convert")
            checkpoint = _converter_input(merged, adapter, staging / "checkpoint")
            tokenizer = TrainingTokenizer.load(adapter)
            tokenizer.write_bos_eos_flags(checkpoint)
            gguf_file = staging / f"{stem}.gguf"
            sixteen = _sixteen_bit(merged)
            if quantization.is_float:
                decided = convert_checkpoint(checkpoint, gguf_file, quantization.name, model_name=stem)
            else:
                intermediate = staging / f"{stem}.{sixteen}.gguf"
                decided = convert_checkpoint(checkpoint, intermediate, sixteen, model_name=stem)
                quantize_file(intermediate, gguf_file, quantization)
                intermediate.unlink()
            metadata = check_gguf_metadata(gguf_file, tokenizer)
            stage("modelfile")
            data = load_examples(config)
            modelfile = staging / f"{stem}.Modelfile"
            template = _write_modelfile(modelfile, gguf_file.name, tokenizer, merged,
                                        constant_system_prompt(data.train + data.validation))
            stage("verify")
            rows = (data.validation or data.train)[: spec.verify_prompts]
            verification = verify_gguf(gguf_file, merged, adapter, rows, quantization,
                                       max_seq_length=config.max_seq_length,
                                       assistant_only_loss=config.assistant_only_loss,
                                       max_new_tokens=spec.max_new_tokens)
            figures = {**verification.figures, "rows_from": "validation" if data.validation else "train"}
            log.info("verification of %s: %s", gguf_file.name, json.dumps(figures))
            if not verification.passed:
                raise ExportError(f"the {quantization.name} GGUF disagrees with the merged model, so it was not kept: "
                                  f"{'; '.join(verification.failures)}. Figures: {json.dumps(figures)}. "
                                  "Check the job's log; if the tokenizer differs, the base model's tokenizer is "
                                  "one llama.cpp cannot reproduce")
            stage("publish")
            files = _publish(staging, destination, [gguf_file, modelfile])
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    result = {
        "status": "succeeded",
        "kind": "export",
        "source_job": spec.source_job,
        "checkpoint": spec.checkpoint,
        "format": "gguf",
        "quantization": quantization.name,
        "gguf": str(files[0]),
        "modelfile": str(files[1]),
        "size_bytes": files[0].stat().st_size,
        "converted_from": sixteen if not quantization.is_float else "merged checkpoint",
        "architecture": decided["architecture"],
        "pre_tokenizer": {"name": metadata["pre_tokenizer"], "from": decided["pre_tokenizer_from"]},
        "metadata": metadata,
        "ollama_template": template,
        "verification": figures,
        "examples": verification.examples,
        "commands": usage_commands(files[0], files[1]),
        "stage_seconds": _durations(timings, time.time()),
        "runtime_s": round(time.time() - started, 2),
        "versions": {**library_versions(), **tools},
    }
    _record(source, result)
    run.write_json(run.result, result)
    run.write_event("progress", step=len(STAGES), total_steps=len(STAGES), stage="done")
    run.write_event("eval", step=len(STAGES), metrics=_metrics(figures), phase="export")  # get_job's metrics
    run.write_event("end", status="succeeded", metrics=_metrics(figures))
    return result


def result_view(job: Any) -> dict[str, Any] | None:
    """What get_job / wait_for_job show of a succeeded export: the files, the figures, the commands."""
    try:
        result = json.loads((Path(job.run_dir) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a view must never break get_job
        return None
    keys = ("quantization", "gguf", "modelfile", "size_bytes", "pre_tokenizer", "ollama_template", "verification",
            "examples", "commands")
    return {k: result.get(k) for k in keys}


def usage_commands(gguf_file: Path, modelfile: Path) -> dict[str, str]:
    """How to run the file: Ollama, llama.cpp's CLI and server, LM Studio's CLI."""
    name = gguf_file.stem.lower()
    return {
        "ollama": f"cd {gguf_file.parent} && ollama create {name} -f {modelfile.name} && ollama run {name}",
        "llama_cli": f"llama-cli -m {gguf_file} --jinja",
        "llama_server": f"llama-server -m {gguf_file} --jinja --port 8080",
        "lm_studio": f"lms import {gguf_file}",
    }


def _metrics(figures: dict[str, Any]) -> dict[str, float]:
    """The verification figures that get_job shows as metrics."""
    keys = ("greedy_token_agreement", "top1_agreement", "top1_agreement_clear", "max_abs_logit_diff",
            "perplexity_delta")
    return {f"export/{k}": figures[k] for k in keys if isinstance(figures.get(k), int | float)}


def _converter_input(merged: Path, adapter: Path, folder: Path) -> Path:
    """merged/'s weights and config (linked, not copied) with the training tokenizer's files."""
    folder.mkdir(parents=True)
    for path in merged.iterdir():
        if path.name.endswith(_WEIGHT_SUFFIXES):
            (folder / path.name).symlink_to(path.resolve())
        elif path.name in ("config.json", "generation_config.json"):
            shutil.copy2(path, folder / path.name)
    for path in adapter.iterdir():
        if path.is_file() and path.name not in _NOT_TOKENIZER:
            shutil.copy2(path, folder / path.name)
    return folder


def _sixteen_bit(merged: Path) -> str:
    """bf16 for a bf16 checkpoint (exact), else f16: the file the quantiser starts from."""
    dtype = json.loads((merged / "config.json").read_text()).get("dtype") or ""
    return "bf16" if "bfloat16" in str(dtype) else "f16"


def _write_modelfile(path: Path, gguf_name: str, tokenizer: TrainingTokenizer, merged: Path,
                     system: str | None) -> str:
    """Write the Modelfile; returns "measured" (a TEMPLATE was written) or why not."""
    try:
        turns = measure_turn_format(tokenizer.render, tokenizer.bos_token if tokenizer.add_bos else None)
        how = "measured"
    except NotRoleWrapped as exc:
        turns, how = None, f"none ({exc}); Ollama reads the GGUF's chat template"
        log.info("no Ollama TEMPLATE: %s", exc)
    stops = [*(turns.stop_strings() if turns else []), *tokenizer.stop_tokens(merged)]
    path.write_text(modelfile_text(gguf_name, turns=turns, stops=stops, system=system), encoding="utf-8")
    return how


def _publish(staging: Path, destination: Path, files: list[Path]) -> list[Path]:
    """Move the checked files into destination/ (same file system: each move is one rename)."""
    destination.mkdir(exist_ok=True)
    moved = []
    for path in files:
        target = destination / path.name
        os.replace(path, target)
        moved.append(target)
    return moved


def _record(source: RunDirectory, result: dict[str, Any]) -> None:
    """Add to export/exports.json (replacing an older export of the same file): the card's "Use with
    llama.cpp / Ollama" section and deploy_to_hf(include_gguf=True) read it."""
    keep = [e for e in source.read_exports() if e.get("gguf") != result["gguf"]]
    entry = {k: result[k] for k in ("quantization", "checkpoint", "gguf", "modelfile", "size_bytes", "verification",
                                    "commands")}
    source.write_json(source.exports_record, [*keep, {**entry, "time": time.time()}])


@contextmanager
def _run_lock(source: RunDirectory) -> Iterator[None]:
    with open(source.root / ".export.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _durations(marks: dict[str, float], end: float) -> dict[str, float]:
    names = list(marks)
    return {name: round((marks[names[i + 1]] if i + 1 < len(names) else end) - marks[name], 2)
            for i, name in enumerate(names)}
