"""`run_experiment(spec, run_dir)`: the `experiment` kind's worker body — every arm × seed, one
training run after another in this process, each scored on the same held-out rows, then the table,
the report and the plot.

    <run_dir>/spec.json, events.jsonl, train.log, result.json    the experiment as a job
    <run_dir>/runs/<arm>-s<seed>/                                 one full training run each (spec, events,
                                                                  tensorboard/, adapter/, entropy/, heldout.json)
    <run_dir>/experiment/table.json, report.md, plot.png          the results

Each run goes through `train.workflow.run_training`, the code a training job runs, with one hook:
the model loader (`SharedBaseModel`) keeps the base model between runs and re-initialises LoRA
from the run's seed. Progress over all runs goes to the experiment's events.jsonl
(`ProgressRelay`). The table is rewritten after every run, so what finished is readable while the
rest trains. Cancel (SIGTERM to the worker, or Ctrl-C in the CLI) stops the run in progress: it
gets an `end` event with status cancelled, the finished runs stay, and the table, report and plot
are written for them before the worker exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ExperimentError
from finetune_mcp.experiment.progress import ProgressRelay
from finetune_mcp.experiment.spec import Arm, ExperimentSpec
from finetune_mcp.experiment.table import RunRecord, build_table
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session

log = logging.getLogger("finetune_mcp.experiment")

HELDOUT_FILE = "heldout.json"  # a run's own held-out scores, beside its result.json


def experiment_paths(run: RunDirectory) -> dict[str, Path]:
    """Where an experiment's results live (readers: the tool, the CLI, the card section)."""
    folder = run.experiment
    return {"folder": folder, "table": folder / "table.json", "report": folder / "report.md",
            "plot": folder / "plot.png", "runs": run.runs}


def experiment_runs(run: RunDirectory) -> list[RunDirectory]:
    """The experiment's runs that have TensorBoard event files, in the order they trained (for a
    screenshot of all of them on one chart)."""
    table = experiment_paths(run)["table"]
    folder = experiment_paths(run)["runs"]
    places: dict[str, Path] = {}  # a parallel experiment's runs live in its shards' run directories
    if table.is_file():
        places = {r["name"]: Path(r.get("run_dir") or folder / r["name"])
                  for r in json.loads(table.read_text(encoding="utf-8")).get("runs", [])}
    if folder.is_dir():
        places.update({p.name: p for p in sorted(folder.iterdir()) if p.name not in places})
    runs = [RunDirectory(path) for path in places.values()]
    return [r for r in runs if r.tensorboard.is_dir() and any(r.tensorboard.iterdir())]


def run_experiment(spec: ExperimentSpec, run_dir: str | Path) -> dict[str, Any]:
    """Run every arm × seed, score, summarise; returns the result (also in result.json)."""
    with worker_session(RunDirectory(Path(run_dir)), spec, "experiment") as run:
        return _Experiment(spec, run).execute()


class _Experiment:
    def __init__(self, spec: ExperimentSpec, run: RunDirectory) -> None:
        self.spec, self.run = spec, run
        self.paths = experiment_paths(run)
        self.records = [RunRecord(name=spec.run_label(arm, seed), arm=arm.name, seed=seed,
                                  run_dir=str(self.paths["runs"] / spec.run_label(arm, seed)))
                        for seed, arm in spec.plan]
        self.heldout_info: dict[str, Any] = {}

    def execute(self) -> dict[str, Any]:
        from finetune_mcp.experiment.scoring import load_heldout
        from finetune_mcp.experiment.shared_model import SharedBaseModel

        spec, run = self.spec, self.run
        started = time.time()
        heldout = load_heldout(spec)  # before any training: a bad held-out set fails in seconds
        self.heldout_info = heldout.describe()
        steps = spec.max_steps if spec.max_steps > 0 else None
        relay = ProgressRelay(run, len(self.records), steps)
        run.write_event("start", step=0, total_steps=relay.total_steps, runs=len(self.records),
                        arms=[a.name for a in spec.arms], seeds=spec.seeds)
        log.info("experiment: %d arms × %d seeds = %d runs; held-out: %s (%d rows, %d answered by generation)",
                 len(spec.arms), len(spec.seeds), len(self.records), heldout.source, len(heldout.rows),
                 len(heldout.questions))
        if heldout.retain is not None:
            log.info("forgetting check: %s (%d retain rows)", heldout.retain_source, len(heldout.retain))
        loader = SharedBaseModel(share=spec.share_model)
        status = "failed"
        relay.start()
        stop = StopOnSigterm()
        try:
            with stop:
                for record, (seed, arm) in zip(self.records, spec.plan, strict=True):
                    self._train_and_score(record, seed, arm, loader, relay, heldout)
            status = "succeeded"
        except (KeyboardInterrupt, SystemExit):
            stop.taken()
            status = "cancelled"
            self._mark_stopped("cancelled", "the experiment was cancelled")
            raise
        except Exception as exc:
            stop.taken()
            current = next((r for r in self.records if r.status == "running"), None)
            self._mark_stopped("failed", str(exc) or type(exc).__name__)
            if current is None:
                raise
            raise ExperimentError(f"run {current.name} failed: {exc}; its run directory {current.run_dir} has the "
                                  f"details, the {self._finished()} finished runs are kept", run=current.name) from exc
        finally:  # the table first: after a cancel the manager's SIGKILL may follow within its grace period
            relay.stop()
            table = self._write_table(status)
            self._write_report(table)
            loader.release()
        result = {
            "status": "succeeded", "kind": "experiment", "runs": len(self.records), "runs_finished": self._finished(),
            "verdict": table["verdict"], "recommendation": table["recommendation"],
            "table": str(self.paths["table"]), "report": str(self.paths["report"]), "plot": str(self.paths["plot"]),
            "overhead": table["overhead"], "runtime_s": round(time.time() - started, 2), "versions": library_versions(),
        }
        run.write_json(run.result, result)
        run.write_event("end", status="succeeded", step=relay.done_steps, total_steps=relay.total_steps or relay.done_steps,
                        metrics=primary_means(table))
        log.info("experiment done in %.1fs: %s", result["runtime_s"], table["verdict"])
        return result

    def _train_and_score(self, record: RunRecord, seed: int, arm: Arm, loader, relay: ProgressRelay, heldout) -> None:
        from finetune_mcp.experiment.scoring import score_run
        from finetune_mcp.experiment.shared_model import free_memory
        from finetune_mcp.train.workflow import run_training

        run_dir = Path(record.run_dir)
        config = self.spec.run_config(arm, seed, run_dir)
        record.status = "running"
        self._write_table("running")
        relay.follow(record.name, run_dir)
        log.info("run %s (%d of %d): %s, seed %d", record.name, self.records.index(record) + 1, len(self.records),
                 arm.describe(), seed)
        began = time.perf_counter()
        result = run_training(config, run_dir, load_model=loader, evaluate=False)  # scored below instead
        assert loader.loaded is not None  # run_training loaded it through `loader`
        metrics, extra = score_run(loader.loaded, heldout, self.spec)
        self.heldout_info = heldout.describe()  # with the base model's retain CE, known from the first scoring on
        wall = time.perf_counter() - began
        perf = result.get("perf") or {}
        steps_s = float(perf.get("steps_total_s") or 0.0)
        record.metrics = metrics
        # step_s: what a step costs after warm-up, as a single run reports it, so the two compare
        # (train_steps_s / steps also carries the first steps' one-off costs: CUDA-graph capture, warm-up)
        record.timing = {"wall_s": round(wall, 3), "train_steps_s": round(steps_s, 3),
                         "step_s": perf.get("step_s"),
                         "overhead_s": round(wall - steps_s, 3), "steps": result.get("global_step"),
                         **loader.last, "scoring_s": extra.get("scoring_s")}
        record.status = "succeeded"
        RunDirectory(run_dir).write_json(run_dir / HELDOUT_FILE, {
            "experiment": self.run.root.name, "arm": arm.name, "seed": seed, "loss": arm.describe(),
            "metrics": metrics, "heldout": self.heldout_info, "timing": record.timing, **extra,
        })
        relay.finish()
        table = self._write_table("running")
        self.run.write_event("eval", step=relay.done_steps, total_steps=relay.total_steps, run=record.name,
                             metrics=primary_means(table), record=record.to_json(),  # gathered when in parallel
                             heldout=self.heldout_info)
        free_memory()

    def _mark_stopped(self, status: str, reason: str) -> None:
        """The run in progress ends with `status`; its directory says so (partial runs keep what they wrote)."""
        for record in self.records:
            if record.status == "running":
                record.status, record.error = status, reason
                run = RunDirectory(Path(record.run_dir))
                if status == "cancelled" and run.root.is_dir():
                    run.write_event("end", status="cancelled", reason=reason, written_by="experiment")

    def _finished(self) -> int:
        return sum(r.status == "succeeded" for r in self.records)

    def _write_table(self, status: str) -> dict[str, Any]:
        table = build_table(self.spec, self.records, status=status, heldout=self.heldout_info,
                            experiment=self.run.root.name)
        self.run.write_json(self.paths["table"], table)
        return table

    def _write_report(self, table: dict[str, Any]) -> None:
        from finetune_mcp.experiment.report import write_report

        write_report(table, self.paths["report"], self.paths["plot"])


def primary_means(table: dict[str, Any]) -> dict[str, float]:
    """The primary metric's mean per arm so far, as get_job's metrics (`experiment/<arm>/<metric>`)."""
    name = table["primary_metric"]
    return {f"experiment/{arm}/{name}": s["mean"] for arm, s in table["summary"].get(name, {}).items()
            if s["mean"] is not None}


class StopOnSigterm:
    """Turn the job manager's SIGTERM (cancel) into SystemExit in the main thread, so the finally
    blocks run: the stopped run is marked, the finished runs are summarised (Python's default would
    end the process on the spot).

    An exception raised by a signal handler is lost when it lands in a finalizer (`__del__`, which
    Python reports as "Exception ignored") and training would go on; so until the worker has taken
    the stop (`taken()`, in its except clause) the signal is sent again every second. Once taken,
    further signals are ignored, so the summary is not interrupted. Only the main thread may set
    signal handlers (the CLI's progress bar runs in a thread; there Ctrl-C is KeyboardInterrupt)."""

    RESEND_S = 1.0

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._taken = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._taken.set()
        if self._previous is not None:  # after a stop, a late resent signal must not end the summary early
            signal.signal(signal.SIGTERM, signal.SIG_IGN if self.requested.is_set() else self._previous)

    def taken(self) -> None:
        self._taken.set()

    def _stop(self, signum: int, frame: Any) -> None:
        if self._taken.is_set():
            return
        if not self.requested.is_set():
            self.requested.set()
            threading.Thread(target=self._resend, args=(signum,), name="experiment-stop", daemon=True).start()
        raise SystemExit(128 + signum)

    def _resend(self, signum: int) -> None:
        while not self._taken.wait(self.RESEND_S):
            os.kill(os.getpid(), signum)
