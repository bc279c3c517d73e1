"""`finetune-mcp preview`: the dry run from the command line, and the child process of the MCP tool.

People get a readable summary (or `--json`); the `preview_training` tool runs this command with
`--spec-stdin --json` so that transformers (and torch, which it imports) stay out of the server.
In that mode the answer is one JSON object on stdout: {"report": {...}} or {"error": "...",
"kind": "DatasetError"} (exit code 2), so the tool can raise exactly the error text start_finetune
would give.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from finetune_mcp.config import EnhancedTrainingConfig, build_config
from finetune_mcp.errors import FinetuneError
from finetune_mcp.preview.report import duration

out = Console()
err = Console(stderr=True)


def preview(
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON EnhancedTrainingConfig.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id or local model folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Local file/folder or hub dataset id.")] = None,
    target: Annotated[str, typer.Option(help="auto | local | runpod, as start_finetune.")] = "auto",
    entropy_weight: Annotated[
        bool | None, typer.Option("--entropy-weight/--no-entropy-weight", help="Entropy-weighted loss.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Number of epochs.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Seeded subset size.")] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    load_in_4bit: Annotated[bool | None, typer.Option("--load-in-4bit/--no-load-in-4bit")] = None,
    task: Annotated[str | None, typer.Option(help="sft | rerank.")] = None,
    examples: Annotated[int, typer.Option(help="Examples to render.", min=0, max=20)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    spec_stdin: Annotated[bool, typer.Option("--spec-stdin", hidden=True,
                                             help="Read the whole config as JSON from stdin (the MCP tool).")] = False,
) -> None:
    """Dry run: the format, rows, rendered examples with [[trained]] tokens, lengths, steps, memory,
    placement, time and cost that `train` / start_finetune would have. Loads no weights, writes nothing."""
    from finetune_mcp.cli import _load_config

    try:
        if spec_stdin:
            config = build_config(json.loads(sys.stdin.read()))
        else:
            config = _load_config(config_file, {
                "model": model, "dataset": dataset, "enable_entropy_weighting": entropy_weight,
                "max_steps": max_steps, "num_train_epochs": epochs, "max_examples": max_examples,
                "max_seq_length": max_seq_length, "learning_rate": learning_rate,
                "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
                "lora_r": lora_r, "load_in_4bit": load_in_4bit, "task": task,
            })
        from finetune_mcp.preview.dry_run import preview_training

        report = preview_training(config, target, examples=examples)
    except FinetuneError as exc:
        if as_json:
            typer.echo(json.dumps({"error": str(exc), "kind": type(exc).__name__}))
        else:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"report": report.model_dump(mode="json")}))
    else:
        _print(report.model_dump(mode="json"), config)


def _print(r: dict[str, Any], config: EnhancedTrainingConfig) -> None:
    d, n, e = r["data"], r["lengths"], r["estimate"]
    out.print(f"[bold]{escape(r['model'])}[/] on [bold]{escape(r['dataset'])}[/] (task {r['task']})")
    out.print(f"format: {d['format']} — {escape(d['format_reason'])}")
    removed = ", ".join(f"{k}: {v}" for k, v in d["removed_by_filter"].items()) or "none"
    out.print(f"rows: {d['rows_read']} read, filtered out {removed}, {d['rows_kept']} kept → {d['train_rows']} train"
              f" / {d['validation_rows']} validation" + (f", ~{d['dropped_rows']} dropped" if d["dropped_rows"] else ""))
    for ex in r["examples"]:
        out.print(f"\n[bold]example (row {ex['row']})[/]: {ex['tokens']} tokens, {ex['trained_tokens']} trained, "
                  f"{ex['masked_tokens']} masked" + (" [yellow](truncated)[/]" if ex["truncated"] else ""))
        out.print(_highlight(ex["text"]), highlight=False)
    out.print(f"\nlengths (tokens, {n['sampled_rows']} rows): min {n['min']}, median {n['median']:g}, "
              f"p95 {n['p95']:g}, max {n['max']}; truncated at {config.max_seq_length}: {n['truncated']} "
              f"({n['truncated_share']:.1%}) — {escape(n['truncated_part'])}")
    out.print(f"per epoch: {n['tokens_per_epoch']:,} tokens ({n['trained_tokens_per_epoch']:,} trained), "
              f"{n['steps_per_epoch']} steps; run: {n['total_steps']} steps ({n['epochs']:g} epochs, warm-up "
              f"{n['warmup_steps']}), ~{n['padded_tokens_per_step']:,} tokens a step")
    if e["refused"]:
        out.print(f"[bold red]placement: refused[/] — {escape(e['refused'])}")
    else:
        gpu = f" {e['gpu']}" + (f" × {e['gpu_count']}" if e["gpu_count"] > 1 else "") if e["gpu"] else ""
        out.print(f"placement: {e['backend']} {e['device']}{escape(gpu)} — {escape(e['reason'])}")
    if e["memory_gb"] is not None:
        out.print(f"memory: ~{e['memory_gb']:.1f} GB")
    if e["total_seconds"] is not None:
        cost = f", ~${e['cost_usd']:.2f} at ${e['price_per_hr']:g}/h" if e["cost_usd"] is not None else ""
        out.print(f"time: ~{duration(e['seconds_per_step'])} a step, ~{duration(e['total_seconds'])} in all{cost}")
    out.print(f"[dim]estimate basis: {escape(e['basis'])}[/]")
    for w in r["warnings"]:
        out.print(f"[yellow]warning[/] {escape('[' + w['code'] + ']')} {escape(w['message'])}\n  fix: {escape(w['fix'])}")
    out.print(f"\n{escape(r['hint'])}")


def _highlight(text: str) -> str:
    """The example text with its [[trained]] spans in green (rich markup, the rest escaped)."""
    parts, rest = [], text
    while "[[" in rest and "]]" in rest[rest.index("[["):]:
        start = rest.index("[[")
        end = rest.index("]]", start) + 2
        parts += [escape(rest[:start]), f"[bold green]{escape(rest[start:end])}[/]"]
        rest = rest[end:]
    return "".join([*parts, escape(rest)])
