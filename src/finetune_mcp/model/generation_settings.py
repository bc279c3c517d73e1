"""How to generate (`GenerationSettings`) and a raw prompt (`PlainText`): plain data, no torch, so specs
that carry them (a sample job's, an evaluation suite's) validate in the server."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class PlainText:
    """A raw prompt, tokenised without the chat template (as training tokenises prompt/completion rows).

    `special_tokens=False` for text that already holds them: a prompt rendered by the chat template
    (`generate.chat_prompt`) carries its own BOS, and the tokenizer would add a second one."""

    text: str
    special_tokens: bool = True


class GenerationSettings(BaseModel):
    """How to generate: greedy unless a temperature is given; stop at end-of-turn or max_new_tokens."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1, le=4096, description="Tokens generated at most per answer.")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy decoding (reproducible); > 0 samples.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed for sampling.")
    batch_size: int = Field(8, ge=1, le=256, description="Prompts generated together (left-padded).")
    alternatives: int = Field(3, ge=0, le=10, description="Most likely tokens kept per generated token.")

    @model_validator(mode="after")
    def _top_p_needs_sampling(self) -> GenerationSettings:
        if self.temperature == 0 and self.top_p < 1:
            raise ValueError(f"top_p={self.top_p} applies only when sampling; set temperature > 0 (e.g. 0.7) "
                             "or leave top_p at 1 for greedy decoding")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
