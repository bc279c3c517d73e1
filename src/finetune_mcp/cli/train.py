"""`finetune-mcp train`: fine-tune in this process with a progress bar fed by the run's own
events.jsonl (what the job manager and MCP clients see too; the workers stay free of terminal code).
Its flags are generated from the config groups (`cli.options`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from finetune_mcp.cli.app import ConfigFile, app, console, fmt, friendly_errors
from finetune_mcp.cli.options import config_from, training_options
from finetune_mcp.config import EnhancedTrainingConfig, Settings
from finetune_mcp.config.knobs import TYPED_KNOBS
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory


@app.command()
@friendly_errors
@training_options("model", "dataset", *TYPED_KNOBS, "backend", "seed")
def train(
    config_file: ConfigFile = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write the run (default: a new folder under runs/).")] = None,
    **knobs: Any,
) -> None:
    """Fine-tune in this process, with a progress bar; writes a run directory."""
    config = config_from(config_file, knobs)
    target = run_dir or Path(config.run_dir or Settings.from_env().runs_dir / f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_with_progress(config, target)
    console.print(f"[green]done[/] in {result['train_runtime_s']:.1f}s: loss {fmt(result['metrics'].get(M.LOSS))}, "
                  f"entropy {fmt(result['metrics'].get(M.ENTROPY_MEAN))} nats")
    ranking = result.get("ranking") or {}
    if ranking.get("after"):  # task=rerank: the held-out queries before and after training
        console.print(f"ranking on {ranking['num_queries']} held-out queries (before → after): " + ", ".join(
            f"{name} {fmt(ranking['before'].get(name))} → {fmt(value)}" for name, value in ranking["after"].items()))
    console.print(f"run directory: {target}\nadapter: {RunDirectory(target).adapter}\n"
                  f"TensorBoard: tensorboard --logdir {RunDirectory(target).tensorboard}")


def run_with_progress(
    config: EnhancedTrainingConfig, run_dir: Path, *, label: str = "training", console: Console | None = None
) -> dict[str, Any]:
    """Run `run_training` in a thread while drawing a bar from events.jsonl; re-raise its error."""
    from finetune_mcp.train.workflow import run_training

    run = RunDirectory(run_dir).create()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run_training(config, run_dir)
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc

    _, offset = run.read_events()  # resume-safe: only new events
    worker = threading.Thread(target=target, name="finetune-train", daemon=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=None, info="loading model and data")
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            events, offset = run.read_events(offset)
            for event in events:
                total = event.get("total_steps")
                metrics = event.get("metrics") or {}
                info = ""
                if M.LOSS in metrics:
                    info = f"loss {metrics[M.LOSS]:.3f}  H {metrics.get(M.ENTROPY_MEAN, float('nan')):.3f}"
                progress.update(task, total=total or None, completed=event.get("step", 0), info=info)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
