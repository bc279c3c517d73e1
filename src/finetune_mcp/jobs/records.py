"""What the job manager records in a run directory, and reads back from it.

The manager owns the job's state in SQLite; the run directory is the worker's. These helpers are
the few places the manager touches it: claiming a new run dir, marking a run the worker could not
end itself, and reading the worker's last words (its ending event, its log tail, clean metrics).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_mcp.errors import ConfigError
from finetune_mcp.runs.rundir import RunDirectory

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20


def check_run_dir(root: Path) -> None:
    """A run dir must be new or an empty, writable folder: a run never mixes with other files."""
    if root.exists():
        if not root.is_dir() or any(root.iterdir()):
            raise ConfigError(f"{root} already exists and is not empty; choose a new run_dir or leave it unset",
                              field="run_dir")
        if not os.access(root, os.W_OK):
            raise ConfigError(f"{root} is not writable; choose another run_dir", field="run_dir")


def claim_run_dir(root: Path) -> bool:
    """Create the run dir (True) or accept an existing empty one (False); refuse anything else."""
    check_run_dir(root)
    if root.exists():
        return False
    try:
        root.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {root}: {exc.strerror}; choose a writable run_dir", field="run_dir") from None
    return True


def mark_ended(job: Job, status: str, reason: str) -> None:
    """Leave an `end` event in the run dir when the worker could not: the partial run says why it
    stopped. Best effort: the state in SQLite is already recorded."""
    run_dir = RunDirectory(Path(job.run_dir))
    ending = last_ending(run_dir)
    if (ending is not None and ending.get("type") == "end") or not run_dir.root.is_dir():
        return
    try:
        run_dir.write_event("end", status=status, reason=reason, step=job.step, written_by="job-manager")
    except OSError as exc:
        log.warning("could not mark %s as %s in its run dir: %s", job.id, status, exc)


def last_ending(run_dir: RunDirectory) -> dict[str, Any] | None:
    events, _ = run_dir.read_events()
    return next((e for e in reversed(events) if e.get("type") in ("end", "error")), None)


def clean_metrics(event: dict[str, Any]) -> dict[str, Any]:
    """Numbers from an event's `metrics` (or its top-level 'train/...'/'eval/...' keys); NaN and
    infinities become strings, which JSON (and the agent) can read."""
    source = event.get("metrics") if isinstance(event.get("metrics"), dict) else {
        k: v for k, v in event.items() if "/" in k
    }
    out: dict[str, Any] = {}
    for key, value in source.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = value if math.isfinite(value) else str(value)
    return out


def log_tail(run_dir: RunDirectory) -> str:
    tail = run_dir.tail_log(LOG_TAIL_LINES).strip()
    return f"\nlast lines of train.log:\n{tail[-4000:]}" if tail else ""
