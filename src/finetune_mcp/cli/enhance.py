"""`finetune-mcp enhance`: student–teacher dataset enhancement in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from finetune_mcp.cli.app import app, console, fmt, friendly_errors
from finetune_mcp.config import Settings


@app.command()
@friendly_errors
def enhance(
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON StudentTeacherConfig.")] = None,
    model: Annotated[str | None, typer.Option(help="The student: the model you will fine-tune.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Conversations; the last assistant reply is the reference.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher model on an OpenAI-compatible endpoint, or hf:<model>.")] = None,
    teacher_base_url: Annotated[str | None, typer.Option(help="e.g. http://127.0.0.1:8000/v1 (default OpenAI's).")] = None,
    teacher_api_key_env: Annotated[str | None, typer.Option(help="NAME of the variable holding the key.")] = None,
    judge: Annotated[str | None, typer.Option(help="reference[:exact|:normalized|:regex] or a judge model.")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Rounds per example.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Seeded subset size.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write (default: a new folder under runs/).")] = None,
) -> None:
    """Student–teacher dataset enhancement in this process; prints the enhanced dataset's path."""
    from finetune_mcp.enhance.config import enhance_config_from
    from finetune_mcp.enhance.workflow import run_enhancement

    config = enhance_config_from(config_file, model=model, dataset=dataset, teacher=teacher,
                                 teacher_base_url=teacher_base_url, teacher_api_key_env=teacher_api_key_env,
                                 judge=judge, max_iterations=max_iterations, max_examples=max_examples)
    target = run_dir or Path(config.run_dir or Settings.from_env().runs_dir / f"enhance-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_enhancement(config, target)
    console.print(f"[green]done[/] in {summary['elapsed_s']:.1f}s: {summary['enhanced_examples']} examples, convergence "
                  f"{summary['convergence_rate']:.0%}, {summary['hints_given']} hints, mean weight "
                  f"{fmt(summary['weight_mean'])}")
    typer.echo(summary["files"]["enhanced"])

