"""The student: the base model you are about to fine-tune, generating with its token entropy.

Loaded without LoRA, for inference only, by `model.loading.load_model` with the plan training of the
same settings would get (`model.plan.plan_load`: Unsloth and its fast generate on CUDA when installed,
transformers elsewhere; 4 bits when asked).

Replies come from the project's one generate (`model.generate.generate`), prompted as a chat client
prompts (`chat_prompt`: the template's generation prompt) and sampled at the student temperature
(greedy at 0). Its entropy is the model's own at every generated position, H = −Σ p log p in nats of
the raw logits, before the temperature, so it means the same as the entropy the trainer logs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from finetune_mcp.enhance.config import StudentTeacherConfig
from finetune_mcp.errors import ModelError
from finetune_mcp.model.generate import chat_prompt, generate, stop_token_ids
from finetune_mcp.model.generation_settings import GenerationSettings

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
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"the student {config.model!r} has no chat template; use a chat/instruct model")
        vocab = getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)
        self.log_vocab = math.log(vocab)
        self.eos_ids = set(stop_token_ids(self.tokenizer, self.model))
        self.device = str(self.model.device)

    def generate(self, conversations: list[Messages], seed: int) -> list[Attempt]:
        """One reply per conversation (sampled at the student temperature, greedy at 0), each with
        its per-token entropy and high-entropy spans."""
        cfg = self.config
        # model_construct: student_max_new_tokens may exceed the 4096 a sample request may ask for
        settings = GenerationSettings.model_construct(max_new_tokens=cfg.student_max_new_tokens,
                                                      temperature=cfg.student_temperature, seed=seed,
                                                      batch_size=len(conversations), alternatives=0)
        replies = generate(self.model, self.tokenizer, [chat_prompt(self.tokenizer, c) for c in conversations],
                           settings)
        return [self._attempt(reply.token_ids, reply.entropies) for reply in replies]

    def _attempt(self, ids: list[int], entropies: list[float]) -> Attempt:
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        spans = []
        for start, end in high_entropy_spans(entropies, self.config.entropy_threshold):
            window = entropies[start:end]
            spans.append({"start": start, "end": end,
                          "text": self.tokenizer.decode(ids[start:end], skip_special_tokens=True),
                          "mean": round(sum(window) / len(window), 4), "max": round(max(window), 4)})
        return Attempt(text=text, token_ids=ids, entropies=entropies, spans=spans)
