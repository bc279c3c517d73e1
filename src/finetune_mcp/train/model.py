"""Load the base model + tokenizer and attach LoRA: Unsloth on CUDA, transformers + PEFT elsewhere.

The backend choice is made once (`resolve_backend`) and recorded in result.json and the card.
Unsloth must be imported before transformers and TRL because it patches them, so `run_training`
calls `resolve_backend` before importing anything else heavy.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: Any  # a PEFT-wrapped causal LM
    tokenizer: Any
    backend: str  # "unsloth" | "hf"
    device: str  # "cpu" or the GPU's name


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class BackendChoice(Protocol):
    """What picking a backend reads: any spec with these two fields (training, a student, ...)."""

    backend: str
    load_in_4bit: bool


def resolve_backend(config: BackendChoice) -> str:
    """unsloth when asked or (auto) when CUDA is there and Unsloth is installed; hf otherwise."""
    cuda = cuda_available()
    if config.load_in_4bit and not cuda:
        raise ModelError(
            "load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
            "Set load_in_4bit=false to train in 16/32 bits here, or use target='runpod'."
        )
    if config.backend == "hf":
        return "hf"
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if config.backend == "unsloth":
        if not cuda:
            raise ModelError("backend='unsloth' needs a CUDA GPU; use backend='hf' (or 'auto') on this machine")
        if not has_unsloth:
            raise ModelError("backend='unsloth' but Unsloth is not installed: pip install 'finetune-mcp[unsloth]'")
        return "unsloth"
    return "unsloth" if cuda and has_unsloth else "hf"


def _check_model_reachable(name: str) -> None:
    """Fail early with a plain message when a model is neither a local folder nor cached/reachable."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; point `model` at a Hugging Face model folder")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model {name!r} is not an existing folder; give a local model folder or a hub id 'owner/name'")


def load_model(config: EnhancedTrainingConfig, backend: str) -> LoadedModel:
    """Load `config.model` with LoRA attached, on the backend chosen by `resolve_backend`."""
    _check_model_reachable(config.model)
    try:
        if backend == "unsloth":
            return _load_unsloth(config)
        return _load_hf(config)
    except OSError as exc:  # transformers reports missing/unreachable repos as OSError
        raise ModelError(
            f"could not load model {config.model!r}: {exc}. Give a local model folder, or a hub id that is "
            "in the local Hugging Face cache or reachable (check the name and your network / HF_TOKEN)."
        ) from exc


def _load_unsloth(config: EnhancedTrainingConfig) -> LoadedModel:
    import torch
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=config.model,
        max_seq_length=config.max_seq_length,
        load_in_4bit=config.load_in_4bit,
        dtype=None,
    )
    model = FastLanguageModel.get_peft_model(
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
    _ensure_pad_token(tokenizer)
    return LoadedModel(model, tokenizer, "unsloth", torch.cuda.get_device_name(0))


def _load_hf(config: EnhancedTrainingConfig) -> LoadedModel:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if cuda:
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["device_map"] = {"": 0}
        if config.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"],
                bnb_4bit_use_double_quant=True,
            )
    else:
        kwargs["dtype"] = torch.float32
    tokenizer = load_tokenizer(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
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
    model = get_peft_model(model, lora)
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    return LoadedModel(model, tokenizer, "hf", device)


def load_tokenizer(model: str) -> Any:
    """The tokenizer alone, as the transformers + PEFT path loads it (pad token defaulted to EOS);
    the dry run (`preview_training`) reads the chat template and the mask through it, no weights."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    _ensure_pad_token(tokenizer)
    return tokenizer


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
        raise ModelError("the model has no LoRA layers to re-initialise; load it with LoRA attached (load_model)")
    for param in model.parameters():
        param.grad = None
    return layers


def _ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
