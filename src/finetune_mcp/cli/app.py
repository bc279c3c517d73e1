"""The Typer application every command module adds its commands to, and what they share: the
error console, `friendly_errors` (a FinetuneError becomes a red line and exit code 2), a short-lived
JobManager, and the "job id or run directory" argument."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from finetune_mcp.errors import FinetuneError
from finetune_mcp.runs.rundir import RunDirectory

app = typer.Typer(
    name="finetune-mcp",
    help="Fine-tune LLMs (LoRA/QLoRA, entropy-aware) from an AI agent over MCP, or from this CLI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Run one job in this process (started by the job manager).", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

console = Console(stderr=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a FinetuneError into a one-line message and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FinetuneError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def with_manager(fn: Callable[..., Any]) -> Any:
    """Call `fn(manager)` with a JobManager on this home, closed after."""
    from finetune_mcp.jobs.manager import JobManager

    manager = JobManager()
    try:
        return fn(manager)
    finally:
        manager.close()


def finished_run(job: str | None, purpose: str) -> RunDirectory | None:
    """A succeeded job's run directory, or a run directory given as a path (the demo's, `train --run-dir`)."""
    if job is None:
        return None
    path = Path(job).expanduser()
    if path.is_dir():
        return RunDirectory(path.resolve())
    from finetune_mcp.tools.card import succeeded_run

    return with_manager(lambda m: succeeded_run(m, job, purpose))


JobOrRunDir = Annotated[str, typer.Argument(help="Job id (e.g. ft-3f9a0c1b2d4e) or a run directory.")]
CompareWith = Annotated[str | None, typer.Option(
    "--compare-with", "-c", help="Another job id or run directory to compare with (e.g. the unweighted run).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON EnhancedTrainingConfig.")]
