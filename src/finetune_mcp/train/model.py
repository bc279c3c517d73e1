"""Attach LoRA to the base model training loads: Unsloth's `get_peft_model` on the Unsloth backend,
PEFT's (after `prepare_model_for_kbit_training` for a 4-bit base) on transformers.

The base model is loaded by `model.loading.load_model` with the plan `model.plan.plan_load` makes for
training, the same function every other job asks, so a run's sample and evaluate jobs load its base
alike. The backend is picked once per run (`model.plan.resolve_backend`, then the step plan's
`auto_backend`) and recorded in result.json and the card.
"""

from __future__ import annotations

import logging
from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.errors import ModelError
from finetune_mcp.model.loading import LoadedModel, load_model
from finetune_mcp.model.plan import LoadRequest, plan_load

log = logging.getLogger(__name__)


def load_with_lora(config: EnhancedTrainingConfig, backend: str) -> LoadedModel:
    """`config.model` with LoRA attached, on `backend` (the run's choice: `resolve_backend`, then the step
    plan's)."""
    plan = plan_load(LoadRequest(backend, config.load_in_4bit, config.max_seq_length), "train")
    loaded = load_model(config.model, plan)
    attach = _unsloth_lora if plan.backend == "unsloth" else _peft_lora
    return LoadedModel(attach(loaded.model, config), loaded.tokenizer, loaded.backend, loaded.device)


def _unsloth_lora(model: Any, config: EnhancedTrainingConfig) -> Any:
    from unsloth import FastLanguageModel

    return FastLanguageModel.get_peft_model(
        model,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing is True else False,
        random_state=config.seed,
        use_rslora=config.use_rslora,
    )


def _peft_lora(model: Any, config: EnhancedTrainingConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing is True)
    missing = [m for m in config.target_modules if not any(n.endswith(m) for n, _ in model.named_modules())]
    if missing:
        raise ModelError(
            f"target_modules {missing} are not modules of {config.model!r}; "
            "use names such as q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        use_rslora=config.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def reset_lora(model: Any, seed: int) -> int:
    """Re-initialise every LoRA layer of `model` as PEFT does when it attaches one (A: Kaiming
    uniform, B: zeros, so the adapter starts as the identity), from `seed`; returns the number of
    layers reset.

    Why: an experiment trains several runs in one process on the same base model. Loading the base
    once and resetting the adapter per run replaces a full model load (seconds to minutes on a GPU)
    with this (milliseconds), and seeding it here makes each run's starting point depend on its own
    seed only, not on the order of the runs. Works for both backends: Unsloth attaches PEFT's LoRA
    layers too. Gradients left by the previous run are dropped.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(seed)
    layers = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)
            layers += 1
    if not layers:
        raise ModelError("the model has no LoRA layers to re-initialise; load it with LoRA attached (load_with_lora)")
    for param in model.parameters():
        param.grad = None
    return layers
