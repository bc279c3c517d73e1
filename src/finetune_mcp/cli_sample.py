"""`finetune-mcp sample`: a sample job from the command line, followed to its end, shown as a table.

The job is a real job (the same SQLite table, queue and worker as `sample_model`), so get_job,
cancel and the model card see it. While waiting, this process also supervises the jobs of its
FINETUNE_MCP_HOME when no server does (otherwise the server launches the worker); Ctrl-C cancels
the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import Job
    from finetune_mcp.sample.spec import SampleSpec


def start_and_follow(manager: JobManager, spec: SampleSpec, console: Console, *, wait: bool) -> Job:
    """Queue the job; with `wait`, follow it to its end (supervising meanwhile). Ctrl-C cancels it."""
    started: list[Job] = []
    try:
        return anyio.run(_start_and_follow, manager, spec, console, wait, started)
    except KeyboardInterrupt:
        if not started:
            raise
        console.print(f"{started[0].id}: cancelling")
        return anyio.run(manager.cancel, started[0].id)


async def _start_and_follow(manager: JobManager, spec: SampleSpec, console: Console, wait: bool,
                            started: list[Job]) -> Job:
    from finetune_mcp import kinds

    job = await kinds.start_job(manager, "sample", spec, "local", roots=None)  # the user's own command
    started.append(job)
    console.print(f"{job.id}: queued on {job.device} ({len(spec.models)} model(s), "
                  f"{len(job.config.get('prompts') or []) or '?'} prompt(s))")
    if not wait:
        return job

    async def report(current: Job) -> None:
        console.print(f"{current.id}: {current.state.value} {current.step}/{current.total_steps or '?'} answers")

    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.wait(job.id, 7 * 24 * 3600, on_progress=report)
        tg.cancel_scope.cancel()
    return job


def print_samples(result: Any, console: Console) -> None:
    """One row per prompt (reference, then each model's marked answer with ✓/✗), then per-model totals."""
    labels = [m.label for m in result.models]
    table = Table("#", "prompt", "reference", *labels, show_lines=True)
    for row in result.samples:
        cells = []
        for label in labels:
            out = row.outputs[label]
            mark = {True: "[green]✓[/] ", False: "[red]✗[/] "}.get(out.normalized_match, "")
            cells.append(mark + _plain(out.marked))
        table.add_row(str(row.index), _plain(row.prompt), _plain(row.reference or "—"), *cells)
    console.print(table)
    for m in result.models:
        rate = f"{m.normalized_match_rate:.0%} of {m.answers_with_reference} match" \
            if m.normalized_match_rate is not None else "no references"
        speed = f"{m.tokens_per_s:.1f} tokens/s, first token {m.ttft_s:.3f} s" if m.tokens_per_s else "n/a"
        entropy = f"{m.mean_entropy:.3f}" if m.mean_entropy is not None else "n/a"
        console.print(f"{m.label}: {rate}, mean entropy {entropy} nats, {speed} ({m.backend} on {m.device})")
    if result.threshold is not None:
        console.print(f"⟦…⟧: entropy above {result.threshold:.4g} nats ({result.threshold_source})")


def _plain(text: str) -> str:
    """Rich markup off: '[' in an answer is text, not a style."""
    from rich.markup import escape

    return escape(text)
