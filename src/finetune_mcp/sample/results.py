"""A sample job's results: the typed result.json, its compact view for get_job, its metrics, and
which sample job belongs to a training run (for the model card).

The pydantic models are both the schema of result.json (validated when written) and the output
schema of the `get_samples` tool, so the file and the tool can never disagree. No torch here:
the server reads results through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job

COMPACT_SAMPLES = 10  # samples get_job shows; get_samples has them all


class Alternative(BaseModel):
    token: str
    p: float = Field(description="The model's probability for this token at that step.")


class TokenInfo(BaseModel):
    text: str = Field(description="What the token adds to the answer ('' for a special token).")
    entropy: float = Field(description="H = −Σ p log p (nats) of the distribution it was chosen from.")
    special: str | None = Field(None, description="The special token's name (e.g. '<|im_end|>').")
    alternatives: list[Alternative] = Field(default_factory=list)


class SpanInfo(BaseModel):
    start_token: int
    end_token: int
    start: int = Field(description="Character offset in `text`.")
    end: int
    text: str
    max_entropy: float
    mean_entropy: float
    alternatives: list[Alternative] = Field(description="The most likely tokens where the span starts.")


class ModelOutput(BaseModel):
    text: str = Field(description="The generated reply (special tokens removed).")
    answer: str = Field(description="The reply without a leading <think> block, trimmed: what is matched.")
    exact_match: bool | None = Field(description="answer == reference (trimmed); null without a reference.")
    normalized_match: bool | None = Field(description="Equal after lower-casing, punctuation to spaces.")
    finish_reason: Literal["stop", "length"] = Field(description="stop: end of turn; length: max_new_tokens.")
    num_tokens: int
    mean_entropy: float | None
    max_entropy: float | None
    high_entropy_tokens: int
    marked: str = Field(description="The reply with high-entropy spans in ⟦…⟧.")
    spans: list[SpanInfo]
    tokens: list[TokenInfo] = Field(default_factory=list, description="Per token (get_samples only).")


class SampleRow(BaseModel):
    index: int
    prompt: str = Field(description="The last user turn, or the raw prompt text.")
    messages: list[dict[str, str]] | None = None
    reference: str | None = Field(None, description="The dataset row's answer, when the prompt is a row.")
    row: int | None = Field(None, description="Index of the row in the split it came from.")
    outputs: dict[str, ModelOutput] = Field(description="By model label: tuned, base, model, compare:<job>.")


class ModelSummary(BaseModel):
    label: str
    model: str
    adapter: str | None
    weights: str
    source_job: str | None
    backend: str
    device: str
    load_s: float
    ttft_s: float | None = Field(description="Mean time to first token per batch (prefill + one step).")
    tokens_per_s: float | None = Field(description="Generated tokens per second, all sequences of a batch.")
    warmup_s: float | None = Field(None, description="The untimed warm-up call before the timed batches "
                                   "(one-time compilation and kernel selection; none for GGUF files).")
    generated_tokens: int
    answers_with_reference: int
    exact_match_rate: float | None
    normalized_match_rate: float | None
    mean_entropy: float | None = Field(description="Mean entropy over every generated token (nats).")
    high_entropy_share: float | None = Field(description="Share of generated tokens above the threshold.")


class SampleResult(BaseModel):
    status: Literal["succeeded"] = "succeeded"
    kind: Literal["sample"] = "sample"
    job_id: str
    source_job: str | None
    models: list[ModelSummary]
    settings: dict[str, Any]
    threshold: float | None = Field(description="Tokens above this entropy (nats) are marked.")
    threshold_source: str
    num_prompts: int
    samples: list[SampleRow]
    runtime_s: float
    versions: dict[str, str] = Field(default_factory=dict)


def metrics_of(result: SampleResult) -> dict[str, float]:
    """get_job's metrics: per model, match rates, entropy and speed (`sample/<label>/<name>`)."""
    out: dict[str, float] = {}
    for model in result.models:
        for name in ("exact_match_rate", "normalized_match_rate", "mean_entropy", "high_entropy_share",
                     "tokens_per_s", "ttft_s"):
            value = getattr(model, name)
            if value is not None:
                out[f"sample/{model.label}/{name}"] = round(value, 4)
    return out


def read_result(run_dir: str | Path) -> SampleResult:
    """A succeeded sample job's result.json."""
    from finetune_mcp.errors import JobError

    path = Path(run_dir) / "result.json"
    try:
        return SampleResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise JobError(f"{path} is missing or unreadable ({exc}); sample the model again") from None


def without_tokens(result: SampleResult) -> SampleResult:
    """The result without the per-token lists (the spans and marked text stay)."""
    samples = [row.model_copy(update={"outputs": {k: o.model_copy(update={"tokens": []})
                                                   for k, o in row.outputs.items()}}) for row in result.samples]
    return result.model_copy(update={"samples": samples})


def compact_view(job: Job) -> dict[str, Any] | None:
    """What get_job shows of a succeeded sample job: per model its rates and speed, and per prompt
    (the first 10) each model's answer, match and marked reply."""
    try:
        result = read_result(job.run_dir)
    except Exception:  # a view must never break get_job
        return None
    models = [{k: m.model_dump()[k] for k in ("label", "exact_match_rate", "normalized_match_rate", "mean_entropy",
                                               "high_entropy_share", "tokens_per_s", "ttft_s")}
              for m in result.models]
    samples = [{"prompt": row.prompt, "reference": row.reference,
                "outputs": {label: {"answer": o.answer, "normalized_match": o.normalized_match, "marked": o.marked,
                                    "mean_entropy": o.mean_entropy} for label, o in row.outputs.items()}}
               for row in result.samples[:COMPACT_SAMPLES]]
    return {"threshold": result.threshold, "threshold_source": result.threshold_source, "models": models,
            "samples": samples, "num_prompts": result.num_prompts,
            "more": f"get_samples('{job.id}') has all {result.num_prompts} prompts with every token's entropy"}


def latest_sample_of(jobs: list[Job], job_id: str) -> Job | None:
    """The newest succeeded sample job of training job `job_id` that also sampled its base (the
    model card's base-vs-tuned table); `jobs` newest first, as `JobManager.list` gives them."""
    for job in jobs:
        config = job.config
        if config.get("kind") != "sample" or config.get("source_job") != job_id or job.state.value != "succeeded":
            continue
        labels = {m.get("label") for m in config.get("models", [])}
        if {"base", "tuned"} <= labels:
            return job
    return None
