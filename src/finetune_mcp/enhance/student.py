"""The student: the base model you are about to fine-tune, generating with its token entropy.

Loaded without LoRA, for inference only, by `model.loading.load_model` with the plan training of the
same settings would get (`model.plan.plan_load`: Unsloth and its fast generate on CUDA when installed,
transformers elsewhere; 4 bits when asked).

Entropy comes from the model's own logits at every generated position, H = −Σ p log p in nats with
p = softmax(logits) at temperature 1, so it means the same as the entropy the trainer logs. It is
computed by a logits processor as the tokens are generated (memory O(batch), never the
[steps × batch × V] logits that `output_logits=True` would keep). Sampling knobs that would touch
the logits before that processor are neutralised (temperature 1, no top-k / top-p / repetition
penalty) and the processor applies the student temperature itself after measuring.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from finetune_mcp.enhance.config import StudentTeacherConfig
from finetune_mcp.errors import ModelError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Attempt:
    """One generated reply with its per-token entropy (nats), token for token."""

    text: str
    token_ids: list[int]
    entropies: list[float]
    spans: list[dict[str, Any]] = field(default_factory=list)

    def profile(self) -> dict[str, Any]:
        """mean / max entropy, the token count and the high-entropy spans, for the iteration log."""
        values = self.entropies
        return {
            "mean": round(sum(values) / len(values), 4) if values else 0.0,
            "max": round(max(values), 4) if values else 0.0,
            "tokens": len(values),
            "spans": self.spans,
            "token_entropies": [round(v, 3) for v in values],
        }


def high_entropy_spans(entropies: list[float], threshold: float) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive positions whose entropy is above `threshold`."""
    spans, start = [], None
    for i, value in enumerate(entropies):
        if value > threshold and start is None:
            start = i
        elif value <= threshold and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(entropies)))
    return spans


class Student:
    """Loads the student once; `generate` answers a batch of conversations."""

    def __init__(self, config: StudentTeacherConfig) -> None:
        from finetune_mcp.model.loading import load_model
        from finetune_mcp.model.plan import plan_load

        self.config = config
        loaded = load_model(config.model, plan_load(config))
        self.backend, self.model, self.tokenizer = loaded.backend, loaded.model, loaded.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"the student {config.model!r} has no chat template; use a chat/instruct model")
        vocab = getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)
        self.log_vocab = math.log(vocab)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        self.device = str(self.model.device)

    def generate(self, conversations: list[Messages], seed: int) -> list[Attempt]:
        """One reply per conversation (sampled at the student temperature, greedy at 0), each with
        its per-token entropy and high-entropy spans."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        cfg = self.config
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        recorder = _EntropyRecorder(cfg.student_temperature)
        sample = cfg.student_temperature > 0
        # Explicit values, because unset ones are filled from the model's generation_config.json
        # (e.g. Qwen3's top_k=20, top_p=0.95), whose warpers would run before the recorder.
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0} if sample else {}
        generation = GenerationConfig(
            max_new_tokens=cfg.student_max_new_tokens, do_sample=sample, repetition_penalty=1.0, num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids),
            return_dict_in_generate=True, **neutral)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**batch, generation_config=generation,
                                      logits_processor=LogitsProcessorList([recorder]))
        new_tokens = out.sequences[:, batch["input_ids"].shape[1]:].tolist()
        entropies = torch.stack(recorder.steps, dim=1).tolist() if recorder.steps else [[] for _ in texts]
        return [self._attempt(ids, row) for ids, row in zip(new_tokens, entropies, strict=True)]

    def _attempt(self, ids: list[int], entropies: list[float]) -> Attempt:
        length = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), len(ids))  # through the first EOS
        ids, entropies = ids[:length], entropies[:length]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        spans = []
        for start, end in high_entropy_spans(entropies, self.config.entropy_threshold):
            window = entropies[start:end]
            spans.append({"start": start, "end": end,
                          "text": self.tokenizer.decode(ids[start:end], skip_special_tokens=True),
                          "mean": round(sum(window) / len(window), 4), "max": round(max(window), 4)})
        return Attempt(text=text, token_ids=ids, entropies=entropies, spans=spans)


class _EntropyRecorder:
    """A logits processor: records H of the raw logits at each step, then applies the temperature."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.steps: list[Any] = []  # one [batch] tensor per generated position

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float(), dim=-1)
        self.steps.append(torch.special.entr(probs).sum(dim=-1).cpu())  # entr(0) = 0: masked logits are fine
        return scores / self.temperature if self.temperature > 0 else scores
