"""Load a causal LM and its tokenizer as a `plan.LoadPlan` says: the one place that loads a model to run.

Training (which attaches LoRA next, `train.model`), sample, evaluate, the enhance student and a local
teacher, the export's verification reference, the merge for deploy and export, the demo: all call
`load_model`, so a model is loaded by one code path whatever reads it. (`convert` reads a GGUF file
with transformers too, to write a folder; that folder is then loaded here like any other.)

- `source`: a Hub id, a Hugging Face folder (a base or a merged model), or a GGUF file (or a folder
  holding one), imported once into the cache (`imports.hf_folder`) and loaded from there.
- `adapters`: LoRA folders attached under the names given (PEFT), e.g. a sample job's adapters on
  their shared base; the base answers with them disabled (`disable_adapter`).
- `tokenizer`: a folder whose saved tokenizer is used instead of the model's, when it holds one
  (training saves its own, chat template included, beside the adapter).
- Every purpose but training ends in eval mode (an inference load on Unsloth also in `for_inference`,
  its fast generation path); a training load is left as loaded, for LoRA and the trainer. Every
  tokenizer gets a pad token (its EOS when it has none): batched generation and training pad.

Heavy imports (torch, transformers, PEFT, Unsloth) happen inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ModelError
from finetune_mcp.model.plan import LoadPlan


@dataclass
class LoadedModel:
    """A model in memory and how it was loaded."""

    model: Any  # a causal LM; a PEFT model once adapters (or training's LoRA) are attached
    tokenizer: Any
    backend: str  # "unsloth" | "hf"
    device: str  # "cpu" or the GPU's name


def load_model(source: str, plan: LoadPlan, *, adapters: Mapping[str, str] | None = None,
               tokenizer: str | None = None, home: Path | None = None) -> LoadedModel:
    """`source` loaded as `plan` says, with `adapters` (name -> folder) attached; `home` is where GGUF
    imports are cached ($FINETUNE_MCP_HOME when not given). See the module docstring."""
    source = _hf_source(source, home)
    check_reachable(source)
    adapters = dict(adapters or {})
    try:
        if plan.backend == "unsloth" and plan.purpose == "merge":
            model, loaded_tokenizer = _load_unsloth_adapter(adapters, plan)
        else:
            model, loaded_tokenizer = (_load_unsloth if plan.backend == "unsloth" else _load_hf)(source, plan)
            model = _attach(model, adapters)
    except OSError as exc:  # transformers reports a missing or unreachable checkpoint as OSError
        raise ModelError(f"could not load model {source!r}: {exc}. Give a local model folder, or a hub id that is "
                         "in the local Hugging Face cache or reachable (check the name and your network / "
                         "HF_TOKEN).") from exc
    ensure_pad_token(loaded_tokenizer)
    saved = adapter_tokenizer(tokenizer) if tokenizer is not None else None
    if not plan.trainable:
        if plan.backend == "unsloth" and plan.purpose == "inference":
            from unsloth import FastLanguageModel

            FastLanguageModel.for_inference(model)
        model.eval()
    return LoadedModel(model, saved or loaded_tokenizer, plan.backend, _device_name(plan))


def load_tokenizer(folder: str) -> Any:
    """The tokenizer alone (pad token defaulted to its EOS): the dry run reads the chat template and the
    loss mask through it, the export reads the training tokenizer's special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_pad_token(tokenizer)
    return tokenizer


def adapter_tokenizer(folder: str | None) -> Any | None:
    """The tokenizer saved in `folder` (training saves its own beside the adapter), None when it has none."""
    if folder is None or not (Path(folder) / "tokenizer_config.json").is_file():
        return None
    return load_tokenizer(folder)


def check_reachable(name: str) -> None:
    """Fail early with a plain message when a model is neither a local folder nor cached/reachable."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; point `model` at a Hugging Face model folder")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model {name!r} is not an existing folder; give a local model folder or a hub id "
                         "'owner/name'")


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _hf_source(source: str, home: Path | None) -> str:
    from finetune_mcp.model.source import resolve_gguf

    if resolve_gguf(source) is None:
        return source
    from finetune_mcp.config import Settings
    from finetune_mcp.model.imports import hf_folder

    return hf_folder(source, home if home is not None else Settings.from_env().home)


def _load_hf(source: str, plan: LoadPlan) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, plan.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if plan.device == "cuda":
        kwargs["device_map"] = {"": 0}
        if plan.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True)
    tokenizer = load_tokenizer(source)
    return AutoModelForCausalLM.from_pretrained(source, **kwargs), tokenizer


def _load_unsloth(name: str, plan: LoadPlan) -> tuple[Any, Any]:
    import torch
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(model_name=name, max_seq_length=plan.max_seq_length,
                                             load_in_4bit=plan.load_in_4bit, dtype=getattr(torch, plan.dtype))


def _load_unsloth_adapter(adapters: dict[str, str], plan: LoadPlan) -> tuple[Any, Any]:
    """A merge's load through Unsloth: Unsloth loads the adapter folder itself (its base from
    adapter_config.json), because its merged save (`save_pretrained_merged`) exists only on a model it
    loaded with the adapter."""
    if len(adapters) != 1:
        raise ModelError(f"a merge takes exactly one adapter, not {len(adapters)}")
    [folder] = adapters.values()
    return _load_unsloth(folder, plan)


def _attach(model: Any, adapters: dict[str, str]) -> Any:
    """`model` with each adapter attached under its name, not trainable; the first one is active."""
    for index, (name, folder) in enumerate(adapters.items()):
        if index == 0:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder, adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(folder, adapter_name=name, is_trainable=False)
    return model


def _device_name(plan: LoadPlan) -> str:
    import torch

    return torch.cuda.get_device_name(0) if plan.device == "cuda" else "cpu"
