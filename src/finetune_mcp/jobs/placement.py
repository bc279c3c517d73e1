"""Where a job runs, as data: `Placement` (decided once at start, stored with the job), `GpuInfo`
(a local GPU as NVML reports it) and the queue slots a placement holds.

The ground floor of `jobs/`: the router decides placements, the manager counts slots, backends
launch on them; none of them needs the others to name one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placement:
    """Where a job will run, decided once at `start_finetune` and stored with the job.


    `backend` names an entry of the manager's backends ("local", "runpod"). `device` is what the
    worker trains on. `gpu_index` is the local GPU the job owns (the local backend sets
    CUDA_VISIBLE_DEVICES to it); None for CPU and remote jobs. `reason` is shown to the agent
    ("no local GPU; RunPod A40 fits 4-bit Qwen3-4B"). `details` carries backend-specific choices
    (e.g. RunPod gpu type, cloud, price per hour, the spending the user agreed to) as JSON-able values.
    `env` names the variables of the server's environment the worker receives beyond the base set
    (`jobs.worker_env`): an enhancement job's teacher key, checked against its endpoint at start.
    Names only; the values are read from the environment when the worker is launched.
    """


    backend: str
    device: str = "cpu"
    gpu_index: int | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    env: tuple[str, ...] = ()


    @property
    def slot(self) -> str:
        """The queue slot: one job at a time per local GPU, a configurable number on CPU/remote;
        `details["slot"]` names another (COORDINATOR_SLOT: a worker that only follows other jobs).
        `details["gpu_share"] = k` makes it `gpu:<i>/k`: one of k workers packed on that GPU (a parallel
        experiment of a small model, `experiment.parallel`), each holding 1/k of it (`slot_share`)."""
        if self.details.get("slot"):
            return str(self.details["slot"])
        if self.backend != "local":
            return self.backend
        if self.gpu_index is None:
            return "cpu"
        indices = self.details.get("gpu_indices") or [self.gpu_index]  # several under DDP: "gpu:0,1"
        share = int(self.details.get("gpu_share") or 1)
        return "gpu:" + ",".join(str(i) for i in indices) + (f"/{share}" if share > 1 else "")


    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "device": self.device, "gpu_index": self.gpu_index,
            "reason": self.reason, "details": dict(self.details), "env": list(self.env),
        }


    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Placement:
        return cls(
            backend=data["backend"], device=data.get("device", "cpu"), gpu_index=data.get("gpu_index"),
            reason=data.get("reason", ""), details=dict(data.get("details") or {}),
            env=tuple(data.get("env") or ()),
        )


SHARES = "shares"
"""`details[SHARES]` of a placement spread over several jobs: [{"runs": [...], "placement": {...}}]."""
COORDINATOR_SLOT = "coordinator"
"""The slot of workers that train nothing and only follow jobs they queued (a parallel experiment's
gatherer, whose placement lists them in `details["child_jobs"]`): never waits, so it cannot hold up
the jobs it follows, and the manager cancels those jobs when it ends in any way but success."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_gb: float
    free_gb: float


def slot_parts(slot: str) -> list[str]:
    """`gpu:0,1` → [`gpu:0`, `gpu:1`]; `gpu:0/4` → [`gpu:0`]; any other slot is its own single part."""
    if slot.startswith("gpu:"):
        return [f"gpu:{index}" for index in slot.removeprefix("gpu:").split("/")[0].split(",")]
    return [slot]


def slot_share(slot: str) -> float:
    """How much of each of its parts a job on `slot` holds: 1/k for `gpu:<i>/k`, else all of one unit."""
    if slot.startswith("gpu:") and "/" in slot:
        return 1.0 / int(slot.rsplit("/", 1)[1])
    return 1.0


def gpu_indices(placement: Placement) -> list[int]:
    """The local GPUs a placement owns, in order (empty for CPU and remote jobs)."""
    if placement.backend != "local" or placement.gpu_index is None:
        return []
    return list(placement.details.get("gpu_indices") or [placement.gpu_index])
