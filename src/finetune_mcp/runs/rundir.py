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
    card/            README.md + PNG plots
    experiment/      an experiment job's table.json, report.md, plot.png; its runs in runs/<arm>-s<seed>/

Events are appended with one `write` of a whole line, so a reader tailing the file sees whole
lines or nothing; `read_events` skips a trailing partial line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENT_TYPES = ("start", "progress", "eval", "epoch_end", "end", "error")


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

    def write_event(self, type: str, **data: Any) -> dict[str, Any]:
        """Append one event line. `type` is one of EVENT_TYPES; `time` is added."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"type": type, "time": time.time(), **data}
        line = json.dumps(event, default=_jsonable) + "\n"
        with self.events.open("a", encoding="utf-8") as fh:
            fh.write(line)
        return event

    def read_events(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events from byte offset `start`; returns them and the offset to continue from.

        A partial last line is left for the next read; a damaged line (a worker killed mid-write, a
        stray print) costs only that line, with a warning."""
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
        events = []
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("skipping a damaged line in %s: %r", self.events, line[:80])
                continue
            if isinstance(event, dict):
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
