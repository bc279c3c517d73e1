"""The job manager: start, queue, supervise, cancel and settle jobs of every kind.

Every process (the MCP server, a second server, the CLI) may start, cancel and read jobs: those
only touch SQLite (`JobStore`) and, for cancel, the worker's process group or pod through its stored
handle. Exactly one process per FINETUNE_MCP_HOME *supervises* (holds `supervisor.lock`): it
launches queued jobs when their slot frees, polls workers, tails events.jsonl into the job row,
and settles jobs whose worker ended. When that process dies, the lock goes with it and the next
server to start (or an already running one, within a few seconds) takes over: it re-attaches live
workers and settles dead ones, so no job stays `running` forever.

Queue: one job at a time per local GPU (`gpu:<i>` slot; or k packed workers of a parallel experiment,
each on `gpu:<i>/k`), FINETUNE_MCP_MAX_CPU_JOBS (default 1) on the CPU, each with its share of the
cores (OMP_NUM_THREADS, unless the server's environment sets it), FINETUNE_MCP_MAX_REMOTE_JOBS
(default 4) per remote backend. Cancel: SIGTERM, then SIGKILL after FINETUNE_MCP_CANCEL_GRACE_S
(default 10); the partial run stays and gets an `end` event with status `cancelled`. A worker
silent (no new log or event bytes) for FINETUNE_MCP_STALL_TIMEOUT_S (default 3600, 0 = never) is
stopped and marked failed.

Observers cannot break a job: a failing progress callback, a malformed events line or a failing
poll is logged and the job goes on.

Faults: a supervisor pass (or one job's part of it) that fails is retried after an exponential
back-off (0.5 s doubling to 30 s), logged once per distinct error, not a traceback a pass. A full
disk is named ("disk full at <path>: free N GB; ...") by `start` (which refuses below 16 MiB free),
and in the error of a job whose worker died of it, with or without its `error` event. The
supervisor keeps 1 MiB aside in FINETUNE_MCP_HOME (`.space-reserve`) and gives it up when SQLite
reports the disk full, so the failure itself can still be recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc

from finetune_mcp.config import Settings
from finetune_mcp.errors import BackendError, ConfigError, DiskFullError, FinetuneError, JobError
from finetune_mcp.jobs.backends import create_backend
from finetune_mcp.jobs.backends.base import Backend, PollResult
from finetune_mcp.jobs.placement import COORDINATOR_SLOT, Placement, gpu_indices, slot_parts, slot_share
from finetune_mcp.jobs.records import check_run_dir, claim_run_dir, clean_metrics, last_ending, log_tail, mark_ended
from finetune_mcp.jobs.store import (
    ACTIVE_STATES,
    Clock,
    InvalidTransition,
    Job,
    JobState,
    JobStore,
    new_job_id,
    unwritable_home,
    validate_job_id,
)
from finetune_mcp.runs.disk import SpaceReserve, disk_full_message, free_bytes, is_disk_full, says_disk_full
from finetune_mcp.runs.rundir import RunDirectory

log = logging.getLogger(__name__)

TARGETS = ("auto", "local", "runpod")


class JobSpec(Protocol):
    """What the manager needs of any kind's spec (a pydantic model): where it runs, and itself as JSON."""

    run_dir: str | None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any: ...

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]: ...


Placer = Callable[[Any, str, Settings], Placement]
Preflight = Callable[[Any, Settings], Any]
ProgressCallback = Callable[[Job], Awaitable[None]]

MAX_POLL_FAILURES = 30
SHUTDOWN_STOP_S = 120.0  # bound on stopping remote workers when the server exits
BACKOFF_CAP_S = 30.0  # longest wait between retries of a failing supervisor pass
HOME_RESERVE_BYTES = 1024 * 1024  # kept aside so SQLite can record a failure on a full disk
LOW_SPACE_BYTES = 16 * 1024 * 1024  # less free: no job starts, and a worker that died is said to have filled it


class Backoff:
    """Retry timing and logging of one failing thing (the supervisor pass, one job): the delay
    doubles from `base` to `cap`; each distinct error is logged once (a line, no traceback)."""

    def __init__(self, what: str, base: float, cap: float = BACKOFF_CAP_S) -> None:
        self.what, self.base, self.cap = what, max(base, 0.05), cap
        self.failures = 0
        self.retry_at = 0.0
        self._logged: set[str] = set()

    @property
    def delay(self) -> float:
        return 0.0 if not self.failures else min(self.cap, self.base * 2 ** (self.failures - 1))

    def failed(self, exc: BaseException, now: float) -> float:
        self.failures += 1
        self.retry_at = now + self.delay
        key = f"{type(exc).__name__}: {exc}"
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s failed: %s; retrying with back-off (up to %.0f s), logged once", self.what, key, self.cap)
        return self.delay

    def succeeded(self) -> bool:
        """Reset; True if it had been failing."""
        was = self.failures > 0
        if was:
            log.info("%s works again after %d failed attempts", self.what, self.failures)
        self.failures, self.retry_at = 0, 0.0
        self._logged.clear()
        return was

    def waiting(self, now: float) -> bool:
        return self.failures > 0 and now < self.retry_at


class JobManager:
    """Owns the job store and the backends; see the module docstring for the life of a job."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: JobStore | None = None,
        backends: Mapping[str, Backend] | None = None,
        placer: Placer | None = None,
        preflight: Preflight | None = None,
        clock: Clock = time.time,
        poll_interval_s: float = 0.5,
        cancel_grace_s: float | None = None,
        max_cpu_jobs: int | None = None,
        max_remote_jobs: int | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.clock = clock
        self.store = store or JobStore(self.settings.db_path, clock=clock)
        self._backends: dict[str, Backend] = dict(backends or {})
        self._placer = placer  # None: each job's kind places it (see start)
        self._preflight = preflight
        self.poll_interval_s = poll_interval_s
        self.cancel_grace_s = _env_number("FINETUNE_MCP_CANCEL_GRACE_S", cancel_grace_s, 10.0, minimum=0)
        self.max_cpu_jobs = int(_env_number("FINETUNE_MCP_MAX_CPU_JOBS", max_cpu_jobs, 1, minimum=1))
        self.max_remote_jobs = int(_env_number("FINETUNE_MCP_MAX_REMOTE_JOBS", max_remote_jobs, 4, minimum=1))
        self.stall_timeout_s = _env_number("FINETUNE_MCP_STALL_TIMEOUT_S", stall_timeout_s, 3600.0, minimum=0)
        self.is_supervisor = False
        self._lock_fd: int | None = None
        self._watched: set[str] = set()  # active jobs whose worker this supervisor polls
        self._launching: dict[str, anyio.CancelScope] = {}
        self._stopping: set[str] = set()
        self._kill_reasons: dict[str, str] = {}
        self._poll_failures: dict[str, int] = {}
        self._pass_backoff = Backoff("supervisor pass", self.poll_interval_s)
        self._job_backoff: dict[str, Backoff] = {}
        self._unsettled: dict[str, PollResult] = {}  # a worker that ended, whose ending could not be recorded yet
        self._home_reserve = SpaceReserve(self.settings.home / ".space-reserve", HOME_RESERVE_BYTES)
        self._tg: anyio.abc.TaskGroup | None = None
        self._changed: anyio.Event | None = None
        self._wake: anyio.Event | None = None

    # -- queries ---------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store.get(validate_job_id(job_id))

    def list(self, state: JobState | str | None = None, limit: int = 20) -> list[Job]:
        if state is not None and state not in JobState._value2member_map_:
            raise JobError(f"unknown state {state!r}; use one of {', '.join(s.value for s in JobState)}")
        return self.store.list(state, max(1, min(int(limit), 500)))

    def run_dir(self, job_id: str) -> RunDirectory:
        """The job's run directory (local, also for RunPod jobs): where metrics, TensorBoard files,
        the adapter and the card live. Raises JobError for an unknown or malformed id."""
        return RunDirectory(Path(self.get(job_id).run_dir))

    def queue_position(self, job: Job) -> int | None:
        """1 = next to start on its slot; None when the job is not queued."""
        if job.state is not JobState.QUEUED:
            return None
        queued = [j for j in self.store.in_states([JobState.QUEUED]) if j.slot == job.slot]
        return next((i + 1 for i, j in enumerate(queued) if j.id == job.id), None)

    def backend(self, name: str) -> Backend:
        """The backend called `name`, created on first use."""
        if name not in self._backends:  # imported on first use (jobs.backends): no SDK loaded at start-up
            self._backends[name] = create_backend(name, self.settings)
        return self._backends[name]

    # -- commands --------------------------------------------------------------------------------

    async def start(self, config: JobSpec, target: str = "auto", *,
                    preflight: Preflight | None = None, placer: Placer | None = None) -> Job:
        """Validate everything that can fail early, then queue the job. On any error nothing is
        left behind: no row, no run directory. `preflight` / `placer` are the job kind's own (the
        registry in `kinds.py` passes them: `kinds.start_job`); the manager's constructor may
        replace them for every job (tests do). Every kind then runs, queues, cancels and settles
        the same way."""
        preflight, placer = self._preflight or preflight, self._placer or placer
        if preflight is None or placer is None:
            raise TypeError("JobManager.start needs the job kind's preflight and placer; use kinds.start_job")
        if target not in TARGETS:
            raise ConfigError(f"must be one of {', '.join(TARGETS)} (got {target!r})", field="target")
        if config.run_dir:  # cheap checks first: a busy folder is refused before the slow ones
            check_run_dir(Path(config.run_dir).expanduser().resolve())
        config = await anyio.to_thread.run_sync(preflight, config, self.settings)
        placement = await anyio.to_thread.run_sync(placer, config, target, self.settings)
        job_id = new_job_id()
        root = Path(config.run_dir).expanduser().resolve() if config.run_dir else self.settings.runs_dir / job_id
        default_root = not config.run_dir
        config = config.model_copy(update={"run_dir": str(root)})
        free = free_bytes(root.parent)
        if free is not None and free < LOW_SPACE_BYTES:  # a run writes far more; it would only die of it
            raise DiskFullError(disk_full_message(root.parent), path=root.parent, free_bytes=free)
        try:
            return self._queue(job_id, root, config, target, placement, default_root)
        except (OSError, sqlite3.Error, ConfigError) as exc:
            if not is_disk_full(exc):
                raise
            where = self.settings.home if isinstance(exc, sqlite3.Error) else root.parent
            raise DiskFullError(disk_full_message(where), path=where, free_bytes=free_bytes(where)) from None

    def _queue(self, job_id: str, root: Path, config: JobSpec, target: str, placement: Placement,
               default_root: bool) -> Job:
        """Claim the run directory, write the spec, insert the row; undone on any failure."""
        try:
            created = claim_run_dir(root)
        except ConfigError as exc:
            if not default_root or not isinstance(exc.__context__, OSError) or is_disk_full(exc.__context__):
                raise
            raise unwritable_home(root, exc.__context__, "the run directory", self.settings.home) from None
        try:
            run_dir = RunDirectory(root)
            run_dir.write_json(run_dir.spec, config.model_dump(mode="json"))
            now = self.clock()
            job = self.store.insert(
                Job(
                    id=job_id, state=JobState.QUEUED, target=target, backend=placement.backend,
                    device=placement.device, slot=placement.slot, placement=placement.to_json(),
                    config=config.model_dump(mode="json"), run_dir=str(root), created_at=now, updated_at=now,
                )
            )
        except BaseException:
            if created:
                shutil.rmtree(root, ignore_errors=True)
            else:
                RunDirectory(root).spec.unlink(missing_ok=True)
            raise
        log.info("job %s queued on %s (%s)", job_id, placement.slot, placement.reason)
        self._notify()
        return job

    async def cancel(self, job_id: str, reason: str = "cancelled on request") -> Job:
        """Cancel a queued or running job; returns it in its final state (cancelled) once the worker
        is gone. A job that already ended is an error, except one already cancelled."""
        validate_job_id(job_id)
        for _ in range(5):  # the job may change state under us (claimed, ended): re-read and retry
            job = self.store.get(job_id)
            if job.state is JobState.CANCELLED:
                return job
            if job.state.terminal:
                raise JobError(f"job {job_id} already {job.state}; there is nothing to cancel", job_id=job_id)
            if job.state is JobState.QUEUED:
                try:
                    job = self.store.transition(job_id, JobState.CANCELLED, expected=JobState.QUEUED, reason=reason)
                except InvalidTransition:
                    continue
                mark_ended(job, "cancelled", reason)
                self._notify()
                return job
            self.store.update(job_id, cancel_requested=True, only_in=ACTIVE_STATES)
            if job_id in self._launching:
                self._launching[job_id].cancel()
                await anyio.sleep(0)
            return await self._stop(self.store.get(job_id))
        return self.store.get(job_id)

    async def wait(
        self, job_id: str, timeout: float, on_progress: ProgressCallback | None = None
    ) -> Job:
        """Wait until the job ends or `timeout` seconds pass; returns the job as it is then.
        `on_progress(job)` is awaited whenever state, step or epoch changes; its errors are logged."""
        validate_job_id(job_id)
        deadline = anyio.current_time() + max(0.0, timeout)
        last: tuple[Any, ...] | None = None
        while True:
            job = self.store.get(job_id)
            key = (job.state, job.step, job.epoch)
            if on_progress is not None and key != last:
                try:
                    await on_progress(job)
                except Exception:  # an observer must not break the wait, let alone the job
                    log.warning("progress callback failed for %s", job_id, exc_info=True)
            last = key
            remaining = deadline - anyio.current_time()
            if job.state.terminal or remaining <= 0:
                return job
            with anyio.move_on_after(min(remaining, 1.0)):  # 1 s: also sees other processes' writes
                await self._changed_event().wait()

    # -- supervision -----------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled (the server's lifespan runs this in its task group). Workers are
        detached: cancelling this leaves them running for the next supervisor."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                while True:
                    try:
                        if not self.is_supervisor:
                            self.is_supervisor = self._try_lock()
                            if self.is_supervisor:
                                log.info("supervising jobs in %s", self.settings.home)
                                self._home_reserve.ensure()
                        if self.is_supervisor:
                            await self.tick()
                    except Exception as exc:  # the loop outlives any one bad pass (disk full, a locked db)
                        self._pass_backoff.failed(exc, anyio.current_time())
                        self._on_failure(exc)
                    else:
                        if self._pass_backoff.succeeded():
                            self._home_reserve.ensure()
                    wake = self._wake_event()
                    wait = self.poll_interval_s if self.is_supervisor else 2.0
                    with anyio.move_on_after(max(wait, self._pass_backoff.delay)):
                        await wake.wait()
                    self._wake = None
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_STOP_S):
                    await self._stop_on_shutdown()
                self._tg = None

    async def _stop_on_shutdown(self) -> None:
        """Workers of backends marked `stop_on_shutdown` (RunPod: a pod bills by the second) do not
        outlive this supervisor: they are stopped and settled as failed, saying why. Local workers
        stay detached for the next supervisor."""
        if not self.is_supervisor:
            return
        for job in self.store.in_states(ACTIVE_STATES):
            backend = self._backends.get(job.backend)
            if backend is None or not backend.stop_on_shutdown:
                continue
            if job.id in self._launching:
                self._launching[job.id].cancel()
            self._kill_reasons[job.id] = (
                f"the server shut down; {job.backend} workers are not left running unattended "
                "(FINETUNE_MCP_RUNPOD_KEEP_ON_SHUTDOWN=1 keeps them for the next server)"
            )
            try:
                await self._stop(self.store.get(job.id))
            except Exception:
                log.exception("stopping %s at shutdown failed", job.id)

    async def tick(self) -> None:
        """One supervisor pass: adopt, poll and settle active jobs, then start what fits. A job whose
        supervision fails is retried after its own back-off; the others go on."""
        now = anyio.current_time()
        active = self.store.in_states(ACTIVE_STATES)
        for job in active:
            if job.id in self._launching or job.id in self._stopping:
                continue
            backoff = self._job_backoff.setdefault(job.id, Backoff(f"supervising {job.id}", self.poll_interval_s))
            if backoff.waiting(now):
                continue
            try:
                if job.id not in self._watched:
                    await self._adopt(job)
                else:
                    await self._check(job)
            except Exception as exc:
                backoff.failed(exc, now)
                self._on_failure(exc)
            else:
                if backoff.succeeded():
                    self._home_reserve.ensure()
        for job_id in set(self._job_backoff) - {job.id for job in active}:
            del self._job_backoff[job_id]
        await self._schedule()

    def _on_failure(self, exc: BaseException) -> None:
        """A full disk: give up the home's reserve, so the next try can record what happened."""
        if is_disk_full(exc) and self._home_reserve.release():
            log.warning("%s; released %d bytes kept aside to record job failures",
                        disk_full_message(self.settings.home), HOME_RESERVE_BYTES)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock: another server may supervise now
            self._lock_fd = None
            self.is_supervisor = False
        self.store.close()

    def _try_lock(self) -> bool:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.settings.home / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def _adopt(self, job: Job) -> None:
        """An active job nobody here watches: left by a server that stopped. Re-attach or settle."""
        if job.handle is None:
            await self._settle(job, PollResult(alive=False, detail="the server stopped before the worker started"))
            return
        backend = self.backend(job.backend)
        if await backend.reattach(job.handle):
            log.info("re-attached to %s (%s)", job.id, backend.public_info(job.handle))
            self._watched.add(job.id)
            return
        await self._settle(job, PollResult(alive=False, detail="the worker was gone when the server (re)started"))

    async def _check(self, job: Job) -> None:
        if job.id in self._unsettled:  # the worker ended; recording it failed last time
            await self._settle(job, self._unsettled[job.id])
            return
        backend = self.backend(job.backend)
        try:
            poll = await backend.poll(job.handle or {})
        except Exception as exc:
            failures = self._poll_failures[job.id] = self._poll_failures.get(job.id, 0) + 1
            log.warning("polling %s failed (%d in a row): %s", job.id, failures, exc)
            if failures >= MAX_POLL_FAILURES:
                self._kill_reasons[job.id] = f"the {job.backend} backend could not be polled: {exc}"
                self._start_stop(job)
            return
        self._poll_failures.pop(job.id, None)
        if not poll.alive:  # kept until recorded: the exit code is known once (a full disk may fail the record)
            self._unsettled[job.id] = poll
        job = self._ingest_events(job)
        if poll.cost_usd is not None:
            job = self.store.update(job.id, cost_usd=poll.cost_usd) or job
        if not poll.alive:
            await self._settle(job, poll)
        elif job.cancel_requested:  # asked by a process that did not finish the cancel (CLI ^C)
            self._start_stop(job)
        elif self.stall_timeout_s and self.clock() - self._heartbeat(job) > self.stall_timeout_s:
            self._kill_reasons[job.id] = (
                f"the worker wrote nothing for {self.stall_timeout_s:.0f} s and was stopped "
                "(FINETUNE_MCP_STALL_TIMEOUT_S)"
            )
            self._start_stop(job)

    async def _schedule(self) -> None:
        queued = self.store.in_states([JobState.QUEUED])
        if not queued:
            return
        used: dict[str, float] = {}
        for slot, count in self.store.active_by_slot().items():
            for part in slot_parts(slot):  # a DDP job on gpu:0,1 holds gpu:0 and gpu:1; one on gpu:0/4 a quarter of gpu:0
                used[part] = used.get(part, 0.0) + count * slot_share(slot)
        started = False
        for job in queued:
            share = slot_share(job.slot)
            if any(used.get(part, 0.0) + share > self._capacity(part) + 1e-9 for part in slot_parts(job.slot)):
                continue
            try:
                backend = self.backend(job.backend)
            except BackendError as exc:
                self.store.transition(job.id, JobState.FAILED, expected=JobState.QUEUED, reason="no backend",
                                      error=str(exc))
                continue
            to = JobState.PROVISIONING if backend.provisions else JobState.RUNNING
            try:
                job = self.store.transition(job.id, to, expected=JobState.QUEUED, reason=f"slot {job.slot} free")
            except InvalidTransition:
                continue
            for part in slot_parts(job.slot):
                used[part] = used.get(part, 0.0) + share
            scope = self._launching[job.id] = anyio.CancelScope()
            assert self._tg is not None, "tick() with queued jobs runs inside run()"
            self._tg.start_soon(self._launch, job, backend, scope)
            started = True
        if started:
            self._notify()

    def _capacity(self, slot: str) -> int:
        if slot.startswith("gpu:"):
            return 1
        if slot == COORDINATOR_SLOT:
            return 1_000_000
        return self.max_cpu_jobs if slot == "cpu" else self.max_remote_jobs

    async def _launch(self, job: Job, backend: Backend, scope: anyio.CancelScope) -> None:
        async def save_handle(handle: dict[str, Any]) -> None:
            self.store.update(job.id, handle=handle, pid=handle.get("pid"), pgid=handle.get("pgid"))

        handle = None
        current = self.store.get(job.id)
        if current.state.terminal or current.cancel_requested:  # cancelled before it could start
            self._launching.pop(job.id, None)
            await self._settle(current, PollResult(alive=False))
            return
        try:
            with scope:
                handle = await backend.launch(
                    job, RunDirectory(Path(job.run_dir)).spec, env=self._worker_env(job), save_handle=save_handle
                )
        except Exception as exc:
            self._launching.pop(job.id, None)
            detail = str(exc) if isinstance(exc, FinetuneError) else f"{type(exc).__name__}: {exc}"
            await self._settle(self.store.get(job.id), PollResult(alive=False, detail=f"could not start: {detail}"))
            return
        self._launching.pop(job.id, None)
        if handle is None:  # cancelled while provisioning: cancel() settles it
            return
        await save_handle(handle)
        self.store.update(job.id, heartbeat_at=self.clock())
        if backend.provisions:
            with contextlib.suppress(InvalidTransition):
                self.store.transition(job.id, JobState.RUNNING, expected=JobState.PROVISIONING, reason="worker started")
        self._watched.add(job.id)
        log.info("job %s started (%s)", job.id, backend.public_info(handle))
        if self.store.get(job.id).cancel_requested:
            self._start_stop(self.store.get(job.id))
        self._notify()

    def _worker_env(self, job: Job) -> dict[str, str]:
        """The worker's variables on top of its allow-listed base (`jobs.worker_env`); secrets travel
        only here: the Hub token, and the variables the job's placement names (a teacher's key)."""
        env = {"FINETUNE_MCP_HOME": str(self.settings.home), "FINETUNE_MCP_JOB_ID": job.id, "PYTHONUNBUFFERED": "1"}
        placement = Placement.from_json(job.placement)
        if placement.backend == "local":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_indices(placement))
        if placement.slot == "cpu" and self.max_cpu_jobs > 1 and not os.environ.get("OMP_NUM_THREADS"):
            env["OMP_NUM_THREADS"] = str(cpu_threads_per_slot(self.max_cpu_jobs))
        if self.settings.hf_token:
            env["HF_TOKEN"] = self.settings.hf_token
        env.update({name: os.environ[name] for name in placement.env if os.environ.get(name)})
        return env

    def _start_stop(self, job: Job) -> None:
        if job.id in self._stopping or self._tg is None:
            return
        self._stopping.add(job.id)
        self._tg.start_soon(self._stop, job)

    async def _stop(self, job: Job) -> Job:
        """Stop the worker (SIGTERM, grace, SIGKILL / terminate the pod) and settle the job."""
        self._stopping.add(job.id)
        try:
            if job.handle is not None:
                await self.backend(job.backend).cancel(job.handle, self.cancel_grace_s)
            return await self._settle(self.store.get(job.id), PollResult(alive=False))
        finally:
            self._stopping.discard(job.id)

    async def _settle(self, job: Job, poll: PollResult) -> Job:
        """The worker is gone: finalize with the backend, decide the ending, record it once."""
        if job.state.terminal:
            return job
        if job.id in self._watched:  # until recorded (a full disk may fail it): the next pass retries with it
            self._unsettled.setdefault(job.id, poll)
        job = self._ingest_events(job)
        state, error = self._decide(job, poll)
        cost = poll.cost_usd if poll.cost_usd is not None else job.cost_usd
        if job.handle is not None:
            try:
                final_cost = await self.backend(job.backend).finalize(job.handle, state)
            except Exception as exc:
                log.warning("finalizing %s failed: %s", job.id, exc)
                job = self._ingest_events(job)
                state, error = self._decide(job, poll)
                if state is not JobState.CANCELLED:
                    state = JobState.FAILED
                error = ((error + "\n") if error else "") + f"cleaning up the {job.backend} worker failed: {exc}"
            else:
                job = self._ingest_events(job)  # finalize may have brought the last remote events
                state, error = self._decide(job, poll)
                cost = final_cost if final_cost is not None else cost  # billed to the end, also if never polled
        try:
            new = self.store.transition(
                job.id, state, expected=ACTIVE_STATES, reason=(error or "worker finished").splitlines()[0],
                error=error, cost_usd=cost,
            )
        except InvalidTransition:  # another process settled it first
            self._forget(job.id)
            return self.store.get(job.id)
        self._forget(job.id)
        if state is not JobState.SUCCEEDED:
            mark_ended(new, state.value, (error or "").splitlines()[0] if error else state.value)
        log.info("job %s %s%s", job.id, state, f": {error.splitlines()[0]}" if error else "")
        self._notify()
        await self._end_children(new)
        return new

    async def _end_children(self, job: Job) -> None:
        """The jobs a coordinating job queued (`details["child_jobs"]`) never outlive it: once it ended
        (cancelled, failed, or succeeded after they all ended), those still queued or running are
        cancelled — in the background while supervising, so one slow pod does not hold up the pass."""
        children = [c for c in Placement.from_json(job.placement).details.get("child_jobs") or []
                    if self.store.get(c).state in ACTIVE_STATES]
        reason = f"job {job.id}, which started this one, ended {job.state.value}"
        for child in children:
            if self._tg is not None:
                self._tg.start_soon(self._cancel_quietly, child, reason)
            else:
                await self._cancel_quietly(child, reason)

    async def _cancel_quietly(self, job_id: str, reason: str) -> None:
        try:
            await self.cancel(job_id, reason)
        except Exception:  # one child that cannot be stopped must not stop the others (the pass retries it)
            log.exception("cancelling %s failed", job_id)

    def _forget(self, job_id: str) -> None:
        self._watched.discard(job_id)
        self._kill_reasons.pop(job_id, None)
        self._poll_failures.pop(job_id, None)
        self._unsettled.pop(job_id, None)

    def _decide(self, job: Job, poll: PollResult) -> tuple[JobState, str | None]:
        run_dir = RunDirectory(Path(job.run_dir))
        ending = last_ending(run_dir)
        where = f"step {job.step}/{job.total_steps or '?'}"
        if job.id in self._kill_reasons:
            return JobState.FAILED, self._kill_reasons[job.id] + log_tail(run_dir)
        if job.cancel_requested:
            return JobState.CANCELLED, f"cancelled at {where}; the partial run is kept in {job.run_dir}"
        if ending and ending.get("type") == "end" and ending.get("status") == "succeeded":
            if poll.exit_code in (0, None):
                return JobState.SUCCEEDED, None
            return JobState.FAILED, f"the worker reported success but {poll.detail}" + log_tail(run_dir)
        if ending and ending.get("type") == "error":
            work = ending.get("work") or "the job"  # the worker names its kind's work ("training")
            return JobState.FAILED, f"{work} failed at {where}: {ending.get('message')}" + log_tail(run_dir)
        detail = poll.detail or "the worker stopped"
        tail = log_tail(run_dir)
        free = free_bytes(run_dir.root)
        if says_disk_full(tail) or (free is not None and free < LOW_SPACE_BYTES):
            detail += f" ({disk_full_message(run_dir.root)})"
        return JobState.FAILED, f"{detail} at {where} without reporting an end" + tail

    def _ingest_events(self, job: Job) -> Job:
        """Fold new events.jsonl lines into the row: step, total, epoch, ETA, latest metrics."""
        run_dir = RunDirectory(Path(job.run_dir))
        events, offset = run_dir.read_events(job.events_offset, after_step=job.step, total_steps=job.total_steps)
        if offset == job.events_offset:
            return job
        fields: dict[str, Any] = {"events_offset": offset, "heartbeat_at": self.clock()}
        metrics = dict(job.metrics)
        for event in events:
            kind = event.get("type")
            if kind in ("start", "progress") and event.get("total_steps") is not None:
                fields["total_steps"] = int(event["total_steps"])
            if kind == "progress":
                if event.get("step") is not None:
                    fields["step"] = int(event["step"])
                if event.get("epoch") is not None:
                    fields["epoch"] = float(event["epoch"])
                fields["eta_s"] = event.get("eta_s")
            if kind == "epoch_end" and event.get("epoch") is not None:
                fields["epoch"] = float(event["epoch"])
            if kind in ("progress", "eval"):
                metrics.update(clean_metrics(event))
        fields["metrics"] = metrics
        if fields.get("eta_s") is None and "step" in fields:
            fields["eta_s"] = self._estimate_eta(job, fields)
        return self.store.update(job.id, only_in=ACTIVE_STATES, **fields) or self.store.get(job.id)

    def _estimate_eta(self, job: Job, fields: dict[str, Any]) -> float | None:
        step, total = fields.get("step", job.step), fields.get("total_steps", job.total_steps)
        if not job.started_at or not step or not total:
            return None
        return max(0.0, (self.clock() - job.started_at) / step * (total - step))

    def _heartbeat(self, job: Job) -> float:
        run_dir = RunDirectory(Path(job.run_dir))
        times = [job.heartbeat_at or job.started_at or job.created_at]
        for path in (run_dir.events, run_dir.log):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
        return max(t for t in times if t is not None)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self._wake is not None:
            self._wake.set()

    def _changed_event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _wake_event(self) -> anyio.Event:
        if self._wake is None:
            self._wake = anyio.Event()
        return self._wake


def cpu_threads_per_slot(slots: int) -> int:
    """Each CPU slot's share of this process's cores: torch (OpenMP) otherwise starts one thread per core
    in every worker, and two workers' threads on 2 cores made a parallel=2 experiment 2.5× slower than
    serial; with a share each it was as fast (benchmarks/RESULTS.md, "Experiments in parallel")."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, slots))


def queue_limits() -> tuple[int, int]:
    """(CPU slots, slots per remote backend) as this environment sets them: what a planner that
    spreads work over slots (a parallel experiment) may count on."""
    return (int(_env_number("FINETUNE_MCP_MAX_CPU_JOBS", None, 1, minimum=1)),
            int(_env_number("FINETUNE_MCP_MAX_REMOTE_JOBS", None, 4, minimum=1)))


def _env_number(name: str, given: float | None, default: float, *, minimum: float) -> float:
    if given is not None:
        return given
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= minimum:
        raise ConfigError(f"{name} must be a number >= {minimum:g} (got {raw!r}); fix or unset it")
    return value
