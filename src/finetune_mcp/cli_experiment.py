"""The terminal side of experiments: a progress bar over all runs (from the experiment's own
events.jsonl, what the job manager reads too) and the table as rich tables. Used by
`finetune-mcp experiment`, `finetune-mcp experiment-table` and `finetune-mcp demo`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory


@contextlib.contextmanager
def experiment_progress(run_dir: Path, console: Console, label: str = "experiment") -> Iterator[None]:
    """Draw a bar from `run_dir`'s events while the body runs the experiment in this thread (so
    Ctrl-C reaches it: the finished runs are then summarised before it stops)."""
    run = RunDirectory(run_dir)
    _, offset = run.read_events()
    stop = threading.Event()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=None, info="loading data and model")

        def follow() -> None:
            nonlocal offset
            while not stop.wait(0.25):
                events, offset = run.read_events(offset)
                for event in events:
                    metrics = event.get("metrics") or {}
                    info = f"run {event['run']}" if event.get("run") else ""
                    if M.LOSS in metrics:
                        info += f"  loss {metrics[M.LOSS]:.3f}"
                    progress.update(task, total=event.get("total_steps") or None, completed=event.get("step", 0),
                                    info=info)

        thread = threading.Thread(target=follow, name="experiment-bar", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=2)


def _num(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def results_table(table: dict[str, Any], title: str | None = None,
                  reference: tuple[str, dict[str, float]] | None = None) -> Table:
    """Per metric: each arm's mean ± std (and each seed's value), and each arm minus the baseline with
    its 95 % interval; `reference` (a name and its metrics, e.g. the untrained base) as a first column."""
    arms = [a["name"] for a in table["arms"]]
    baseline = table["baseline"]
    n = len(table["seeds"])
    out = Table(title=title or f"{' vs '.join(arms)}: {table['runs_finished']} of {table['runs_total']} runs, "
                f"{n} seeds (mean ± std; each seed)")
    out.add_column("metric")
    if reference is not None:
        out.add_column(reference[0], justify="right")
    for arm in arms:
        out.add_column(arm, justify="right")
    for arm in arms:
        if arm != baseline:
            out.add_column(f"{arm} − {baseline} [95 % CI]", justify="right")
    comparisons = {(c["metric"], c["arm"]): c for c in table["comparisons"]}
    for metric in table["metrics"]:
        name = metric["name"]
        cells = [_num(reference[1].get(name))] if reference is not None else []
        for arm in arms:
            s = table["summary"][name][arm]
            each = ", ".join(_num(v, 3) for v in s["values"].values())
            cells.append(f"{_num(s['mean'])} ± {_num(s['std'], 2)}\n({each})" if s["n"] else "—")
        for arm in arms:
            if arm != baseline:
                c = comparisons[(name, arm)]
                cells.append("—" if c["ci_low"] is None else
                             f"{c['mean_difference']:+.3g} [{c['ci_low']:+.3g}, {c['ci_high']:+.3g}]")
        better = {"higher": " ↑", "lower": " ↓"}.get(metric["better"] or "", "")
        out.add_row(metric["label"] + better, *cells)
    return out


def print_results(table: dict[str, Any], console: Console, *, title: str | None = None,
                  reference: tuple[str, dict[str, float]] | None = None) -> None:
    Console().print(results_table(table, title, reference))
    console.print(f"[bold]verdict[/] ({table['primary_metric']}): {table['verdict']}")
    recommendation = table["recommendation"]
    console.print(f"[bold]which arm:[/] {recommendation['reason']}")
    overhead = table["overhead"]
    if overhead.get("later_runs_mean_s") is not None:
        console.print(f"overhead per run beyond its training steps: first {overhead['first_run_s']:.1f} s (loads the "
                      f"model), later runs {overhead['later_runs_mean_s']:.1f} s on average")
