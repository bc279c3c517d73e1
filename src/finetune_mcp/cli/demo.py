"""`finetune-mcp demo`: the offline demo (a real model learning a task it gets wrong; `--tiny`: the tiny
model's entropy experiment)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from finetune_mcp.cli.app import app, console, friendly_errors
from finetune_mcp.config import Settings
from finetune_mcp.runs.rundir import RunDirectory


@app.command()
@friendly_errors
def demo(
    real: Annotated[bool, typer.Option("--real/--tiny", help="The real model (SmolLM2-135M-Instruct from its GGUF) "
                                       "learning a task it gets wrong, or the tiny random model's entropy experiment.")
                    ] = True,
    steps: Annotated[int | None, typer.Option(help="Training steps of the real-model demo (default: 60 with CUDA, "
                                              "10 on the CPU).")] = None,
) -> None:
    """Offline demo: a real model (SmolLM2 from its GGUF) answers held-out questions before and after a short LoRA
    run; `--tiny`: a tiny model and synthetic tasks, entropy weighting off vs on over 3 seeds."""
    from finetune_mcp.cli.experiment import experiment_progress, print_results
    from finetune_mcp.cli.train import run_with_progress
    from finetune_mcp.demo import DEMO_SEEDS, print_real_demo, run_demo, run_real_demo
    from finetune_mcp.experiment.workflow import experiment_paths, run_experiment

    home = Settings.from_env().home
    console.print(f"[bold]finetune-mcp demo[/] — everything goes under {home}")
    started = time.time()
    if real:
        def run_real(config, run_dir: Path) -> None:
            run_with_progress(config, run_dir, label="SmolLM2 LoRA", console=console)

        print_real_demo(run_real_demo(home, run=run_real, max_steps=steps or (60 if _has_cuda() else 10)), console)
        console.print(f"[green]demo finished in {time.time() - started:.0f}s[/]")
        return

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


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
