"""The `finetune-mcp` command line: the same operations as the MCP tools, for people and scripts.

Heavy imports (torch, transformers, TRL) happen inside the commands that train, so `--help`, `serve`
and the job commands start fast. A `FinetuneError` becomes a red message and exit code 2.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from finetune_mcp.cli_preview import config_from_stdin, run_preview, serve_previews
from finetune_mcp.cli_progress import run_with_progress
from finetune_mcp.config import EnhancedTrainingConfig, Settings, build_config
from finetune_mcp.config.methods import METHOD_NAMES
from finetune_mcp.errors import ConfigError, FinetuneError
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory

METHOD_HELP = f"Training method: {' | '.join(METHOD_NAMES)} (default sft); --task is its older name."

app = typer.Typer(
    name="finetune-mcp",
    help="Fine-tune LLMs (LoRA/QLoRA, entropy-aware) from an AI agent over MCP, or from this CLI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Run one job in this process (started by the job manager).", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

console = Console(stderr=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a FinetuneError into a one-line message and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FinetuneError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _load_config(config_file: Path | None, overrides: dict[str, Any]) -> EnhancedTrainingConfig:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        return EnhancedTrainingConfig.from_file(config_file, **overrides)
    missing = [name for name in ("model", "dataset") if name not in overrides]
    if missing:
        raise ConfigError(f"missing {' and '.join('--' + m for m in missing)}; pass them or --config FILE")
    return build_config(overrides)


@app.command()
@friendly_errors
def train(
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON EnhancedTrainingConfig.")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id or local model folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Local file/folder or hub dataset id.")] = None,
    entropy_weight: Annotated[
        bool | None, typer.Option("--entropy-weight/--no-entropy-weight", help="Entropy-weighted loss.")
    ] = None,
    entropy_fn: Annotated[str | None, typer.Option(help="linear | relu | exponential | sigmoid | pkg.mod:fn")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Number of epochs.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Seeded subset size.")] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    load_in_4bit: Annotated[bool | None, typer.Option("--load-in-4bit/--no-load-in-4bit")] = None,
    backend: Annotated[str | None, typer.Option(help="auto | unsloth | hf")] = None,
    method: Annotated[str | None, typer.Option("--method", "--task", help=METHOD_HELP)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write the run (default: a new folder under runs/).")] = None,
) -> None:
    """Fine-tune in this process, with a progress bar; writes a run directory."""
    config = _load_config(config_file, {
        "model": model, "dataset": dataset, "enable_entropy_weighting": entropy_weight,
        "entropy_weight_fn": entropy_fn, "max_steps": max_steps, "num_train_epochs": epochs,
        "max_examples": max_examples, "max_seq_length": max_seq_length, "learning_rate": learning_rate,
        "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
        "lora_r": lora_r, "load_in_4bit": load_in_4bit, "backend": backend, "seed": seed, "method": method,
    })
    target = run_dir or Path(config.run_dir or Settings.from_env().runs_dir / f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_with_progress(config, target)
    console.print(f"[green]done[/] in {result['train_runtime_s']:.1f}s: loss {_fmt(result['metrics'].get(M.LOSS))}, "
                  f"entropy {_fmt(result['metrics'].get(M.ENTROPY_MEAN))} nats")
    ranking = result.get("ranking") or {}
    if ranking.get("after"):  # task=rerank: the held-out queries before and after training
        console.print(f"ranking on {ranking['num_queries']} held-out queries (before → after): " + ", ".join(
            f"{name} {_fmt(ranking['before'].get(name))} → {_fmt(value)}" for name, value in ranking["after"].items()))
    console.print(f"run directory: {target}\nadapter: {RunDirectory(target).adapter}\n"
                  f"TensorBoard: tensorboard --logdir {RunDirectory(target).tensorboard}")


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
                  f"{_fmt(summary['weight_mean'])}")
    typer.echo(summary["files"]["enhanced"])


@app.command()
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
    method: Annotated[str | None, typer.Option("--method", "--task", help=METHOD_HELP)] = None,
    examples: Annotated[int, typer.Option(help="Examples to render.", min=0, max=20)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    spec_stdin: Annotated[bool, typer.Option("--spec-stdin", hidden=True,
                                             help="Read the whole config as JSON from stdin.")] = False,
    serve: Annotated[bool, typer.Option("--serve", hidden=True,
                                        help="Answer JSON requests line by line on stdin (the MCP tool's child).")] = False,
) -> None:
    """Dry run: the format, rows, rendered examples with the trained tokens marked, lengths, steps, memory,
    placement, time and cost that `train` / start_finetune would have. Loads no weights, writes nothing."""
    overrides = {
        "model": model, "dataset": dataset, "enable_entropy_weighting": entropy_weight, "max_steps": max_steps,
        "num_train_epochs": epochs, "max_examples": max_examples, "max_seq_length": max_seq_length,
        "learning_rate": learning_rate, "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum, "lora_r": lora_r, "load_in_4bit": load_in_4bit, "method": method,
    }
    if serve:
        return serve_previews()
    run_preview(config_from_stdin if spec_stdin else lambda: _load_config(config_file, overrides), target,
                examples=examples, as_json=as_json)


def _read_mapping(path: Path) -> dict[str, Any]:
    """A YAML or JSON file holding a mapping (an experiment's settings)."""
    import json

    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a .yaml or .json file")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix.lower() in (".yaml", ".yml") else json.loads(path.read_text())
    except Exception as exc:  # yaml and json raise different types; both mean "unparseable"
        raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of field names to values")
    return data


def _arm_option(value: str) -> str | dict[str, Any]:
    import json

    if not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"--arm {value!r} is neither a name nor a JSON object ({exc}); e.g. --arm standard or "
                          "--arm '{\"name\": \"lin2\", \"enable_entropy_weighting\": true, \"entropy\": {\"scale\": 2}}'") from None


@app.command()
@friendly_errors
def experiment(
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON: training settings shared by "
                                                     "every run, plus arms, seeds, eval_dataset, ...")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id or local model folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Local file/folder or hub dataset id.")] = None,
    arm: Annotated[list[str] | None, typer.Option(help="An arm (repeat): standard | entropy | a built-in weight "
                                                  "function | a JSON object. Default: standard and entropy.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per arm (default 3).")] = None,
    baseline: Annotated[str | None, typer.Option(help="The arm the others are compared with (default: the first).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps per run.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs per run.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Seeded subset size.")] = None,
    eval_dataset: Annotated[str | None, typer.Option(help="Held-out rows for every run (default: the validation split).")] = None,
    primary_metric: Annotated[str | None, typer.Option(help="What the verdict is about (eval_ce, normalized_match, mrr@10, ...).")] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[str | None, typer.Option(help="auto | unsloth | hf")] = None,
    method: Annotated[str | None, typer.Option("--method", "--task", help=METHOD_HELP)] = None,
    seed: Annotated[int | None, typer.Option(help="First seed, and the seed of the held-out split.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write (default: a new folder under runs/).")] = None,
) -> None:
    """Compare loss settings: every arm × seed is a full training run (in this process, one after another),
    all scored on the same held-out rows; prints each arm's mean ± std, the paired differences with 95 %
    intervals, the verdict and which arm to use. Ctrl-C stops it; the finished runs and their table stay."""
    import json

    from finetune_mcp.cli_experiment import experiment_progress, print_results
    from finetune_mcp.experiment.spec import build_experiment_spec
    from finetune_mcp.experiment.start import check_experiment_start
    from finetune_mcp.experiment.workflow import experiment_paths, run_experiment
    from finetune_mcp.jobs.records import check_run_dir

    data = _read_mapping(config_file) if config_file is not None else {}
    flags = {"model": model, "dataset": dataset, "seeds": seeds, "baseline": baseline, "max_steps": max_steps,
             "num_train_epochs": epochs, "max_examples": max_examples, "eval_dataset": eval_dataset,
             "primary_metric": primary_metric, "max_seq_length": max_seq_length, "learning_rate": learning_rate,
             "per_device_train_batch_size": batch_size, "lora_r": lora_r, "backend": backend, "method": method, "seed": seed}
    data.update({k: v for k, v in flags.items() if v is not None})
    if arm:
        data["arms"] = [_arm_option(a) for a in arm]
    missing = [name for name in ("model", "dataset") if name not in data]
    if missing:
        raise ConfigError(f"missing {' and '.join('--' + m for m in missing)}; pass them or --config FILE")
    settings = Settings.from_env()
    spec = check_experiment_start(build_experiment_spec({**data, "kind": "experiment"}), settings)
    target = (run_dir or Path(spec.run_dir or settings.runs_dir / f"experiment-{time.strftime('%Y%m%d-%H%M%S')}"))
    target = target.expanduser().resolve()
    check_run_dir(target)
    spec = spec.model_copy(update={"run_dir": str(target)})
    console.print(f"{len(spec.arms)} arms × {len(spec.seeds)} seeds = {len(spec.plan)} runs into {target}")
    paths = experiment_paths(RunDirectory(target))
    try:
        with experiment_progress(target, console):
            run_experiment(spec, target)
    except KeyboardInterrupt:
        console.print(f"[yellow]stopped[/]; the finished runs and their table are in {paths['folder']}")
        raise typer.Exit(130) from None
    print_results(json.loads(paths["table"].read_text()), console)
    console.print(f"report: {paths['report']}\nplot: {paths['plot']}\nruns: {paths['runs']}")


@app.command("experiment-table")
@friendly_errors
def experiment_table(
    job: Annotated[str, typer.Argument(help="Experiment job id (e.g. ft-3f9a0c1b2d4e) or its run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print table.json instead.")] = False,
) -> None:
    """Print an experiment's table (running, finished or cancelled): what get_experiment returns."""
    import json

    from finetune_mcp.cli_experiment import print_results
    from finetune_mcp.experiment.workflow import experiment_paths

    path = Path(job).expanduser()
    run = RunDirectory(path.resolve()) if path.is_dir() else _with_manager(lambda m: m.run_dir(job))
    table_file = experiment_paths(run)["table"]
    if not table_file.is_file():
        raise ConfigError(f"{run.root} has no experiment table yet ({table_file}); wait until its first run finished")
    table = json.loads(table_file.read_text())
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    print_results(table, console)
    typer.echo(str(experiment_paths(run)["report"]))


@worker_app.command("run")
def worker_run(spec: Annotated[Path, typer.Argument(help="spec.json inside the job's run directory.")]) -> None:
    """Run the job described by SPEC; its run directory is SPEC's folder. Exit 0 on success, 1 on failure."""
    from finetune_mcp.kinds import worker_main

    raise typer.Exit(worker_main(spec))


@worker_app.command("serve")
@friendly_errors
def worker_serve(
    port: Annotated[int, typer.Option(envvar="FINETUNE_MCP_WORKER_PORT",
                                      help="Port (RunPod exposes it as https://{pod_id}-{port}.proxy.runpod.net).")] = 8000,
    host: Annotated[str, typer.Option(envvar="FINETUNE_MCP_WORKER_HOST", help="Interface to bind.")] = "0.0.0.0",
    workdir: Annotated[Path, typer.Option(envvar="FINETUNE_MCP_WORKER_DIR",
                                          help="Where inputs and the run directory go.")] = Path("/workspace/finetune-mcp"),
    idle_timeout: Annotated[float, typer.Option(
        envvar="FINETUNE_MCP_WORKER_IDLE_TIMEOUT_S",
        help="Seconds without a request from the manager (and no training running) before the pod terminates itself.",
    )] = 900.0,
) -> None:
    """Serve one job over HTTP (RunPod pods run this); needs FINETUNE_MCP_WORKER_TOKEN in the environment."""
    from finetune_mcp.jobs.backends.runpod.pod_server import serve

    serve(host, port, workdir, idle_timeout)


# -- MCP server and jobs (the job manager's CLI mirror of the MCP tools) ---------------------------


@app.command()
@friendly_errors
def serve(
    transport: Annotated[str, typer.Option(help="stdio (Claude Code / Desktop) or http (streamable HTTP).")] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port.")] = 8765,
    path: Annotated[str, typer.Option(help="HTTP: endpoint path.")] = "/mcp",
    log_level: Annotated[str, typer.Option(help="DEBUG | INFO | WARNING (logs go to stderr).")] = "INFO",
) -> None:
    """Run the MCP server. HTTP needs FINETUNE_MCP_TOKEN (clients send it as a bearer token)."""
    from finetune_mcp.server.app import serve as run_server

    run_server(transport, host, port, path, log_level)


def _with_manager(fn: Callable[..., Any]) -> Any:
    from finetune_mcp.jobs.manager import JobManager

    manager = JobManager()
    try:
        return fn(manager)
    finally:
        manager.close()


@app.command()
@friendly_errors
def jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """List jobs (the same table the MCP server keeps)."""
    from rich.table import Column, Table

    table = Table(Column("id", min_width=15, no_wrap=True), Column("state", min_width=12), "step", "loss",
                  "device", Column("model", overflow="ellipsis", no_wrap=True), Column("created", no_wrap=True))
    for job in _with_manager(lambda m: m.list(state, limit)):
        loss = job.metrics.get(M.LOSS)
        table.add_row(job.id, job.state.value, f"{job.step}/{job.total_steps or '?'}",
                      f"{loss:.4f}" if isinstance(loss, float) else "", job.device,
                      Path(job.config.get("model", "")).name, time.strftime("%m-%d %H:%M", time.localtime(job.created_at)))
    Console().print(table)


@app.command()
@friendly_errors
def status(job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")]) -> None:
    """Show one job as JSON (what the get_job tool returns)."""
    from finetune_mcp.tools.training import job_view

    view = _with_manager(lambda m: job_view(m, m.get(job_id), with_result=True))
    typer.echo(view.model_dump_json(indent=2))


@app.command()
@friendly_errors
def cancel(job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")]) -> None:
    """Cancel a queued or running job (SIGTERM, then SIGKILL after the grace period)."""
    import anyio

    job = _with_manager(lambda m: anyio.run(m.cancel, job_id))
    console.print(f"{job.id}: {job.state.value}" + (f" ({job.error.splitlines()[0]})" if job.error else ""))


@app.command()
@friendly_errors
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id, e.g. ft-3f9a0c1b2d4e.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print the end of a job's train.log; with --follow, keep going until the job ends."""
    from finetune_mcp.jobs.manager import JobManager

    manager = JobManager()
    try:
        run_dir = manager.run_dir(job_id)
        typer.echo(run_dir.tail_log(lines))
        offset = run_dir.log.stat().st_size if run_dir.log.exists() else 0
        while follow:
            time.sleep(1.0)
            ended = manager.get(job_id).state.terminal  # read before the log: its last lines still print
            if run_dir.log.exists():
                with run_dir.log.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                typer.echo(chunk.decode("utf-8", errors="replace"), nl=False)
            follow = not ended
    finally:
        manager.close()


@app.command()
@friendly_errors
def demo() -> None:
    """Offline demo: a tiny model and synthetic tasks, entropy weighting off vs on over 3 seeds, and what that supports."""
    from finetune_mcp.cli_experiment import experiment_progress, print_results
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


@app.command()
@friendly_errors
def sample(
    job: Annotated[str, typer.Argument(help="A succeeded training job id (e.g. ft-3f9a0c1b2d4e), or a model "
                                       "folder / Hub id / LoRA adapter folder.")],
    prompts: Annotated[list[str] | None, typer.Argument(help="Questions to ask (default: the job's first "
                                                        "held-out validation rows).")] = None,
    rows: Annotated[int | None, typer.Option(help="Ask this many dataset rows instead of prompts (default 8).")] = None,
    seeded: Annotated[bool, typer.Option(help="A seeded random choice of rows instead of the first ones.")] = False,
    dataset: Annotated[str | None, typer.Option(help="Take the rows from this dataset (all its rows).")] = None,
    base: Annotated[bool, typer.Option("--base/--no-base", help="The base model answers too.")] = True,
    compare_with: Annotated[str | None, typer.Option(help="Another job whose adapter answers too.")] = None,
    merged: Annotated[bool, typer.Option(help="Sample the job's merged/ model instead of its adapter.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0: greedy (reproducible).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (with --temperature > 0).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job and print its answers.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result (get_samples) as JSON.")] = False,
) -> None:
    """Sample a model as a job (what sample_model does): answers side by side with the base model's, the
    high-entropy tokens marked ⟦…⟧; prints a table (or --json) when it ends."""
    from finetune_mcp.cli_sample import print_samples, start_and_follow
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import JobState
    from finetune_mcp.sample.results import read_result
    from finetune_mcp.tools.sample import sample_spec_for

    is_job = job.startswith("ft-") and not Path(job).expanduser().exists()
    manager = JobManager()
    try:
        spec = sample_spec_for(
            manager, job_id=job if is_job else None, model=None if is_job else job, prompts=list(prompts or []),
            dataset=dataset, num_rows=rows, rows_order="seeded" if seeded else "first", rows_seed=seed,
            rows_split="auto", compare_with_base=base, compare_with=compare_with,
            weights="merged" if merged else "adapter", high_entropy_threshold=None,
            settings={"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
                      "batch_size": batch_size})
        ended = start_and_follow(manager, spec, console, wait=wait)
    finally:
        manager.close()
    if not wait:
        typer.echo(ended.id)
        return
    if ended.state is not JobState.SUCCEEDED:
        console.print(f"[bold red]{ended.id} {ended.state.value}:[/] {ended.error or ''}")
        raise typer.Exit(1)
    result = read_result(ended.run_dir)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_samples(result, Console())
        typer.echo(f"{ended.run_dir}/result.json")


# -- See it and ship it: screenshots, model cards, deployment (mirrors of the MCP tools) -------------


def _finished_run(job: str | None, purpose: str) -> RunDirectory | None:
    """A succeeded job's run directory, or a run directory given as a path (the demo's, `train --run-dir`)."""
    if job is None:
        return None
    path = Path(job).expanduser()
    if path.is_dir():
        return RunDirectory(path.resolve())
    from finetune_mcp.tools.card import succeeded_run

    return _with_manager(lambda m: succeeded_run(m, job, purpose))


JobOrRunDir = Annotated[str, typer.Argument(help="Job id (e.g. ft-3f9a0c1b2d4e) or a run directory.")]
CompareWith = Annotated[str | None, typer.Option(
    "--compare-with", "-c", help="Another job id or run directory to compare with (e.g. the unweighted run).")]


@app.command()
@friendly_errors
def card(job: JobOrRunDir, compare_with: CompareWith = None) -> None:
    """Write the model card (card/README.md + PNG plots) of a succeeded run; prints the README path."""
    from finetune_mcp.report.card import write_model_card
    from finetune_mcp.tools.card import run_samples

    run = _finished_run(job, "a model card")
    samples = None if Path(job).expanduser().is_dir() else _with_manager(lambda m: run_samples(m, job))
    readme, plots = write_model_card(run, _finished_run(compare_with, "the comparison"), samples=samples)
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
    runs = [_finished_run(j, "a screenshot") for j in [job, *(compare_with or [])]]
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

    run = _finished_run(job, "a deployment")
    result = deploy_run(run, repo, private=not public, merge=merge, include_gguf=include_gguf,
                        compare_with=_finished_run(compare_with, "the comparison"))
    console.print(f"[green]deployed[/] {len(result.files)} files ({result.bytes_uploaded / 1e6:.1f} MB) in commit "
                  f"{result.commit_oid[:12]}, {'private' if result.private else 'public'}")
    typer.echo(result.url)


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
    run = _finished_run(job, "a GGUF export")
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


if __name__ == "__main__":
    app()
