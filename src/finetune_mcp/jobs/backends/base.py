"""What the job manager needs from a place that runs workers: the `Backend` protocol — the launcher
seam. The manager calls nothing else on an engine; `jobs.backends.BACKENDS` names the engines.

A backend runs one `finetune-mcp worker run <run_dir>/spec.json` per job somewhere (a local process
group, a RunPod pod) and keeps the job's LOCAL run directory current, because the manager and every
later tool (metrics, screenshots, card, deploy) read only that directory.

How the manager drives a backend, per job (all methods are async and called from the server's
event loop; do blocking I/O in `anyio.to_thread.run_sync`):

    queued ──(slot free)──▶ [provisioning if backend.provisions] ──launch() returns──▶ running
    running: poll() every ~0.5-1 s  ──alive=False──▶ finalize() ──▶ succeeded | failed | cancelled
    cancel_job: cancel(handle, grace_s) ──▶ finalize() ──▶ cancelled
    server restart: reattach(handle) ── True: keep polling │ False: finalize() ──▶ failed (reason)

The handle is the backend's own JSON-serialisable dict (pid + process start time, pod id, ...). It is
stored in SQLite (`jobs.handle`), so a restarted server, or the CLI's `cancel`, can use it without
the process that launched the job. Never put secrets in it.

Secrets (HF_TOKEN, ...) reach the worker only through `env` in `launch` (process environment, pod
env vars), never through spec.json, the handle, logs or exceptions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job, JobState

Handle = dict[str, Any]
SaveHandle = Callable[[Handle], Awaitable[None]]


@dataclass(frozen=True)
class PollResult:
    """One look at a worker.

    `alive`: the worker (or its pod) is still running. When False, `exit_code` is the worker's exit
    status if known (None when the process is not ours to reap, e.g. after a restart; the manager
    then decides from events.jsonl) and `detail` says what the backend saw ("pod was terminated by
    RunPod: out of credit"). `cost_usd`: money spent so far, for backends that bill.
    """

    alive: bool
    exit_code: int | None = None
    detail: str | None = None
    cost_usd: float | None = None


@runtime_checkable
class Backend(Protocol):
    """A place that runs workers. Implementations: `LocalBackend` (process groups), RunPod (pods)."""

    name: str
    """Key in the manager's backend table and `Placement.backend` ("local", "runpod")."""

    provisions: bool
    """True if `launch` first acquires a machine (minutes). The manager then moves the job
    queued → provisioning before calling `launch` and provisioning → running when it returns, so the
    agent sees `provisioning` meanwhile. False: queued → running, then `launch`."""

    stop_on_shutdown: bool
    """True makes the manager stop this backend's workers (and settle their jobs as failed, saying
    why) when the supervising server exits, instead of leaving them for the next server; for
    backends that bill while nobody watches (RunPod). False for local process groups."""

    async def launch(self, job: Job, spec_path: Path, *, env: Mapping[str, str], save_handle: SaveHandle) -> Handle:
        """Start the worker for `job` on `spec_path` (= <run_dir>/spec.json, already written) and
        return its handle once the worker runs.

        `env`: variables the worker needs on top of a clean environment (secrets, FINETUNE_MCP_HOME,
        CUDA_VISIBLE_DEVICES); pass them as process/pod environment only.
        `save_handle(partial)`: call it as soon as there is something to clean up (a pod id), before
        waiting for the machine; the manager stores it, so a cancel or a restart during
        provisioning can still `cancel`/`finalize` it. The manager may cancel this coroutine
        (anyio cancellation) when the job is cancelled while provisioning; it then calls
        `cancel(partial)` and `finalize(partial)`. Raise `BackendError` with a message that says
        what to fix when the worker cannot be started; the job becomes failed with that message.
        """
        ...

    async def poll(self, handle: Handle) -> PollResult:
        """Is the worker still running? Called about every second for each running job; keep it
        cheap (rate-limit remote API calls inside). A remote backend also brings the local run
        dir's events.jsonl and train.log up to date here (append new bytes), because the manager
        reads progress from the local events.jsonl right after each poll."""
        ...

    async def cancel(self, handle: Handle, grace_s: float) -> None:
        """Stop the worker: ask politely (SIGTERM / stop), wait up to `grace_s`, then force
        (SIGKILL / terminate the pod). Return when it is gone. Idempotent: a worker that is already
        gone is not an error. May be called from a process that did not launch the job (the CLI)."""
        ...

    async def reattach(self, handle: Handle) -> bool:
        """After a server restart: True if this handle's worker is still running (and is the same
        worker: check a process start time, a pod id), so the manager keeps polling it; False if it
        is gone, and the manager settles the job from events.jsonl and calls `finalize`."""
        ...

    async def finalize(self, handle: Handle, state: JobState) -> float | None:
        """Called once the worker is gone and before the job's final state is recorded; `state` is
        the ending the manager is about to record (succeeded/failed/cancelled). Bring the final
        artifacts into the local run dir (adapter/, tensorboard/, entropy/, result.json, the last
        events and log lines) and release everything billable (terminate the pod) in EVERY ending.
        Must be idempotent (it can run twice, e.g. a CLI cancel and the server both settle) and
        should not raise for things already cleaned up; a `BackendError` raised here is recorded in
        the job's error and the job is marked failed unless it was cancelled.

        Returns what the worker cost in all (None for backends that do not bill): only here is the
        end of the billing known, and a job stopped before its first poll (a cancel, a shutdown right
        after launch) has no cost from `poll` at all; the manager records this one."""
        ...

    def public_info(self, handle: Handle) -> dict[str, Any]:
        """What `get_job` may show about the handle (pid, pod id, GPU type); never secrets."""
        ...
