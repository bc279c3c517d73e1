"""What a dry run answers: the typed report `preview_training` returns (the MCP tool's output schema).

Plain pydantic, no heavy imports: the server builds its output schema from these models, and the
preview worker (`finetune-mcp preview --json`) fills them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"


class DataReport(BaseModel):
    """Which rows train, as `start_finetune` would read them."""

    source: str
    kind: Literal["file", "folder", "hub"]
    format: str = Field(description="alpaca | messages | sharegpt | prompt_completion | text | arangodb | ranking | "
                        "triples | graded, or mixed when a folder's files differ.")
    format_reason: str = Field(description="Why that format: the keys that decided it, or dataset_format.")
    files: list[str]
    rows_read: int
    removed_by_filter: dict[str, int] = Field(description="Rows refused by metadata_filters, by filter.")
    rows_kept: int = Field(description="After filters and max_examples.")
    train_rows: int
    validation_rows: int
    dropped_rows: int = Field(description="Training rows left without a trained token after truncation "
                              "(the trainer drops them), estimated from the tokenised rows.")


class RenderedExample(BaseModel):
    """One training example as the model will see it, the trained tokens between [[ and ]]."""

    row: int = Field(description="Position in the training split (after the seeded shuffle).")
    text: str = Field(description="Rendered through the model's own chat template; [[...]] marks the tokens "
                      "that carry loss.")
    trained_spans: list[list[int]] = Field(
        default_factory=list, description="[start, end) character offsets in `text` of each trained piece (inside "
        "its [[ ]]): exact even when the data itself holds '[[' or ']]'.")
    markers_in_data: bool = Field(False, description="The row's own text holds '[[' or ']]', which look like the "
                                  "trained-token markers: read trained_spans, not the brackets.")
    tokens: int
    trained_tokens: int
    masked_tokens: int
    truncated: bool = Field(description="Longer than max_seq_length: the tail was cut before training.")
    ends_with_end_of_turn: bool = Field(description="Every trained span ends with the end-of-turn token.")
    side: str | None = Field(None, description="Preference methods: which reply of the row this is (chosen, "
                             "rejected; desirable, undesirable for KTO rows); the prompt is the masked part.")
    reward_columns: dict[str, Any] | None = Field(None, description="GRPO: the row's columns the rewards read "
                                                  "(the reference answer), beside the prompt the model answers.")


class LengthReport(BaseModel):
    """Token lengths over the training split (all of it, or a seeded sample: `sampled_rows`)."""

    sampled_rows: int
    min: int
    median: float
    p95: float
    max: int
    truncated: int = Field(description="Rows longer than max_seq_length (estimated over the split).")
    truncated_share: float
    truncated_part: str = Field(description="What truncation cuts: prompt only, or replies and their end-of-turn.")
    trained_tokens_lost: int = Field(description="Trained tokens cut away by truncation (over the split).")
    tokens_per_epoch: int = Field(description="After truncation, over the training split.")
    trained_tokens_per_epoch: int
    padded_tokens_per_step: int = Field(description="Tokens one optimiser step processes on one device, padding "
                                        "to the longest row of each micro-batch included.")
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: float = Field(description="Epochs the run covers (max_steps may stop it early).")


class Estimate(BaseModel):
    """Where the job would run, what it needs, and how long it would take there."""

    target: str = Field(description="What was asked: auto | local | runpod.")
    backend: str | None = Field(description="local | runpod; None when the job could not be placed.")
    device: str | None = Field(description="cuda | cpu | runpod.")
    gpu: str | None = Field(description="The GPU (local NVML name, or the RunPod type the launch would pick).")
    gpu_count: int = 1
    reason: str = Field(description="Why this placement (the same text start_finetune stores).")
    refused: str | None = Field(None, description="start_finetune would refuse the run with this error.")
    memory_gb: float | None
    memory_breakdown_gb: dict[str, float]
    params: int | None
    seconds_per_step: float | None
    total_seconds: float | None
    price_per_hr: float | None = Field(None, description="RunPod: the GPU type's price (all GPUs of the pod).")
    cost_usd: float | None = Field(None, description="RunPod: price × estimated training time.")
    basis: str = Field(description="How the time was estimated: the measurement it scales and the assumptions.")


class PreviewWarning(BaseModel):
    """Something a careful engineer would raise before spending the GPU time."""

    code: str
    message: str
    fix: str


class PreviewReport(BaseModel):
    """The answer of preview_training: nothing was trained, loaded (no weights) or written."""

    model: str
    dataset: str
    task: str
    chat_template: bool = Field(description="The tokenizer has a chat template (conversations use it).")
    end_of_turn: str | None = Field(description="The token the template closes a reply with; it is trained.")
    data: DataReport
    examples: list[RenderedExample]
    lengths: LengthReport
    estimate: Estimate
    warnings: list[PreviewWarning]
    settings: dict[str, Any] = Field(description="The settings the run would use (defaults filled in).")
    hint: str = Field(description="What to do next.")


def duration(seconds: float) -> str:
    """Seconds as people read them: '0.42 s', '38 s', '12 min', '6.5 h'."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
