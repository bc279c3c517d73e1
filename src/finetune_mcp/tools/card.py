"""`generate_model_card`: card/README.md (Hub metadata, entropy section, plots, sample answers) for a succeeded job."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp import kinds
from finetune_mcp.errors import ConfigError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.report.card import write_model_card
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.tools import get_manager

JobId = Annotated[str, Field(description="Job id, e.g. 'ft-3f9a0c1b2d4e'.", max_length=64)]


class ModelCardResult(BaseModel):
    job_id: str
    path: str = Field(description="card/README.md in the job's run directory.")
    plots: list[str] = Field(description="PNG plots beside it (card/plots/), referenced by the card.")
    compare_with: str | None
    size_bytes: int
    markdown: str = Field(description="The card, YAML metadata header included.")


def succeeded_run(manager: JobManager, job_id: str, purpose: str) -> RunDirectory:
    """The run directory of a training job that succeeded; a JobError naming what is wrong otherwise."""
    kinds.succeeded_job(manager, job_id, purpose)
    return manager.run_dir(job_id)


def run_samples(manager: JobManager, job_id: str) -> dict[str, Any] | None:
    """The result.json of the newest succeeded sample job of `job_id` that sampled its base too (the
    card's base-vs-tuned table), or None."""
    from finetune_mcp.sample.results import latest_sample_of

    job = latest_sample_of(manager.list("succeeded", 500), job_id)
    if job is None:
        return None
    try:
        return json.loads((Path(job.run_dir) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_card_result(job_id: str, run: RunDirectory, compare_with: str | None,
                      other: RunDirectory | None, samples: dict[str, Any] | None = None) -> ModelCardResult:
    """Write the card and describe it (shared by the tool and the CLI)."""
    readme, plots = write_model_card(run, other, samples=samples)
    markdown = readme.read_text(encoding="utf-8")
    return ModelCardResult(job_id=job_id, path=str(readme), plots=[str(p) for p in plots.values()],
                           compare_with=compare_with, size_bytes=len(markdown.encode()), markdown=markdown)


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True))
async def generate_model_card(
    job_id: JobId,
    compare_with: Annotated[str | None, Field(
        description="Another succeeded job (e.g. the unweighted run of an A/B): its loss and entropy "
        "curves go on one plot with this job's, and the final metrics side by side.", max_length=64)] = None,
    manager: JobManager = Depends(get_manager),
) -> ModelCardResult:
    """Write a Hugging Face model card for a succeeded job: Hub metadata (base_model, peft, tags,
    license when known), every hyperparameter, versions, device, wall time, the entropy weighting
    used, token-entropy box plots per epoch, the top high-entropy tokens, the validation entropy,
    loss curves, eval results, limitations and loading snippets, and, when a sample_model job sampled
    this job and its base, a small table of their answers side by side. Overwrites card/README.md.
    Example: generate_model_card("ft-3f9a0c1b2d4e", compare_with="ft-0a1b2c3d4e5f") →
    {"path": ".../card/README.md", "plots": [".../card/plots/loss.png", ...], "markdown": "---\\n..."}."""
    if compare_with == job_id:
        raise ConfigError(f"compare_with names {job_id} itself; compare with another succeeded job (list_jobs), "
                          "or leave compare_with out", field="compare_with")
    run = succeeded_run(manager, job_id, "a model card")
    other = succeeded_run(manager, compare_with, "the comparison") if compare_with else None
    samples = run_samples(manager, job_id)
    return await anyio.to_thread.run_sync(functools.partial(model_card_result, job_id, run, compare_with, other,
                                                            samples))


TOOLS = (generate_model_card,)
