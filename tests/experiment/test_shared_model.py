"""Sharing the base model between runs: loaded once, LoRA re-initialised from each run's seed."""

from __future__ import annotations

import torch

from finetune_mcp.config import build_config
from finetune_mcp.experiment.shared_model import SharedBaseModel


def lora_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def test_the_model_is_loaded_once_and_lora_starts_from_the_runs_seed(tiny_model_dir):
    config = build_config({"model": str(tiny_model_dir), "dataset": "unused.jsonl", "seed": 1})
    loader = SharedBaseModel()
    first = loader(config, "hf")
    assert loader.last["model_reused"] is False
    start = lora_state(first.model)
    assert all(not t.any() for name, t in start.items() if "lora_B" in name)  # B = 0: the adapter starts as identity
    with torch.no_grad():  # what training leaves behind
        for name, p in first.model.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
                p.grad = torch.ones_like(p)

    again = loader(config, "hf")
    assert again is first and loader.last["model_reused"] is True and loader.last["model_s"] < 1.0
    assert all(torch.equal(start[name], t) for name, t in lora_state(again.model).items())  # same seed, same start
    assert all(p.grad is None for p in again.model.parameters())

    other = loader(config.model_copy(update={"seed": 2}), "hf")
    changed = lora_state(other.model)
    assert any(not torch.equal(start[name], t) for name, t in changed.items() if "lora_A" in name)

    fresh = SharedBaseModel(share=False)
    a, b = fresh(config, "hf"), fresh(config, "hf")
    assert a is not b and fresh.last["model_reused"] is False
    assert all(torch.equal(start[name], t) for name, t in lora_state(b.model).items())  # loading does not change it
