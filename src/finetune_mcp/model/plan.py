"""How a model is loaded: backend, dtype, device and 4-bit, decided in one function (`plan_load`).

Why one function: every job that reads a run's model used to decide for itself, and they disagreed:
an evaluate job loaded transformers in bf16 while a sample job of the same run used Unsloth in 4 bits,
so the two jobs scored different models. Now each loader asks `plan_load` with the fields the job
copied from the run (`LOAD_FIELDS`), so jobs that read one run load it alike, and as training did.

Purposes:
  train       the base model training attaches LoRA to
  inference   sample, evaluate, the enhance student and a local teacher: the same choice as `train`
              (the model answers as it was trained), then switched to inference (`loading.load_model`)
  reference   transformers in float32 and never 4-bit, on the GPU when there is one: the export's
              verification reference (the unrounded weights the GGUF was written from)
  merge       transformers in float32 on the CPU + PEFT's merge (exact sums before the 16-bit save; no
              GPU memory taken from a job training beside it), or Unsloth's own merged save for a run
              Unsloth trained, when a GPU is here (a 4-bit base is dequantised there)

The rules of `train` / `inference`: Unsloth when asked, or (backend="auto") on CUDA with Unsloth
installed, else transformers; bfloat16 on a GPU that has it (float16 otherwise), float32 on the CPU;
the base in 4 bits when the run is QLoRA (a GPU is required). Light: torch is imported by the call.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, Protocol

from finetune_mcp.errors import ModelError

Purpose = Literal["train", "inference", "reference", "merge"]
Backend = Literal["unsloth", "hf"]

# The fields of a run's config that say how its model loads; an evaluate or sample job of the run copies them.
LOAD_FIELDS = ("backend", "load_in_4bit", "max_seq_length")


class LoadFields(Protocol):
    """What the choice reads: any spec with these fields (training, evaluate, sample, the enhance student)."""

    backend: str
    load_in_4bit: bool
    max_seq_length: int


@dataclass(frozen=True)
class LoadRequest:
    """`LoadFields` for a caller without a spec (a local teacher, an export's reference): their defaults."""

    backend: str = "auto"
    load_in_4bit: bool = False
    max_seq_length: int = 2048


@dataclass(frozen=True)
class LoadPlan:
    """How to load: what `loading.load_model` does with a source (a job records its backend and device)."""

    purpose: Purpose
    backend: Backend
    dtype: Literal["bfloat16", "float16", "float32"]
    device: Literal["cuda", "cpu"]
    load_in_4bit: bool
    max_seq_length: int

    @property
    def trainable(self) -> bool:
        return self.purpose == "train"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    """Whether Unsloth can be imported, found without importing it (its import patches transformers)."""
    return importlib.util.find_spec("unsloth") is not None


def resolve_backend(choice: LoadFields) -> Backend:
    """unsloth when asked or (auto) when CUDA is there and Unsloth is installed; hf otherwise. Training
    calls it before importing anything heavy: Unsloth must be imported before transformers and TRL."""
    cuda = cuda_available()
    if choice.load_in_4bit and not cuda:
        raise ModelError(
            "load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
            "Set load_in_4bit=false to load in 16/32 bits here, or use target='runpod'."
        )
    if choice.backend == "hf":
        return "hf"
    has_unsloth = unsloth_installed()
    if choice.backend == "unsloth":
        if not cuda:
            raise ModelError("backend='unsloth' needs a CUDA GPU; use backend='hf' (or 'auto') on this machine")
        if not has_unsloth:
            raise ModelError("backend='unsloth' but Unsloth is not installed: pip install 'finetune-mcp[unsloth]'")
        return "unsloth"
    return "unsloth" if cuda and has_unsloth else "hf"


def plan_load(choice: LoadFields, purpose: Purpose = "inference") -> LoadPlan:
    """The plan for `choice` (a spec's `LOAD_FIELDS`) and `purpose` (see the module docstring)."""
    cuda = cuda_available()
    device: Literal["cuda", "cpu"] = "cuda" if cuda else "cpu"
    if purpose == "reference":
        return LoadPlan(purpose, "hf", "float32", device, False, choice.max_seq_length)
    if purpose == "merge":
        unsloth = choice.backend == "unsloth" and cuda and unsloth_installed()
        if not unsloth:
            return LoadPlan(purpose, "hf", "float32", "cpu", False, choice.max_seq_length)
        return LoadPlan(purpose, "unsloth", _gpu_dtype(), device, choice.load_in_4bit, choice.max_seq_length)
    backend = resolve_backend(choice)
    return LoadPlan(purpose, backend, _gpu_dtype() if cuda else "float32", device, choice.load_in_4bit,
                    choice.max_seq_length)


def _gpu_dtype() -> Literal["bfloat16", "float16"]:
    """What Unsloth's dtype=None picks too: bfloat16 where the GPU has it (Ampere and later)."""
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
