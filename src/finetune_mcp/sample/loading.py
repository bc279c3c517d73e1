"""Load the models of a sample job, sharing base weights: a tuned adapter and its base load once.

Models are grouped by the weights they stand on (`SampledModel.model`): a job's adapter, another
job's adapter on the same base and the base itself form one group; the base is loaded once, each
adapter is attached under its own name, and the base answers with the adapters disabled (PEFT's
`disable_adapter`, which Unsloth's fast inference honours). A merged model or any other folder is
a group of its own, and so is an exported GGUF file (opened by llama.cpp, see `sample.gguf`).

Loading as training did: Unsloth on CUDA when installed (`FastLanguageModel.from_pretrained` +
`for_inference`, its fast generation path), else transformers in bf16 on a GPU, fp32 on the CPU;
a QLoRA job's base in 4 bits. The tokenizer is the one saved beside the adapter (training's own,
chat template included), else the model folder's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from finetune_mcp.errors import ModelError
from finetune_mcp.sample.spec import SampledModel, SampleSpec

log = logging.getLogger("finetune_mcp.sample")


@dataclass
class ModelGroup:
    """Entries that stand on the same weights (`path`)."""

    path: str
    entries: list[SampledModel]


@dataclass
class LoadedGroup:
    """One group in memory: `model` is a PEFT model when the group has adapters."""

    model: Any
    tokenizers: dict[str, Any]
    adapter_names: dict[str, str]
    backend: str
    device: str
    load_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def active(self, entry: SampledModel) -> Iterator[Any]:
        """The model as `entry` sees it: its adapter active, or (for the base) every adapter off."""
        if entry.label in self.adapter_names:
            self.model.set_adapter(self.adapter_names[entry.label])
            yield self.model
        elif self.adapter_names:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model


def group_models(models: list[SampledModel]) -> list[ModelGroup]:
    """Entries grouped by the weights they stand on, in the order of their first entry."""
    groups: dict[str, ModelGroup] = {}
    for entry in models:
        groups.setdefault(entry.model, ModelGroup(entry.model, [])).entries.append(entry)
    return list(groups.values())


def load_group(group: ModelGroup, spec: SampleSpec, backend: str) -> LoadedGroup:
    """The group's base (Unsloth or transformers) with its adapters attached, in inference mode."""
    if group.entries[0].is_gguf:
        return _load_gguf_group(group, spec)
    from finetune_mcp.train.model import _check_model_reachable

    started = time.time()
    _check_model_reachable(group.path)
    try:
        model, tokenizer, device = (_load_unsloth if backend == "unsloth" else _load_hf)(group.path, spec)
    except OSError as exc:  # transformers reports a missing or unreadable checkpoint as OSError
        raise ModelError(f"could not load {group.path!r}: {exc}; check the model folder or Hub id") from exc
    names: dict[str, str] = {}
    tokenizers: dict[str, Any] = {}
    for index, entry in enumerate(group.entries):
        tokenizers[entry.label] = _tokenizer_for(entry, tokenizer)
        if entry.adapter is None:
            continue
        name = f"adapter_{index}"  # PEFT names become module keys: no ':' or '.'
        if not names:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, entry.adapter, adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(entry.adapter, adapter_name=name, is_trainable=False)
        names[entry.label] = name
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    load_s = time.time() - started
    log.info("loaded %s%s with backend=%s on %s in %.1fs", group.path,
             f" + {len(names)} adapter(s)" if names else "", backend, device, load_s)
    return LoadedGroup(model, tokenizers, names, backend, device, load_s)


def _load_gguf_group(group: ModelGroup, spec: SampleSpec) -> LoadedGroup:
    """An exported GGUF opened by llama.cpp on the CPU (context: max_seq_length + max_new_tokens), with
    the training tokenizer that renders its prompts."""
    from transformers import AutoTokenizer

    from finetune_mcp.sample.gguf import CONTEXT_MARGIN, load_gguf
    from finetune_mcp.train.model import _ensure_pad_token

    started = time.time()
    entry = group.entries[0]
    if entry.tokenizer is None:
        raise ModelError(f"{entry.model}: no tokenizer folder to render the prompts with; sample the GGUF through "
                         "its job (sample_model(job_id=..., weights='gguf'))")
    tokenizer = AutoTokenizer.from_pretrained(entry.tokenizer)
    _ensure_pad_token(tokenizer)
    llm = load_gguf(entry.model, spec.max_seq_length + spec.settings.max_new_tokens + CONTEXT_MARGIN)
    load_s = time.time() - started
    log.info("loaded %s with llama.cpp on the CPU in %.1fs", entry.model, load_s)
    return LoadedGroup(llm, {e.label: tokenizer for e in group.entries}, {}, "llama.cpp", "cpu", load_s,
                       {"gguf": entry.model})


def free(loaded: LoadedGroup) -> None:
    """Release a group's memory before the next group loads."""
    import gc

    import torch

    if "gguf" in loaded.extra and loaded.model is not None:
        loaded.model.close()
    loaded.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_hf(path: str, spec: SampleSpec) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_mcp.train.model import _ensure_pad_token

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if cuda:
        kwargs = {"dtype": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, "device_map": {"": 0}}
        if spec.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"],
                bnb_4bit_use_double_quant=True)
    elif spec.load_in_4bit:
        raise ModelError("load_in_4bit needs a CUDA GPU (bitsandbytes); this machine has none; sample the job's "
                         "merged model, or run on a GPU machine")
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    _ensure_pad_token(tokenizer)
    return model, tokenizer, torch.cuda.get_device_name(0) if cuda else "cpu"


def _load_unsloth(path: str, spec: SampleSpec) -> tuple[Any, Any, str]:
    import torch
    from unsloth import FastLanguageModel

    from finetune_mcp.train.model import _ensure_pad_token

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=spec.max_seq_length,
                                                         load_in_4bit=spec.load_in_4bit, dtype=None)
    _ensure_pad_token(tokenizer)
    return model, tokenizer, torch.cuda.get_device_name(0)


def _tokenizer_for(entry: SampledModel, base_tokenizer: Any) -> Any:
    """The tokenizer saved with the adapter (what training used), else the model's."""
    from pathlib import Path

    if entry.adapter is None or not (Path(entry.adapter) / "tokenizer_config.json").is_file():
        return base_tokenizer
    from transformers import AutoTokenizer

    from finetune_mcp.train.model import _ensure_pad_token

    tokenizer = AutoTokenizer.from_pretrained(entry.adapter)
    _ensure_pad_token(tokenizer)
    return tokenizer
