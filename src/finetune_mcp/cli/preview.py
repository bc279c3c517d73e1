"""`finetune-mcp preview`: the dry run from the command line. People get a readable summary (or
`--json`: one object, {"report": {...}} or {"error": "...", "kind": "DatasetError"} with exit code 2).
`--serve` is the MCP tool's warm child (`preview.child.serve_previews`, beside the server's half);
`--spec-stdin` reads the whole config as JSON from stdin. Flags generated from the config groups."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from finetune_mcp.cli.app import ConfigFile, app
from finetune_mcp.cli.options import config_from, training_options
from finetune_mcp.config import EnhancedTrainingConfig, build_config
from finetune_mcp.config.knobs import TYPED_KNOBS
from finetune_mcp.errors import ConfigError, FinetuneError
from finetune_mcp.preview.report import duration

out = Console()
err = Console(stderr=True)


@app.command()
@training_options("model", "dataset", *TYPED_KNOBS)
def preview(
    config_file: ConfigFile = None,
    target: Annotated[str, typer.Option(help="auto | local | runpod, as start_finetune.")] = "auto",
    examples: Annotated[int, typer.Option(help="Examples to render.", min=0, max=20)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    spec_stdin: Annotated[bool, typer.Option("--spec-stdin", hidden=True,
                                             help="Read the whole config as JSON from stdin.")] = False,
    serve: Annotated[bool, typer.Option("--serve", hidden=True,
                                        help="Answer JSON requests line by line on stdin (the MCP tool's child).")] = False,
    **knobs: Any,
) -> None:
    """Dry run: the format, rows, rendered examples with the trained tokens marked, lengths, steps, memory,
    placement, time and cost that `train` / start_finetune would have. Loads no weights, writes nothing."""
    if serve:
        from finetune_mcp.preview.child import serve_previews

        return serve_previews()
    run_preview(config_from_stdin if spec_stdin else lambda: config_from(config_file, knobs), target,
                examples=examples, as_json=as_json)


def run_preview(make_config: Callable[[], EnhancedTrainingConfig], target: str, *, examples: int,
                as_json: bool) -> None:
    """Build the config, run the dry run, print it; a FinetuneError is a message (or JSON) and exit 2."""
    try:
        config = make_config()
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


def config_from_stdin() -> EnhancedTrainingConfig:
    """The MCP tool's way in: the whole config as JSON on stdin."""
    try:
        data = json.loads(sys.stdin.read())
    except ValueError as exc:
        raise ConfigError(f"the config on stdin is not JSON ({exc})") from None
    return build_config(data)


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
