"""`gather_shards(spec, run)`: the worker body of a parallel experiment — it trains nothing; it follows
the jobs that train the shares of the runs (`spec.shards`, queued by `experiment.parallel`) and keeps
the experiment's own run directory exactly as a serial experiment's: progress over all runs in its
events.jsonl, `experiment/table.json` rewritten after every finished run, then the report, the plot
and result.json.

Each share is an ordinary experiment job (`only_runs`) on its own GPU, pod or CPU slot. Its worker
writes an `eval` event with the finished run's record (held-out metrics, timing) — the same line on
a local worker and on a pod, whose events the RunPod backend copies home while it runs — so this
worker reads only run directories and, for how a share ended and what it cost, the job table
(SQLite, read-only use). A share that fails or is cancelled ends the experiment the same way; the
job manager then cancels the other shares (`Placement.details["child_jobs"]`), so nothing trains on.
On SIGTERM (cancel_job on the experiment) the table is written for the finished runs, as serially.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from finetune_mcp.config import Settings
from finetune_mcp.errors import ExperimentError
from finetune_mcp.experiment.spec import ExperimentSpec
from finetune_mcp.experiment.table import RunRecord, build_table
from finetune_mcp.experiment.workflow import StopOnSigterm, experiment_paths, primary_means, run_experiment
from finetune_mcp.jobs.store import JobState, JobStore
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session

log = logging.getLogger("finetune_mcp.experiment")

POLL_S = 0.5


class _Share:
    """One share's job as this worker follows it: its events read so far, its latest step."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.job_id: str = data["job_id"]
        self.run = RunDirectory(Path(data["run_dir"]))
        self.runs: list[str] = list(data["runs"])
        self.offset = 0
        self.step = 0
        self.total: int | None = None
        self.state: JobState | None = None
        self.cost_usd: float | None = None


def run_experiment_job(spec: ExperimentSpec, run_dir: str | Path) -> dict[str, Any]:
    """The `experiment` kind's worker body: gather the shares of a parallel experiment, or train the
    runs (all of them, or this worker's share) one after another (`workflow.run_experiment`)."""
    if not spec.shards:
        return run_experiment(spec, run_dir)
    with worker_session(RunDirectory(Path(run_dir)), spec, "experiment") as run:
        return gather_shards(spec, run)


def gather_shards(spec: ExperimentSpec, run: RunDirectory) -> dict[str, Any]:
    """Follow every share until all ended; the table, report and result as a serial experiment writes them."""
    started = time.time()
    paths = experiment_paths(run)
    shares = [_Share(s) for s in spec.shards or []]
    where = {name: share for share in shares for name in share.runs}
    records = {spec.run_label(arm, seed): RunRecord(name=spec.run_label(arm, seed), arm=arm.name, seed=seed,
                                                    run_dir=str(where[spec.run_label(arm, seed)].run.runs
                                                                / spec.run_label(arm, seed)))
               for seed, arm in spec.full_plan}
    steps = spec.max_steps if spec.max_steps > 0 else None
    total = len(records) * steps if steps else None
    run.write_event("start", step=0, total_steps=total, runs=len(records), arms=[a.name for a in spec.arms],
                    seeds=spec.seeds, shares=[{"job_id": s.job_id, "runs": s.runs} for s in shares])
    log.info("parallel experiment: %d runs over %d workers (%s)", len(records), len(shares),
             ", ".join(f"{s.job_id}: {len(s.runs)} runs" for s in shares))
    store = JobStore(Settings.from_env().db_path)
    heldout: dict[str, Any] = {}
    status, stop, last_step = "failed", StopOnSigterm(), 0

    def table(state: str) -> dict[str, Any]:
        data = build_table(spec, list(records.values()), status=state, heldout=heldout, experiment=run.root.name)
        run.write_json(paths["table"], data)
        return data

    try:
        with stop:
            while True:
                changed = False
                for share in shares:
                    # the state before the events: a share's last events are in its run directory before
                    # the manager records its ending, so one read as ended has nothing left unread
                    _read_state(store, share)
                    for event in _new_events(share):
                        kind = event.get("type")
                        if kind in ("start", "progress") and event.get("total_steps"):
                            share.total = int(event["total_steps"])
                        if kind in ("progress", "eval") and event.get("step") is not None:
                            share.step = int(event["step"])
                        name = event.get("run")
                        if kind == "progress" and name in records and records[name].status == "pending":
                            records[name].status, changed = "running", True
                        if kind == "eval" and isinstance(event.get("record"), dict) and name in records:
                            _finished(records[name], event["record"])
                            heldout = heldout or dict(event.get("heldout") or {})
                            changed = True
                step = sum(s.step for s in shares)
                if step > last_step:  # the job's step moves only with `progress` (also when a run ended meanwhile)
                    run.write_event("progress", step=step, total_steps=total or _sum_totals(shares))
                if changed:
                    data = table("running")
                    run.write_event("eval", step=step, total_steps=total, metrics=primary_means(data))
                last_step = max(last_step, step)
                ended = [s for s in shares if s.state is not None and s.state.terminal]
                bad = next((s for s in ended if s.state is not JobState.SUCCEEDED), None)
                if bad is not None:
                    _mark(records, bad.runs, bad.state.value if bad.state else "failed")
                    raise ExperimentError(f"the worker {bad.job_id} training {', '.join(bad.runs)} ended "
                                          f"{bad.state.value if bad.state else 'failed'} (get_job('{bad.job_id}') "
                                          f"says why); the {_count(records)} finished runs are kept")
                if len(ended) == len(shares):
                    break
                time.sleep(POLL_S)
        status = "succeeded"
    except (KeyboardInterrupt, SystemExit):
        stop.taken()
        status = "cancelled"
        _mark(records, list(records), "cancelled")
        raise
    except Exception:
        stop.taken()
        raise
    finally:
        store.close()
        data = table(status)
        from finetune_mcp.experiment.report import write_report

        write_report(data, paths["report"], paths["plot"])
    costs = [s.cost_usd for s in shares if s.cost_usd is not None]
    result = {
        "status": "succeeded", "kind": "experiment", "runs": len(records), "runs_finished": _count(records),
        "verdict": data["verdict"], "recommendation": data["recommendation"],
        "table": str(paths["table"]), "report": str(paths["report"]), "plot": str(paths["plot"]),
        "overhead": data["overhead"], "runtime_s": round(time.time() - started, 2), "versions": library_versions(),
        "parallel": {"workers": len(shares), "jobs": [s.job_id for s in shares]},
        **({"cost_usd": round(sum(costs), 4)} if costs else {}),
    }
    run.write_json(run.result, result)
    run.write_event("end", status="succeeded", step=last_step, total_steps=total or last_step,
                    metrics=primary_means(data))
    log.info("parallel experiment done in %.1fs: %s", result["runtime_s"], data["verdict"])
    return result


def _new_events(share: _Share) -> list[dict[str, Any]]:
    events, share.offset = share.run.read_events(share.offset)
    return events


def _read_state(store: JobStore, share: _Share) -> None:
    job = store.get(share.job_id)
    share.state, share.cost_usd = job.state, job.cost_usd


def _finished(record: RunRecord, data: dict[str, Any]) -> None:
    """A run's record as its worker reported it; its run_dir stays this machine's (a pod's path differs)."""
    record.status = str(data.get("status") or "succeeded")
    record.metrics = dict(data.get("metrics") or {})
    record.timing = dict(data.get("timing") or {})
    record.error = data.get("error")


def _mark(records: dict[str, RunRecord], names: list[str], status: str) -> None:
    """The runs in progress among `names` ended with `status` (pending ones stay pending, as serially)."""
    for name in names:
        if records[name].status == "running":
            records[name].status = status


def _count(records: dict[str, RunRecord]) -> int:
    return sum(r.status == "succeeded" for r in records.values())


def _sum_totals(shares: list[_Share]) -> int | None:
    totals = [s.total for s in shares]
    return sum(t for t in totals if t) if all(totals) else None
