"""`finetune-mcp jobs | status | cancel | logs`: the job table the MCP server keeps, from a shell
(the same SQLite file, whether or not a server runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from finetune_mcp.cli.app import app, console, friendly_errors, with_manager
from finetune_mcp.runs import metric_names as M


@app.command()
@friendly_errors
def jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """List jobs (the same table the MCP server keeps)."""
    from rich.table import Column, Table

    table = Table(Column("id", min_width=15, no_wrap=True), Column("state", min_width=12), "step", "loss",
                  "device", Column("model", overflow="ellipsis", no_wrap=True), Column("created", no_wrap=True))
    for job in with_manager(lambda m: m.list(state, limit)):
        loss = job.metrics.get(M.LOSS)
        table.add_row(job.id, job.state.value, f"{job.step}/{job.total_steps or '?'}",
                      f"{loss:.4f}" if isinstance(loss, float) else "", job.device,
                      Path(job.config.get("model", "")).name, time.strftime("%m-%d %H:%M", time.localtime(job.created_at)))
    Console().print(table)


@app.command()
@friendly_errors
def status(job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")]) -> None:
    """Show one job as JSON (what the get_job tool returns)."""
    from finetune_mcp.tools.training import job_view

    view = with_manager(lambda m: job_view(m, m.get(job_id), with_result=True))
    typer.echo(view.model_dump_json(indent=2))


@app.command()
@friendly_errors
def cancel(job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")]) -> None:
    """Cancel a queued or running job (SIGTERM, then SIGKILL after the grace period)."""
    import anyio

    job = with_manager(lambda m: anyio.run(m.cancel, job_id))
    console.print(f"{job.id}: {job.state.value}" + (f" ({job.error.splitlines()[0]})" if job.error else ""))


@app.command()
@friendly_errors
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print the end of a job's train.log; with --follow, keep going until the job ends."""
    from finetune_mcp.jobs.manager import JobManager

    manager = JobManager()
    try:
        run_dir = manager.run_dir(job_id)
        typer.echo(run_dir.tail_log(lines))
        offset = run_dir.log.stat().st_size if run_dir.log.exists() else 0
        while follow:
            time.sleep(1.0)
            ended = manager.get(job_id).state.terminal  # read before the log: its last lines still print
            if run_dir.log.exists():
                with run_dir.log.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                typer.echo(chunk.decode("utf-8", errors="replace"), nl=False)
            follow = not ended
    finally:
        manager.close()
