"""Reload a trained adapter and generate with it: the proof that a run produced a usable model.

Used by the demo's held-out accuracy, the tests ("the adapter reloads and generates"), and the
model card's examples. Greedy decoding, so results are reproducible.
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


def generate_replies(model: Any, tokenizer: Any, prompts: list[str] | list[list[dict[str, str]]],
                     max_new_tokens: int = 16) -> list[str]:
    """Greedy assistant replies, via the tokenizer's chat template, to single-turn user prompts or
    to conversations (lists of {"role", "content"} messages, e.g. a held-out row without its last
    assistant turn)."""
    import torch

    replies = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        replies.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return replies
