"""`get_entropy_metrics`: what entropy-aware training did, in a size an agent can read.

Sources, both in the run directory: events.jsonl (per logging step: loss, unweighted CE, weighted
loss, mean entropy, high-entropy share; eval metrics) and entropy/epoch_<k>.json (a sample of token
entropies, their weights, the threshold and the top high-entropy tokens, per epoch). Works while the
job runs (partial series) and after it ended; metric names are those of `runs.metric_names`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.facts import entropy_epochs
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.tools import get_manager

MAX_POINTS = 50
HISTOGRAM_BINS = 20
TOP_TOKENS = 15
SERIES_KEYS = {
    "loss": M.LOSS,
    "ce_loss": M.CE_LOSS,
    "weighted_loss": M.WEIGHTED_LOSS,
    "entropy_mean": M.ENTROPY_MEAN,
    "high_entropy_share": M.HIGH_ENTROPY_SHARE,
}


class SeriesPoint(BaseModel):
    step: int
    loss: float | None = Field(None, description="The optimised loss (weighted when weighting is on).")
    ce_loss: float | None = Field(None, description="Unweighted cross-entropy.")
    weighted_loss: float | None = Field(None, description="Σ w·CE / tokens (logged in both modes).")
    entropy_mean: float | None = None
    high_entropy_share: float | None = None


class Histogram(BaseModel):
    epoch: int
    bin_edges: list[float] = Field(description="Entropy in nats; len(counts) + 1 edges.")
    counts: list[int]
    threshold: float | None = Field(description="Entropy above which a token counts as high-entropy.")
    tokens_sampled: int


class TopToken(BaseModel):
    token: str
    id: int
    count: int = Field(description="Times it was a high-entropy target.")
    mean_entropy: float


class EntropyMetrics(BaseModel):
    job_id: str
    state: str
    entropy_weighting: bool
    steps_logged: int
    mean_entropy: float | None = Field(description="Latest mean predictive entropy (nats).")
    high_entropy_share: float | None = Field(description="Latest share of tokens above the threshold.")
    latest: dict[str, Any] = Field(description="Latest value of every logged metric.")
    series: list[SeriesPoint] = Field(description=f"Up to {MAX_POINTS} points, each the mean of a run of steps.")
    per_epoch: list[dict[str, Any]] = Field(description="Mean entropy and high-entropy share per epoch.")
    histogram: Histogram | None = Field(description="Token-entropy histogram of the newest epoch sample.")
    top_tokens: list[TopToken]
    eval: dict[str, Any] | None
    note: str | None = None


def entropy_metrics(run_dir: RunDirectory, *, job_id: str, state: str, entropy_weighting: bool) -> EntropyMetrics:
    """Read and condense a run directory (pure: no manager, usable on any run dir)."""
    events, _ = run_dir.read_events()
    progress = [  # steps that logged training metrics (not the trainer's closing summary)
        e for e in events if e.get("type") == "progress" and isinstance(e.get("metrics"), dict)
        and any(_finite(e["metrics"].get(tag)) for tag in SERIES_KEYS.values())
    ]
    latest: dict[str, Any] = {}
    for event in events:
        if event.get("type") in ("progress", "eval") and isinstance(event.get("metrics"), dict):
            latest.update({k: v for k, v in event["metrics"].items() if _finite(v)})
    epochs = entropy_epochs(run_dir)
    newest = epochs[-1] if epochs else None
    eval_summary = None
    if (run_dir.entropy / "eval.json").is_file():
        eval_summary = _read(run_dir.entropy / "eval.json")
    note = None
    if not progress:
        note = f"no training steps logged yet (job is {state})"
    return EntropyMetrics(
        job_id=job_id, state=state, entropy_weighting=entropy_weighting, steps_logged=len(progress),
        mean_entropy=latest.get(M.ENTROPY_MEAN, newest.get("mean") if newest else None),
        high_entropy_share=latest.get(M.HIGH_ENTROPY_SHARE, newest.get("high_entropy_share") if newest else None),
        latest=latest, series=downsample(progress, MAX_POINTS),
        per_epoch=[{"epoch": e.get("epoch"), "mean_entropy": e.get("mean"),
                    "high_entropy_share": e.get("high_entropy_share"), "threshold": e.get("threshold")}
                   for e in epochs],
        histogram=_histogram(newest) if newest else None,
        top_tokens=[TopToken(token=str(t.get("token", "")), id=int(t.get("id", -1)), count=int(t.get("count", 0)),
                             mean_entropy=float(t.get("mean_entropy", 0.0)))
                    for t in (newest or {}).get("top_tokens", [])[:TOP_TOKENS]],
        eval=eval_summary, note=note,
    )


def downsample(progress: list[dict[str, Any]], max_points: int) -> list[SeriesPoint]:
    """Split the steps into at most `max_points` consecutive runs; each point is a run's mean
    (noise averaged out, trends kept), labelled with the run's last step."""
    if not progress:
        return []
    size = math.ceil(len(progress) / max_points)
    points = []
    for start in range(0, len(progress), size):
        chunk = progress[start : start + size]
        values: dict[str, float | None] = {}
        for name, tag in SERIES_KEYS.items():
            nums = [e["metrics"][tag] for e in chunk if _finite(e["metrics"].get(tag))]
            values[name] = round(sum(nums) / len(nums), 6) if nums else None
        points.append(SeriesPoint(step=int(chunk[-1].get("step") or 0), **values))
    return points


def _histogram(epoch: dict[str, Any]) -> Histogram | None:
    sample = [h for h in epoch.get("entropies") or [] if _finite(h)]
    if not sample:
        return None
    low, high = min(sample), max(sample)
    width = max(high - low, 1e-6) / HISTOGRAM_BINS  # the sample's range: a narrow spread still shows
    counts = [0] * HISTOGRAM_BINS
    for h in sample:
        counts[min(HISTOGRAM_BINS - 1, int((h - low) / width))] += 1
    return Histogram(
        epoch=int(epoch.get("epoch") or 0),
        bin_edges=[round(low + i * width, 6) for i in range(HISTOGRAM_BINS + 1)],
        counts=counts, threshold=epoch.get("threshold"), tokens_sampled=len(sample),
    )


def _read(path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # being written (atomic rename makes this rare) or damaged: skip it


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@tool(annotations=ToolAnnotations(readOnlyHint=True))
async def get_entropy_metrics(
    job_id: Annotated[str, Field(description="Job id, e.g. 'ft-3f9a0c1b2d4e'.", max_length=64)],
    manager: JobManager = Depends(get_manager),
) -> EntropyMetrics:
    """Entropy-aware training metrics of a job (running or finished): mean token entropy,
    high-entropy share, weighted vs unweighted loss series (≤ 50 points), the newest
    token-entropy histogram and the top high-entropy tokens.
    Example: get_entropy_metrics("ft-3f9a0c1b2d4e") → {"mean_entropy": 2.31,
    "high_entropy_share": 0.1, "series": [{"step": 1, "loss": 6.2, "ce_loss": 5.9, ...}], ...}."""
    job = manager.get(job_id)
    return entropy_metrics(
        manager.run_dir(job_id), job_id=job.id, state=job.state.value,
        entropy_weighting=bool(job.config.get("enable_entropy_weighting")),
    )


TOOLS = (get_entropy_metrics,)
