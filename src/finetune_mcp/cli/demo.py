"""`finetune-mcp demo`: the offline demo (tiny model, synthetic tasks, entropy weighting off vs on)."""

from __future__ import annotations

import time
from pathlib import Path

from finetune_mcp.cli.app import app, console, friendly_errors
from finetune_mcp.config import Settings
from finetune_mcp.runs.rundir import RunDirectory


@app.command()
@friendly_errors
def demo() -> None:
    """Offline demo: a tiny model and synthetic tasks, entropy weighting off vs on over 3 seeds, and what that supports."""
    from finetune_mcp.cli.experiment import experiment_progress, print_results
    from finetune_mcp.demo import DEMO_SEEDS, run_demo
    from finetune_mcp.experiment.workflow import experiment_paths, run_experiment

    home = Settings.from_env().home
    console.print(f"[bold]finetune-mcp demo[/] — everything goes under {home}")
    started = time.time()

    def run(spec, run_dir: Path) -> None:
        with experiment_progress(run_dir, console, label="2 arms × 3 seeds"):
            run_experiment(spec, run_dir)

    report = run_demo(home, run=run)
    print_results(report.table, console, reference=("untrained base", report.base),
                  title=f"Entropy weighting off (standard) vs on (entropy), {DEMO_SEEDS} seeds each, same data and "
                  f"settings; held-out paraphrases ({report.table['heldout']['rows']} questions)")
    paths = experiment_paths(RunDirectory(report.experiment))
    console.print(f"model: {report.model_dir}\ndata: {report.dataset} (held out: {report.heldout})\n"
                  f"experiment: {report.experiment} (runs/<arm>-s<seed>/: adapter/, tensorboard/, entropy/)\n"
                  f"report: {paths['report']}\nplot: {paths['plot']}")
    logdirs = ",".join(f"{r['name']}:{Path(r['run_dir']) / 'tensorboard'}" for r in report.table["runs"])
    console.print(f"compare in TensorBoard: tensorboard --logdir_spec {logdirs}")
    console.print(f"[green]demo finished in {time.time() - started:.0f}s[/]")
