"""Reload a trained adapter (or the base model alone): the proof that a run produced a usable model.

Used by the demo and the tests ("the adapter reloads and generates", with `evaluation.generate`).
`generate_replies` serves only GRPO's held-out reward hooks (`train/grpo/method.py`): train/ sits
below evaluation/ in the layers, so it cannot call `evaluation.generate`; every other caller does.
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
                     max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
    """Greedy assistant replies, via the tokenizer's chat template, to single-turn user prompts or
    to conversations (lists of {"role", "content"} messages, e.g. a held-out row without its last
    assistant turn).

    Prompts go `batch_size` at a time, left-padded (a decoder continues from the last position, so
    padding must sit before the prompt): scoring 90 short held-out answers one prompt at a time cost
    26-30 s on an H100 for a 135M model, one batch of them well under a second. A finished row keeps
    emitting pad tokens until the batch is done; they are cut when decoding.
    """
    import torch

    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}] if isinstance(p, str) else p,
                                      tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    replies: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, batch["input_ids"].shape[1]:]
            replies += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return replies
