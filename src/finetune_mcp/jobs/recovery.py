"""Rebuilding the job list when jobs.db is damaged: the run directories hold what the table held.

A damaged jobs.db (garbage, an overwritten header, a damaged page: `JobStore` raises
`DamagedDatabaseError` after `PRAGMA quick_check`) used to kill the server at start, and the client
saw only "Connection closed". Now the server moves the file aside (`jobs.db.damaged-<time>`, with
its -wal/-shm, so nothing is destroyed) and rebuilds the table from `$FINETUNE_MCP_HOME/runs/*/`:
a run with `result.json` is succeeded, one with an `error` event failed with that message, any
other (interrupted, or a worker still running that this server can no longer follow) failed with
a reason that says so. Runs written to a custom `run_dir` outside runs/ are not found again. When
the rebuild itself fails, the server keeps answering and every job tool says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import JOB_ID_PATTERN, Job, JobState, JobStore
from finetune_mcp.runs.rundir import RunDirectory

log = logging.getLogger(__name__)
LOST = ("its record was lost with the damaged jobs.db (rebuilt from the run directory); if its worker is still "
        "running it is no longer followed; start the job again if it did not finish")


def move_aside(db_path: Path, clock: float | None = None) -> Path:
    """Rename jobs.db (and its -wal / -shm) to jobs.db.damaged-<time>; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(clock or time.time()))
    target = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db_path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    return target


def rebuild_from_runs(db_path: Path, runs_dir: Path) -> tuple[Path, int]:
    """Move the damaged database aside, make a fresh one, and enter every run directory under
    `runs_dir` as a finished job. Returns (where the damaged file went, how many jobs were found)."""
    kept = move_aside(db_path)
    store = JobStore(db_path)
    found = 0
    try:
        for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
            if JOB_ID_PATTERN.fullmatch(folder.name) and (folder / "spec.json").is_file():
                try:
                    _enter(store, RunDirectory(folder))
                    found += 1
                except (OSError, ValueError) as exc:
                    log.warning("not rebuilt from %s: %s", folder, exc)
    finally:
        store.close()
    log.warning("jobs.db was damaged: moved to %s; %d job(s) rebuilt from %s", kept, found, runs_dir)
    return kept, found


def _enter(store: JobStore, run: RunDirectory) -> None:
    config: dict[str, Any] = json.loads(run.spec.read_text())
    created = run.spec.stat().st_mtime
    remote = (run.root / ".runpod.json").exists()
    backend, device = ("runpod", "cuda") if remote else ("local", "cpu")
    placement = Placement(backend=backend, device=device, gpu_index=None, reason="rebuilt from the run directory")
    store.insert(Job(id=run.root.name, state=JobState.QUEUED, target=backend, backend=backend, device=device,
                     slot=placement.slot, placement=placement.to_json(),
                     config=config if isinstance(config, dict) else {}, run_dir=str(run.root), created_at=created,
                     updated_at=created))
    if run.result.is_file():
        store.transition(run.root.name, JobState.RUNNING, reason="rebuilt from the run directory")
        store.transition(run.root.name, JobState.SUCCEEDED, reason="rebuilt from the run directory: result.json")
        return
    errors = [e for e in run.iter_events("error")] if run.events.is_file() else []
    message = str(errors[-1].get("message") or errors[-1].get("error") or "") if errors else ""
    store.transition(run.root.name, JobState.FAILED, reason="rebuilt from the run directory",
                     error=f"{message[:500]} ({LOST})" if message else LOST)
