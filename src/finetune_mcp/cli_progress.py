"""A progress bar for in-process training, fed by the run's own events.jsonl.

Why read events instead of hooking the trainer: the bar then shows exactly what the job manager
and MCP clients see, and the workers stay free of any terminal code.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory


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
