"""Readers of what a run wrote: one reader per fact, for every consumer (card, plots, metrics tool).

`entropy_epochs(run)` reads `entropy/epoch_<k>.json` in epoch order, skipping a file that is being
written or damaged (the metrics tool reads while the run is live). `RunFacts` is a finished,
succeeded run read once: spec, result, events, entropy epochs and eval summary, with per-metric
series; the card and its plots are drawn from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_mcp.errors import JobError
from finetune_mcp.runs.rundir import RunDirectory

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.json")


def entropy_epochs(run: RunDirectory) -> list[dict[str, Any]]:
    """Every readable `entropy/epoch_<k>.json` of the run, ordered by k."""
    if not run.entropy.is_dir():
        return []
    found = []
    for path in run.entropy.iterdir():
        match = _EPOCH_FILE.fullmatch(path.name)
        if match:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written (atomic rename makes this rare) or damaged: skip it
            if isinstance(data, dict):
                found.append((int(match.group(1)), data))
    return [data for _, data in sorted(found, key=lambda item: item[0])]


@dataclass
class RunFacts:
    """What one finished run wrote, read once; the card and the plots are drawn from this."""


    name: str
    root: Path
    spec: dict[str, Any]
    result: dict[str, Any]
    events: list[dict[str, Any]]
    entropy_epochs: list[dict[str, Any]]
    entropy_eval: dict[str, Any] | None
    _series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict, repr=False)


    @classmethod
    def load(cls, run: RunDirectory) -> RunFacts:
        if not run.result.is_file():
            raise JobError(f"{run.root} has no result.json: the run has not finished successfully; "
                           "wait until get_job reports succeeded")
        result = run.read_json(run.result)
        if result.get("status") != "succeeded":
            raise JobError(f"{run.root.name} ended with status {result.get('status')!r}; "
                           "a card needs a succeeded run")
        spec = run.read_json(run.spec) if run.spec.is_file() else {}
        epochs = entropy_epochs(run)
        eval_path = run.entropy / "eval.json"
        return cls(name=run.root.name, root=run.root, spec=spec, result=result,
                   events=list(run.iter_events()), entropy_epochs=epochs,
                   entropy_eval=run.read_json(eval_path) if eval_path.is_file() else None)


    @property
    def entropy_on(self) -> bool:
        return bool(self.spec.get("enable_entropy_weighting", self.result.get("entropy_weighting")))


    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric over the run, from the progress and eval events."""
        if tag not in self._series:
            points = [(e["step"], e["metrics"][tag]) for e in self.events
                      if e.get("type") in ("progress", "eval") and tag in (e.get("metrics") or {})]
            self._series[tag] = ([s for s, _ in points], [v for _, v in points])
        return self._series[tag]


    def final(self, tag: str) -> float | None:
        value = (self.result.get("metrics") or {}).get(tag)
        if value is None:
            values = self.series(tag)[1]
            value = values[-1] if values else None
        return value
