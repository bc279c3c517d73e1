"""`finetune-mcp card | screenshot | deploy`: see a run and ship it (mirrors of the MCP tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetune_mcp.cli.app import CompareWith, JobOrRunDir, app, console, finished_run, friendly_errors, with_manager
from finetune_mcp.errors import ConfigError


@app.command()
@friendly_errors
def card(job: JobOrRunDir, compare_with: CompareWith = None) -> None:
    """Write the model card (card/README.md + PNG plots) of a succeeded run; prints the README path."""
    from finetune_mcp.report.card import write_model_card
    from finetune_mcp.tools.card import run_samples

    run = finished_run(job, "a model card")
    samples = None if Path(job).expanduser().is_dir() else with_manager(lambda m: run_samples(m, job))
    readme, plots = write_model_card(run, finished_run(compare_with, "the comparison"), samples=samples)
    console.print(f"model card: {readme.stat().st_size} bytes, {len(plots)} plots in {readme.parent}")
    typer.echo(str(readme))


@app.command()
@friendly_errors
def screenshot(
    job: JobOrRunDir,
    tag: Annotated[list[str] | None, typer.Option(help="A TensorBoard tag to show (repeat the option).")] = None,
    view: Annotated[str, typer.Option(help="scalars | histograms")] = "scalars",
    compare_with: Annotated[list[str] | None, typer.Option(
        "--compare-with", "-c", help="Other job ids or run directories on the same charts (repeatable).")] = None,
    allow_matplotlib: Annotated[bool, typer.Option(help="Without Chromium, draw with matplotlib instead.")] = False,
) -> None:
    """Screenshot the run's TensorBoard page (real TensorBoard, headless Chromium); prints the PNG path."""
    from finetune_mcp.report.screenshot import take_screenshot

    if view not in ("scalars", "histograms"):
        raise ConfigError(f"must be scalars or histograms (got {view!r})", field="view")
    runs = [finished_run(j, "a screenshot") for j in [job, *(compare_with or [])]]
    shot = take_screenshot(runs, server=None, tags=tag, view=view, fallback=allow_matplotlib)  # type: ignore[arg-type]
    console.print(f"{shot.renderer} {view} of {', '.join(shot.runs)} ({shot.width}x{shot.height}, {shot.seconds}s)")
    typer.echo(str(shot.path))


@app.command()
@friendly_errors
def deploy(
    job: JobOrRunDir,
    repo: Annotated[str, typer.Argument(help="Hub repo 'owner/name' (or 'name' under your account).")],
    public: Annotated[bool, typer.Option(help="Create the repo public (default: private).")] = False,
    merge: Annotated[bool, typer.Option(help="Upload a merged 16-bit model instead of the LoRA adapter.")] = False,
    include_gguf: Annotated[bool, typer.Option(help="Also upload the run's GGUF exports + Modelfiles "
                                               "(finetune-mcp export).")] = False,
    compare_with: CompareWith = None,
) -> None:
    """Upload a succeeded run to the Hugging Face Hub in one commit: adapter (or merged model), card,
    plots, metrics. The token comes from HF_TOKEN or `hf auth login` (no flag: it would stay in your
    shell history)."""
    from finetune_mcp.report.deploy import deploy_run

    run = finished_run(job, "a deployment")
    result = deploy_run(run, repo, private=not public, merge=merge, include_gguf=include_gguf,
                        compare_with=finished_run(compare_with, "the comparison"))
    console.print(f"[green]deployed[/] {len(result.files)} files ({result.bytes_uploaded / 1e6:.1f} MB) in commit "
                  f"{result.commit_oid[:12]}, {'private' if result.private else 'public'}")
    typer.echo(result.url)
