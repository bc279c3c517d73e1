"""Load the models of a sample job, sharing base weights: a tuned adapter and its base load once.

Models are grouped by the weights they stand on (`SampledModel.model`): a job's adapter, another
job's adapter on the same base and the base itself form one group; the base is loaded once, each
adapter is attached under its own name, and the base answers with the adapters disabled (PEFT's
`disable_adapter`, which Unsloth's fast inference honours). A merged model or any other folder is
a group of its own, and so is an exported GGUF file (opened by llama.cpp, see `sample.gguf`).

Loading as training did: `model.loading.load_model` with the plan `model.plan.plan_load` makes from
the job's backend, load_in_4bit and max_seq_length (copied from the sampled run), as an evaluate job of
the run loads it. The tokenizer is the one saved beside the adapter (training's own, chat template
included), else the model folder's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from finetune_mcp.errors import ModelError
from finetune_mcp.model.plan import LoadPlan
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


def load_group(group: ModelGroup, spec: SampleSpec, plan: LoadPlan) -> LoadedGroup:
    """The group's base loaded as `plan` says, with its adapters attached, in inference mode."""
    if group.entries[0].is_gguf:
        return _load_gguf_group(group, spec)
    from finetune_mcp.model.loading import adapter_tokenizer, load_model

    started = time.time()
    # PEFT names become module keys: no ':' or '.'
    names = {entry.label: f"adapter_{index}" for index, entry in enumerate(group.entries) if entry.adapter}
    loaded = load_model(group.path, plan, adapters={names[e.label]: e.adapter for e in group.entries if e.adapter})
    tokenizers = {e.label: adapter_tokenizer(e.adapter) or loaded.tokenizer for e in group.entries}
    load_s = time.time() - started
    log.info("loaded %s%s with backend=%s on %s in %.1fs", group.path,
             f" + {len(names)} adapter(s)" if names else "", loaded.backend, loaded.device, load_s)
    return LoadedGroup(loaded.model, tokenizers, names, loaded.backend, loaded.device, load_s)


def _load_gguf_group(group: ModelGroup, spec: SampleSpec) -> LoadedGroup:
    """An exported GGUF opened by llama.cpp on the CPU (context: max_seq_length + max_new_tokens), with
    the training tokenizer that renders its prompts."""
    from finetune_mcp.model.loading import load_tokenizer
    from finetune_mcp.sample.gguf import CONTEXT_MARGIN, load_gguf

    started = time.time()
    entry = group.entries[0]
    if entry.tokenizer is None:
        raise ModelError(f"{entry.model}: no tokenizer folder to render the prompts with; sample the GGUF through "
                         "its job (sample_model(job_id=..., weights='gguf'))")
    tokenizer = load_tokenizer(entry.tokenizer)
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
