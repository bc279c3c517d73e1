"""`finetune-mcp sample`: a sample job from the command line, followed to its end, shown as a table.

The job is a real job (the same SQLite table, queue and worker as `sample_model`), so get_job,
cancel and the model card see it. While waiting, this process also supervises the jobs of its
FINETUNE_MCP_HOME when no server does (otherwise the server launches the worker); Ctrl-C cancels
the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table

from finetune_mcp.cli.app import app, console, friendly_errors

if TYPE_CHECKING:
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import Job
    from finetune_mcp.sample.spec import SampleSpec


@app.command()
@friendly_errors
def sample(
    job: Annotated[str, typer.Argument(help="A succeeded training job id (e.g. ft-3f9a0c1b2d4e), or a model "
                                       "folder / Hub id / LoRA adapter folder.")],
    prompts: Annotated[list[str] | None, typer.Argument(help="Questions to ask (default: the job's first "
                                                        "held-out validation rows).")] = None,
    rows: Annotated[int | None, typer.Option(help="Ask this many dataset rows instead of prompts (default 8).")] = None,
    seeded: Annotated[bool, typer.Option(help="A seeded random choice of rows instead of the first ones.")] = False,
    dataset: Annotated[str | None, typer.Option(help="Take the rows from this dataset (all its rows).")] = None,
    base: Annotated[bool, typer.Option("--base/--no-base", help="The base model answers too.")] = True,
    compare_with: Annotated[str | None, typer.Option(help="Another job whose adapter answers too.")] = None,
    merged: Annotated[bool, typer.Option(help="Sample the job's merged/ model instead of its adapter.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0: greedy (reproducible).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (with --temperature > 0).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job and print its answers.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result (get_samples) as JSON.")] = False,
) -> None:
    """Sample a model as a job (what sample_model does): answers side by side with the base model's, the
    high-entropy tokens marked ⟦…⟧; prints a table (or --json) when it ends."""
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import JobState
    from finetune_mcp.sample.results import read_result
    from finetune_mcp.tools.sample import sample_spec_for

    is_job = job.startswith("ft-") and not Path(job).expanduser().exists()
    manager = JobManager()
    try:
        spec = sample_spec_for(
            manager, job_id=job if is_job else None, model=None if is_job else job, prompts=list(prompts or []),
            dataset=dataset, num_rows=rows, rows_order="seeded" if seeded else "first", rows_seed=seed,
            rows_split="auto", compare_with_base=base, compare_with=compare_with,
            weights="merged" if merged else "adapter", high_entropy_threshold=None,
            settings={"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                      "batch_size": batch_size})
        ended = start_and_follow(manager, spec, console, wait=wait)
    finally:
        manager.close()
    if not wait:
        typer.echo(ended.id)
        return
    if ended.state is not JobState.SUCCEEDED:
        console.print(f"[bold red]{ended.id} {ended.state.value}:[/] {ended.error or ''}")
        raise typer.Exit(1)
    result = read_result(ended.run_dir)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_samples(result, Console())
        typer.echo(f"{ended.run_dir}/result.json")


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
