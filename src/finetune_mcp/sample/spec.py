"""`SampleSpec`: one `sample_model` job, validated at the door (plain pydantic, no torch).

A sample job generates from one to four models on the same prompts: typically `tuned` (a job's
adapter on its base, or its merged model) and `base` (the untrained base model), optionally a
second job (`compare:<job id>`). Prompts are given inline or come from dataset rows (`rows`): a
job's held-out validation split by default, read with exactly the data settings that job trained
with, so "held-out" means the rows training never saw.

`GenerationSettings` (from `model.generation_settings`) is what every caller of
`model.generate.generate` passes: greedy by default, so the same prompts give the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune_mcp.config import DataConfig, format_validation_error
from finetune_mcp.errors import ConfigError
from finetune_mcp.model.generation_settings import GenerationSettings, PlainText

MAX_PROMPTS = 200
# Characters of prompt text, all turns together: per prompt, and per request. A model reads at most
# max_seq_length tokens of a prompt (the worker refuses longer ones), so megabytes of prompt only
# cost tokenisation time and memory in the server and the worker (a 4 MB conversation kept a worker
# busy for minutes).
MAX_PROMPT_CHARS = 100_000
MAX_REQUEST_CHARS = 1_000_000
LABEL_PATTERN = r"^(tuned|base|model|adapter|merged|gguf|compare:[\w.-]{1,64})$"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class SamplePrompt(BaseModel):
    """One prompt: a conversation to continue with an assistant turn (rendered with the model's chat
    template, as in training), or a raw `text` prompt (prompt/completion rows: no template, as in
    training). `reference` is the expected answer when the prompt comes from a dataset row."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] | None = Field(None, min_length=1, max_length=200)
    text: str | None = Field(None, min_length=1, max_length=100_000)
    reference: str | None = None
    row: int | None = Field(None, ge=0, description="Index of the row in the split it was taken from.")

    @model_validator(mode="after")
    def _one_form(self) -> SamplePrompt:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a prompt is either messages (a conversation) or text (a raw prompt), not both")
        if self.messages is not None and self.messages[-1].role == "assistant":
            raise ValueError("the conversation ends with an assistant turn; end it with the user turn to answer")
        if self.chars > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt holds {self.chars:,} characters, more than {MAX_PROMPT_CHARS:,} (all turns "
                             "together); shorten it: the model reads at most max_seq_length tokens of it")
        return self

    @property
    def chars(self) -> int:
        """Characters of prompt text, all turns together."""
        return len(self.text or "") + sum(len(m.content) for m in self.messages or [])

    def shown(self) -> str:
        """The prompt as people read it: the last user turn, or the raw text."""
        if self.text is not None:
            return self.text
        assert self.messages is not None
        return self.messages[-1].content

    def generation_input(self) -> Any:
        """What `model.generate.generate` takes for this prompt."""
        if self.text is not None:
            return PlainText(self.text)
        assert self.messages is not None
        return [m.model_dump() for m in self.messages]


class SampledModel(BaseModel):
    """One model to generate with: `model` (a base model id/folder, a merged folder) with an optional
    LoRA `adapter` folder on it, or an exported GGUF file (`weights="gguf"`: `model` is the file,
    `tokenizer` the training tokenizer that renders its prompts). `label` names its column: tuned (a
    job's adapter, merged model or GGUF), base, model (any model given by path or id), adapter / merged
    / gguf (a job's further weights beside `tuned`), compare:<job id>."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(pattern=LABEL_PATTERN)
    model: str = Field(min_length=1, max_length=1000)
    adapter: str | None = Field(None, max_length=1000)
    source_job: str | None = Field(None, max_length=64)
    weights: Literal["adapter", "merged", "base", "model", "gguf"] = Field(
        description="adapter: LoRA on its base; merged: the merged model of a job; base: the untrained base; "
        "model: a model given by path or id; gguf: an exported GGUF file (`model`), run by llama.cpp.")
    tokenizer: str | None = Field(None, max_length=1000, description="gguf: the folder of the training "
                                  "tokenizer that renders the prompts (the job's adapter/ folder).")

    @property
    def is_gguf(self) -> bool:
        return self.weights == "gguf"

    def describe(self) -> str:
        if self.is_gguf:
            return f"{self.model} (GGUF, llama.cpp; prompts rendered by {self.tokenizer})"
        return self.model + (f" + adapter {self.adapter}" if self.adapter else "")


class RowSource(DataConfig):
    """Prompts from dataset rows: the data group of a job (its `DataConfig` fields: format, filters,
    seeded subset and split), so `data.loader.load_examples` reads them as training did and
    `split="validation"` gives exactly the rows a job held out, `split="train"` the rows it trained on
    (does it recall them? does it generalise?)."""

    split: Literal["validation", "train", "all"] = Field(
        "validation", description="validation: the held-out rows; train: the rows trained on; all: both.")
    count: int = Field(8, ge=1, le=MAX_PROMPTS, description="How many rows to sample.")
    order: Literal["first", "seeded"] = Field(
        "first", description="first: the split's first rows; seeded: a seeded random choice of them.")
    order_seed: int = Field(0, ge=0)


class SampleSpec(BaseModel):
    """A sample_model job. `model` / `dataset` repeat the first model and the rows' dataset for the
    job views (list_jobs, get_job); the worker reads `models` and `prompts` / `rows`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sample"] = "sample"
    model: str = Field(min_length=1, max_length=1000)
    dataset: str = Field("", max_length=1000)
    models: list[SampledModel] = Field(min_length=1, max_length=4)
    prompts: list[SamplePrompt] = Field(default_factory=list, max_length=MAX_PROMPTS)
    rows: RowSource | None = None
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    source_job: str | None = Field(None, max_length=64, description="The job whose model is sampled, if any.")
    high_entropy_threshold: float | None = Field(
        None, ge=0, description="Tokens above this entropy (nats) are marked; None: the percentile below.")
    threshold_source: str = Field("", max_length=300, description="Where the threshold came from, for results.")
    high_entropy_percentile: float = Field(90.0, gt=0, lt=100)
    backend: Literal["auto", "unsloth", "hf"] = Field("auto", description="unsloth on CUDA when installed.")
    load_in_4bit: bool = Field(False, description="Load the base in 4 bits (as a QLoRA job trained).")
    max_seq_length: int = Field(2048, ge=16, le=131072)
    run_dir: str | None = None
    gguf_source: dict[str, Any] | None = Field(
        None, description="Set by the server when a sampled model is a GGUF file imported for transformers: the "
        "file, its quantisation type, and whether its weights were dequantised.")

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, value: list[SampledModel]) -> list[SampledModel]:
        labels = [m.label for m in value]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must differ (got {labels}); compare a job with another job, not itself")
        return value

    @model_validator(mode="after")
    def _something_to_ask(self) -> SampleSpec:
        if not self.prompts and self.rows is None:
            raise ValueError("no prompts: give prompts, or dataset rows to take them from")
        if len(self.prompts) + (self.rows.count if self.rows and not self.prompts else 0) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per sample job; split the request")
        total = sum(p.chars for p in self.prompts)
        if total > MAX_REQUEST_CHARS:
            raise ValueError(f"the prompts hold {total:,} characters together, more than {MAX_REQUEST_CHARS:,} per "
                             "sample job; split the request or shorten them")
        return self


def build_sample_spec(data: dict[str, Any]) -> SampleSpec:
    """Validate a mapping into a spec, turning pydantic's errors into one `ConfigError`."""
    try:
        return SampleSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "sample request", "sample_model")) from None


def load_sample_spec(spec_path: Path) -> SampleSpec:
    """A sample job's spec.json; a ConfigError that says what is wrong otherwise."""
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {spec_path}: {exc}; start the job again with sample_model") from None
    return build_sample_spec(data)
