"""The run directory: the one place a run writes, and every later tool reads.

Local and RunPod jobs produce the same tree, so metrics, screenshots, cards and deploys work the
same for both:

    spec.json        the full EnhancedTrainingConfig (no secrets)
    events.jsonl     one JSON object a line: progress, metrics, eval, epoch ends, the end
    train.log        the worker's log
    result.json      the final summary, written once when training ends well
    tensorboard/     event files (tags in `finetune_mcp.runs.metric_names`)
    checkpoints/     trainer checkpoints (resume)
    adapter/         the LoRA adapter + tokenizer
    merged/          merged 16-bit model, when asked
    export/          GGUF files + Ollama Modelfiles (export_model), exports.json: one entry each
    entropy/         epoch_<k>.json: sampled token entropies + top high-entropy tokens; eval.json
    evaluation/      <suite>.json: the newest evaluate_model(suite=...) result of each suite, for the card
    card/            README.md + PNG plots
    experiment/      an experiment job's table.json, report.md, plot.png; its runs in runs/<arm>-s<seed>/

Events are appended with one `write` of a whole line, so a reader tailing the file sees whole
lines or nothing; `read_events` skips a trailing partial line. A line can still be torn (a worker
killed mid-write, a write cut short by a full disk): the next event then starts on a new line
(`write_event` adds the missing newline first), and the reader resynchronises on a line that joins a
fragment to a whole event, so a torn line costs only itself.

Events are checked where they are read (`EventCheck`): unknown types, and progress whose step goes
backwards or past total_steps (a forged or corrupt line), are ignored with a warning; `end` and
`error` events always count. A run dir also keeps `.space-reserve` (64 KiB) while a worker runs:
on a full disk, `write_event` deletes it and retries once, so the last word (the error) is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.runs.disk import SpaceReserve, is_disk_full

log = logging.getLogger(__name__)

EVENT_TYPES = ("start", "progress", "eval", "epoch_end", "end", "error")
STEP_ORDERED = ("progress", "epoch_end")  # the events that move a job's step: never backwards
OUTCOMES = ("end", "error")  # how a run ended: never dropped for their numbers
RESERVE_BYTES = 64 * 1024
_MAX_RESYNC_TRIES = 64


@dataclass(frozen=True)
class RunDirectory:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def exports_record(self) -> Path:
        """export/exports.json: the verified GGUF exports of this run (path, figures, commands)."""
        return self.export / "exports.json"

    def read_exports(self) -> list[dict[str, Any]]:
        """The recorded exports whose GGUF is still there (an unreadable record counts as none)."""
        try:
            entries = self.read_json(self.exports_record)
        except (OSError, ValueError):
            return []
        return [e for e in entries if isinstance(e, dict) and Path(str(e.get("gguf"))).is_file()]

    @property
    def entropy(self) -> Path:
        return self.root / "entropy"

    @property
    def evaluation(self) -> Path:
        """evaluation/<suite>.json: the newest base-vs-tuned result of each suite run on this run."""
        return self.root / "evaluation"

    @property
    def card(self) -> Path:
        return self.root / "card"

    @property
    def experiment(self) -> Path:
        """An experiment job's results: table.json, report.md, plot.png."""
        return self.root / "experiment"

    @property
    def runs(self) -> Path:
        """An experiment job's training runs, one run directory per arm and seed."""
        return self.root / "runs"

    def parent_experiment(self) -> RunDirectory | None:
        """The experiment this run is part of (it lives in `<experiment>/runs/<name>/`), if any."""
        parent = RunDirectory(self.root.parent.parent)
        if self.root.parent.name == "runs" and (parent.experiment / "table.json").is_file():
            return parent
        return None

    def create(self) -> RunDirectory:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def space_reserve(self) -> SpaceReserve:
        """64 KiB kept aside while a worker runs, released for the last event on a full disk."""
        return SpaceReserve(self.root / ".space-reserve", RESERVE_BYTES)

    def write_event(self, type: str, **data: Any) -> dict[str, Any]:
        """Append one event line. `type` is one of EVENT_TYPES; `time` is added. The line starts on
        a line of its own even after a torn one; on a full disk the space reserve is given up and
        the write tried once more."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"type": type, "time": time.time(), **data}
        line = (json.dumps(event, default=_jsonable) + "\n").encode("utf-8")
        try:
            self._append(line)
        except OSError as exc:
            if not is_disk_full(exc) or not self.space_reserve.release():
                raise
            self._append(line)
        return event

    def _append(self, line: bytes) -> None:
        with self.events.open("a+b") as fh:
            if fh.tell() > 0:  # "a" mode: the position is the end
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":  # a torn line before us: end it, do not join it
                    line = b"\n" + line
            fh.write(line)

    def read_events(self, start: int = 0, *, after_step: int = 0,
                    total_steps: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Events from byte offset `start`; returns them and the offset to continue from.

        A partial last line is left for the next read; a damaged line (a worker killed mid-write, a
        stray print) costs only that line, with a warning, and an event written after a torn
        fragment on the same line is still found. Events are checked (`EventCheck`): a reader that
        continues from an offset passes the step and total it has applied so far."""
        try:
            with self.events.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read()
        except FileNotFoundError:
            return [], start
        except OSError as exc:
            log.warning("cannot read %s: %s", self.events, exc)
            return [], start
        end = chunk.rfind(b"\n") + 1  # stop before a partial last line
        check = EventCheck(str(self.events), step=after_step, total_steps=total_steps)
        events = []
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            event = _parse_line(line, str(self.events))
            if event is not None and check.accept(event):
                events.append(event)
        return events, start + end

    def iter_events(self, type: str | None = None) -> Iterator[dict[str, Any]]:
        events, _ = self.read_events()
        return (e for e in events if type is None or e["type"] == type)

    def write_json(self, path: Path, data: Any) -> None:
        """Write JSON atomically, so readers never see half a file."""
        write_atomic(path, json.dumps(data, indent=2, default=_jsonable))

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def tail_log(self, lines: int = 50) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class EventCheck:
    """The rules an event must pass to count, applied in file order.

    Unknown types are ignored. `total_steps` is set by the first event that states it (or by the
    reader's caller) and changes only with a `start` event; a `progress` / `epoch_end` whose step is
    not a whole number, goes backwards or exceeds the total is ignored. `end` and `error` events
    always count (how the run ended must never be lost); other events with a step past the total
    are ignored. Each ignored event is one warning."""

    def __init__(self, source: str, *, step: int = 0, total_steps: int | None = None) -> None:
        self.source = source
        self.step = max(0, int(step or 0))
        self.total = total_steps if total_steps and total_steps > 0 else None

    def accept(self, event: Any) -> bool:
        reason = self._reject(event)
        if reason is not None:
            log.warning("ignoring an event in %s: %s: %.200s", self.source, reason, json.dumps(event, default=str))
            return False
        return True

    def _reject(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "not a JSON object"
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            return f"unknown event type {kind!r}"
        if kind in OUTCOMES:
            return None
        total, step = event.get("total_steps"), event.get("step")
        if total is not None:
            if not _whole(total) or total < 0:
                return f"total_steps {total!r} is not a whole number"
            total = total or None  # 0: not known yet
            if self.total is not None and total != self.total and kind != "start":
                return f"total_steps {total} differs from the run's {self.total}"
        limit = total if total is not None else self.total
        if step is not None:
            if not _whole(step) or step < 0:
                return f"step {step!r} is not a whole number"
            if limit is not None and step > limit:
                return f"step {step} exceeds total_steps {limit}"
            if kind in STEP_ORDERED and step < self.step:
                return f"step {step} goes backwards (already at {self.step})"
        if total is not None:
            self.total = total
        if step is not None and kind in STEP_ORDERED:
            self.step = step
        return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_line(line: bytes, source: str) -> Any:
    """One events line as JSON; a torn line (a fragment, then a whole event) yields the event."""
    try:
        return json.loads(line)
    except ValueError:
        pass
    start = line.find(b"{", 1)
    for _ in range(_MAX_RESYNC_TRIES):  # the first '{' from which the rest parses whole
        if start == -1:
            break
        with contextlib.suppress(ValueError):
            event = json.loads(line[start:])
            if isinstance(event, dict):
                log.warning("a torn line in %s: skipped %r, kept the event after it", source, line[:start][:80])
                return event
        start = line.find(b"{", start + 1)
    log.warning("skipping a damaged line in %s: %r", source, line[:80])
    return None


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a tmp file + rename: a reader (the job manager, a RunPod sync, a
    resumed job) sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
