"""`finetune-mcp export`: a succeeded run to a verified GGUF + Ollama Modelfile, in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from finetune_mcp.cli.app import JobOrRunDir, app, console, finished_run, friendly_errors
from finetune_mcp.config import Settings


@app.command()
@friendly_errors
def export(
    job: JobOrRunDir,
    quantization: Annotated[str, typer.Option("--quantization", "-q", help="f16 | bf16 | q8_0 | q4_k_m | ... "
                                              "(q8_0: near-lossless; q4_k_m: the usual small one).")] = "q8_0",
    name: Annotated[str | None, typer.Option(help="File name stem (default: the base model's name).")] = None,
    verify_prompts: Annotated[int, typer.Option(help="Validation rows compared with transformers.")] = 8,
    run_dir: Annotated[Path | None, typer.Option(help="The export's own log/result folder (default: under runs/).")
                       ] = None,
) -> None:
    """Export a succeeded run to GGUF in this process: merge, convert and quantise with llama.cpp's own
    code, write an Ollama Modelfile, verify against the merged model; prints the GGUF's path."""
    from finetune_mcp.export.quantization import parse_quantization
    from finetune_mcp.export.spec import ExportSpec, check_export_start
    from finetune_mcp.export.workflow import run_export

    parse_quantization(quantization)
    run = finished_run(job, "a GGUF export")
    settings = Settings.from_env()
    source = run.read_json(run.spec) if run.spec.is_file() else {}
    spec = check_export_start(ExportSpec(
        source_job=run.root.name, source_run_dir=str(run.root), quantization=quantization, name=name,
        verify_prompts=verify_prompts, model=source.get("model", ""), dataset=source.get("dataset", "")), settings)
    target = run_dir or settings.runs_dir / f"export-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_export(spec, target)
    figures = result["verification"]
    console.print(f"[green]exported[/] {result['quantization']} ({result['size_bytes'] / 1e6:.1f} MB) in "
                  f"{result['runtime_s']:.0f}s; verified on {figures['prompts']} {figures['rows_from']} rows: greedy "
                  f"identical {figures['greedy_identical']}/{figures['prompts']}, token agreement "
                  f"{figures['greedy_token_agreement']:.3f}, top-1 {figures['top1_agreement']:.4f} (clear positions "
                  f"{figures['top1_agreement_clear']}), max |Δ logit| "
                  f"{figures['max_abs_logit_diff']:.4g}, perplexity {figures['perplexity_transformers']} → "
                  f"{figures['perplexity_gguf']}")
    for tool, command in result["commands"].items():
        console.print(f"{tool}: {command}")
    typer.echo(result["gguf"])
