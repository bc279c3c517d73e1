"""Progress of an experiment as a whole, in the experiment's own events.jsonl (the manager tails it).

The runs are ordinary training runs that write their own events; a thread follows the run in
progress and re-writes each of its progress lines as the experiment's: step = the steps of the
finished runs + the run's step, total = runs × steps per run (known from the first run's `start`
event when max_steps is not set). Reading the run's events instead of hooking its trainer keeps
the training code unaware of experiments (as the CLI's progress bar does).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from finetune_mcp.runs.rundir import RunDirectory

POLL_S = 0.5


class ProgressRelay:
    """Follows one run at a time (`follow`, then `finish`); `start()` / `stop()` the thread."""

    def __init__(self, experiment: RunDirectory, runs: int, steps_per_run: int | None) -> None:
        self.experiment = experiment
        self.runs = runs
        self.steps_per_run = steps_per_run
        self.done_steps = 0
        self._run: tuple[str, RunDirectory] | None = None
        self._offset = 0
        self._run_step = 0
        self._run_total: int | None = None
        self._started = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="experiment-progress", daemon=True)

    @property
    def total_steps(self) -> int | None:
        return self.runs * self.steps_per_run if self.steps_per_run else None

    def start(self) -> ProgressRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def follow(self, name: str, run_dir: Path) -> None:
        with self._lock:
            self._run, self._offset, self._run_step, self._run_total = (name, RunDirectory(run_dir)), 0, 0, None

    def finish(self) -> int:
        """The run ended: relay its last lines, count its steps as done; returns the steps counted."""
        with self._lock:
            self._pump()
            steps = self._run_total or self._run_step
            self.done_steps += steps
            self._run = None
            return steps

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                self._pump()

    def _pump(self) -> None:
        if self._run is None:
            return
        name, run = self._run
        events, self._offset = run.read_events(self._offset)
        for event in events:
            kind = event.get("type")
            if kind == "start" and event.get("total_steps"):
                self._run_total = int(event["total_steps"])
                if self.steps_per_run is None:
                    self.steps_per_run = self._run_total
            if kind in ("progress", "eval") and event.get("step") is not None:
                self._run_step = int(event["step"])
                self._write(kind, name, event)

    def _write(self, kind: str, name: str, event: dict[str, Any]) -> None:
        step = self.done_steps + self._run_step
        total = self.total_steps
        elapsed = time.time() - self._started
        eta = round(elapsed / step * (total - step), 1) if total and step else None
        self.experiment.write_event(kind, step=step, total_steps=total, eta_s=eta, run=name,
                                    run_step=self._run_step, metrics=event.get("metrics") or {})
