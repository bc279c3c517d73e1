"""Reload a trained adapter (or the base model alone): the proof that a run produced a usable model.

Used by the demo and the tests ("the adapter reloads and generates", with `evaluation.generate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.errors import ModelError


def load_adapter(adapter_dir: str | Path, base_model: str | None = None) -> tuple[Any, Any]:
    """Base model + LoRA adapter (PEFT) and the tokenizer saved beside the adapter, in eval mode."""
    import json

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise ModelError(f"{adapter_dir} holds no adapter_config.json; point at a run's adapter/ folder")
    base = base_model or json.loads(config_path.read_text())["base_model_name_or_path"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return model, tokenizer


def load_base(model_name: str) -> tuple[Any, Any]:
    """The untrained base model, for before/after comparisons."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_name).to(device).eval()
    return model, AutoTokenizer.from_pretrained(model_name)
