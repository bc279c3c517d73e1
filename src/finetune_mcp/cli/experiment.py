"""`finetune-mcp experiment` and `experiment-table`, and the terminal side of experiments: a progress
bar over all runs (from the experiment's own events.jsonl, what the job manager reads too) and the
table as rich tables (also used by `finetune-mcp demo`). The shared training flags are generated from
the config groups; the arms own the loss settings, so those are no flags here."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from finetune_mcp.cli.app import app, console, friendly_errors, with_manager
from finetune_mcp.cli.options import training_options
from finetune_mcp.config import Settings
from finetune_mcp.errors import ConfigError
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory

# Training settings every run of an experiment shares, as flags (others: --config FILE).
EXPERIMENT_KNOBS = ("model", "dataset", "max_steps", "num_train_epochs", "max_examples", "max_seq_length",
                    "learning_rate", "per_device_train_batch_size", "lora_r", "backend", "method", "seed")


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
@training_options(*EXPERIMENT_KNOBS, helps={"seed": "First seed, and the seed of the held-out split."})
def experiment(
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON: training settings shared by "
                                                     "every run, plus arms, seeds, eval_dataset, ...")] = None,
    arm: Annotated[list[str] | None, typer.Option(help="An arm (repeat): standard | entropy | a built-in weight "
                                                  "function | a JSON object. Default: standard and entropy.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per arm (default 3).")] = None,
    baseline: Annotated[str | None, typer.Option(help="The arm the others are compared with (default: the first).")] = None,
    eval_dataset: Annotated[str | None, typer.Option(help="Held-out rows for every run (default: the validation split).")] = None,
    retain_dataset: Annotated[str | None, typer.Option(help="Rows the training should not change: every run "
                                                       "reports retain_ce_rise over the base model (sft).")] = None,
    primary_metric: Annotated[str | None, typer.Option(help="What the verdict is about (eval_ce, normalized_match, mrr@10, ...).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write (default: a new folder under runs/).")] = None,
    **knobs: Any,
) -> None:
    """Compare loss settings: every arm × seed is a full training run (in this process, one after another),
    all scored on the same held-out rows; prints each arm's mean ± std, the paired differences with 95 %
    intervals, the verdict and which arm to use. Ctrl-C stops it; the finished runs and their table stay."""
    import json

    from finetune_mcp.experiment.spec import build_experiment_spec
    from finetune_mcp.experiment.start import check_experiment_start
    from finetune_mcp.experiment.workflow import experiment_paths, run_experiment
    from finetune_mcp.jobs.records import check_run_dir

    data = _read_mapping(config_file) if config_file is not None else {}
    flags = {"seeds": seeds, "baseline": baseline, "eval_dataset": eval_dataset, "retain_dataset": retain_dataset,
             "primary_metric": primary_metric, **knobs}
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
    from finetune_mcp.model.imports import import_spec_models

    spec = import_spec_models(spec, settings.home)  # a GGUF --model: imported once, here
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

    from finetune_mcp.experiment.workflow import experiment_paths

    path = Path(job).expanduser()
    run = RunDirectory(path.resolve()) if path.is_dir() else with_manager(lambda m: m.run_dir(job))
    table_file = experiment_paths(run)["table"]
    if not table_file.is_file():
        raise ConfigError(f"{run.root} has no experiment table yet ({table_file}); wait until its first run finished")
    table = json.loads(table_file.read_text())
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    print_results(table, console)
    typer.echo(str(experiment_paths(run)["report"]))



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
