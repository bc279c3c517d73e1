"""Which weights of a run: its adapter, merged model, GGUF exports and checkpoints, read in one place.

Every tool that builds on a finished run (evaluate, sample, export, deploy, the job view) asks here
instead of joining `adapter/` or `checkpoints/checkpoint-<n>` to a run directory by hand, so "what
does this job have, and what is missing" has one answer and one wording.

Checkpoints are part of the run contract: transformers' Trainer writes `checkpoints/checkpoint-<step>/`
every `save_steps` (or epoch), keeping the last `save_total_limit`; each holds the LoRA adapter, the
optimiser state and `trainer_state.json`, whose `log_history` gives the losses listed here. A
checkpoint folder is an adapter folder (adapter_config.json + weights + the tokenizer), so every tool
that takes an adapter takes a checkpoint.

A checkpoint is named by step (`40`) or `"latest"`; another job's checkpoint by `"<job_id>:<step>"`
(`"ft-3f9a0c1b2d4e:40"`, `"ft-3f9a0c1b2d4e:latest"`, or the bare id for its latest).

Also read here: `tracking/trackers.json` (the trackers a run used and how to open each dashboard,
written by `train.tracking`) and a RunPod job's `checkpoints/transfer.json` (which checkpoints came
back within the size limit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.errors import JobError
from finetune_mcp.runs.rundir import RunDirectory

CHECKPOINT_PREFIX = "checkpoint-"
TRANSFER_RECORD = "transfer.json"  # a RunPod job's checkpoints/: which came back from the pod, which stayed
TRACKERS_RECORD = "trackers.json"  # tracking/: the trackers a run used and how to open each dashboard
_REF = re.compile(r"^(?P<job>ft-[0-9a-f]{12})(?::(?P<step>\d{1,9}|latest))?$")
CheckpointName = int | str  # a step number, or "latest"


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its step, when it was written, the last train / eval loss logged up to it."""

    step: int
    path: Path
    time: float | None
    train_loss: float | None
    eval_loss: float | None
    epoch: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "path": str(self.path), "time": self.time, "epoch": self.epoch,
                "train_loss": self.train_loss, "eval_loss": self.eval_loss}


def parse_checkpoint_ref(value: str) -> tuple[str, CheckpointName] | None:
    """`"<job_id>[:<step>|:latest]"` as (job id, step or "latest"); None for anything else (a path)."""
    match = _REF.match(value.strip())
    if match is None:
        return None
    step = match["step"] or "latest"
    return match["job"], (int(step) if step.isdigit() else step)


def export_tokenizer(gguf: Path) -> Path | None:
    """The training tokenizer of an export_model file given by path: its run's adapter/ (or merged/)
    folder when it lies in a run's export/, else the file's own folder when it holds one."""
    folders = [gguf.parent]
    if gguf.parent.name == "export":
        run = RunDirectory(gguf.parent.parent)
        folders = [run.adapter, run.merged, *folders]
    return next((f for f in folders if (f / "tokenizer_config.json").is_file()), None)


def tracking_folder(run: RunDirectory) -> Path:
    """tracking/: the local stores of the run's trackers (Trackio, W&B offline, MLflow files) and
    trackers.json."""
    return run.root / "tracking"


class RunArtifacts:
    """The weights a run left behind. `job_id` only words the errors ("job ft-... has no merged model")."""

    def __init__(self, run: RunDirectory | Path | str, job_id: str | None = None) -> None:
        self.run = run if isinstance(run, RunDirectory) else RunDirectory(Path(run))
        self.job_id = job_id or self.run.root.name

    def _error(self, text: str) -> JobError:
        return JobError(f"job {self.job_id} {text}", job_id=self.job_id)

    def trained_backend(self) -> str | None:
        """The backend training really used ("unsloth" | "hf", from result.json), or None before a result.

        Why not the config's: backend="auto" may train a small model with transformers on a GPU that
        has Unsloth (the step plan), and a job that reads the run must load it as it was trained.
        """
        if not self.run.result.is_file():
            return None
        backend = self.run.read_json(self.run.result).get("backend")
        return backend if backend in ("unsloth", "hf") else None

    # -- the adapter and the merged model -----------------------------------------------------------
    def has_adapter(self) -> bool:
        return (self.run.adapter / "adapter_config.json").is_file()

    def adapter(self, checkpoint: CheckpointName | None = None) -> Path:
        """The final adapter/ folder, or a checkpoint's (an adapter folder too); a JobError with the fix."""
        if checkpoint is not None:
            return self.checkpoint(checkpoint).path
        if not self.has_adapter():
            raise self._error(f"left no LoRA adapter in {self.run.adapter} (adapter_config.json is missing); "
                              "pick a succeeded training job from list_jobs(state='succeeded')")
        return self.run.adapter

    def merged(self) -> Path:
        """The merged model saved by `save_merged` or a merged deploy; a JobError with the ways to make one."""
        if not (self.run.merged / "config.json").is_file():
            raise self._error(f"has no merged model in {self.run.merged}; train with save_merged=true, or "
                              "deploy_to_hf(merge=true) once, or use its adapter (weights='adapter')")
        return self.run.merged

    def merged_folder(self, checkpoint: CheckpointName | None = None) -> Path:
        """Where the merged model of the final adapter (merged/) or of one checkpoint
        (merged-step<N>/) is written; a checkpoint's never replaces the final one."""
        if checkpoint is None:
            return self.run.merged
        return self.run.root / f"merged-step{self.checkpoint(checkpoint).step}"

    # -- GGUF exports --------------------------------------------------------------------------------
    def exports(self) -> list[dict[str, Any]]:
        """The recorded exports whose file is still there, oldest first."""
        return sorted(self.run.read_exports(), key=lambda e: float(e.get("time") or 0))

    def gguf(self, quantization: str | None = None, checkpoint: int | None = None) -> dict[str, Any]:
        """The latest export of the final adapter, or of the checkpoint at step `checkpoint` (of
        `quantization` when given); a JobError saying how to make one."""
        exports = [e for e in self.exports() if e.get("checkpoint") == checkpoint]
        if not exports:
            which = f"of its checkpoint at step {checkpoint} " if checkpoint is not None else ""
            raise self._error(f"has no exported GGUF {which}yet; run export_model(job_id={self.job_id!r}, "
                              "quantization='f16') first, wait for it, then use weights='gguf'")
        if quantization is not None:
            wanted = quantization.strip().lower()
            have = ", ".join(sorted({str(e.get("quantization")) for e in exports}))
            exports = [e for e in exports if str(e.get("quantization", "")).lower() == wanted]
            if not exports:
                raise self._error(f"has no {wanted} export (it has: {have}); export it with "
                                  f"export_model(job_id={self.job_id!r}, quantization={wanted!r}) or pick one of those")
        return exports[-1]

    # -- checkpoints ---------------------------------------------------------------------------------
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint still on disk, by step (an unreadable trainer_state.json leaves no losses)."""
        found = []
        root = self.run.checkpoints
        for folder in root.glob(f"{CHECKPOINT_PREFIX}*") if root.is_dir() else ():
            step = folder.name.removeprefix(CHECKPOINT_PREFIX)
            if folder.is_dir() and step.isdigit():
                found.append(_read_checkpoint(folder, int(step)))
        return sorted(found, key=lambda c: c.step)

    def trackers(self) -> dict[str, Any] | None:
        """tracking/trackers.json: project, run name, and per tracker where it wrote and how to open its
        dashboard (None when the run used TensorBoard alone, or the record is unreadable)."""
        try:
            record = self.run.read_json(tracking_folder(self.run) / TRACKERS_RECORD)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def checkpoint_transfer(self) -> dict[str, Any] | None:
        """A RunPod job's checkpoints/transfer.json: the size limit, which checkpoints came back and which
        stayed on the pod (None for a local run, or an unreadable record)."""
        try:
            record = self.run.read_json(self.run.checkpoints / TRANSFER_RECORD)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        mb = round(float(record.get("limit_bytes") or 0) / 2**20, 1)
        left = record.get("left_on_pod") or []
        note = (f"{len(left)} checkpoint(s) over the {mb} MB limit stayed on the pod and are gone with it "
                "(FINETUNE_MCP_RUNPOD_CHECKPOINTS_MAX_MB raises the limit)" if left else
                f"every checkpoint the pod kept came back (limit {mb} MB)")
        return {**record, "note": note}

    def checkpoint(self, name: CheckpointName) -> Checkpoint:
        """The checkpoint at step `name` (or the latest); a JobError that lists the ones there are."""
        kept = self.checkpoints()
        if not kept:
            raise self._error(f"kept no checkpoints in {self.run.checkpoints}; train with save_steps=N (and "
                              "save_total_limit) to keep some, or use its final adapter (no checkpoint=)")
        if name == "latest":
            return kept[-1]
        step = _step(name)
        for checkpoint in kept:
            if checkpoint.step == step:
                return checkpoint
        raise self._error(f"has no checkpoint at step {step}; it keeps steps "
                          f"{', '.join(str(c.step) for c in kept)} (or pass 'latest')")


def _step(name: CheckpointName) -> int:
    """A checkpoint name as a step; a JobError for anything but a whole number or 'latest'."""
    if isinstance(name, int) and not isinstance(name, bool) and name >= 0:
        return name
    if isinstance(name, str) and name.strip().isdigit():
        return int(name.strip())
    raise JobError(f"checkpoint {name!r} is not a step number or 'latest'; pass e.g. checkpoint=40 or "
                   "checkpoint='latest' (get_job lists the checkpoints)")


def _read_checkpoint(folder: Path, step: int) -> Checkpoint:
    state_file = folder / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        written: float | None = state_file.stat().st_mtime
    except (OSError, ValueError):
        state, written = {}, None
    history = [h for h in state.get("log_history", []) if isinstance(h, dict)] if isinstance(state, dict) else []
    return Checkpoint(step=step, path=folder, time=written, epoch=_number(state.get("epoch") if state else None),
                      train_loss=_last(history, "loss"), eval_loss=_last(history, "eval_loss"))


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if _number(h.get(key)) is not None]
    return float(values[-1]) if values else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
