"""JobManager with real worker processes (tests/jobs/scripted_worker.py), real signals and SQLite:
endings, the queue, cancel, restarts and observers. The clock is stepped where time matters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from finetune_mcp.errors import BackendError, ConfigError, JobError
from finetune_mcp.jobs.backends.local import _start_ticks, process_group_alive
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.store import Job, JobState

from .conftest import SteppedClock, config

Make = Callable[..., JobManager]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def events(job: Job) -> list[dict]:
    path = Path(job.run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{\"")]


async def run_to_end(manager: JobManager, timeout: float = 10) -> Job:
    """Supervise `manager` while one job of `config()` runs to its end: the job as it ended."""
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        done = await manager.wait(job.id, timeout)
        tg.cancel_scope.cancel()
    return done


async def test_success_folds_events_into_the_row(make_manager: Make) -> None:
    clock = SteppedClock()
    manager = make_manager("succeed:3", clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        assert job.state is JobState.QUEUED and (Path(job.run_dir) / "spec.json").is_file()
        done = await manager.wait(job.id, 10)
        tg.cancel_scope.cancel()
    assert done.state is JobState.SUCCEEDED, done.error
    assert (done.step, done.total_steps, done.epoch, done.error) == (3, 3, 1.0, None)
    assert done.metrics["train/loss"] == pytest.approx(2 / 3)
    assert done.metrics["train/grad_norm"] == "nan"  # non-finite numbers stay readable as JSON
    assert done.started_at <= done.ended_at
    assert [c.to_state for c in manager.store.state_changes(job.id)] == [
        JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert "step 3" in (Path(job.run_dir) / "train.log").read_text()  # worker output goes to train.log
    assert json.loads((Path(job.run_dir) / "spec.json").read_text())["run_dir"] == job.run_dir


@pytest.mark.parametrize(("mode", "expected"), [
    ("error:2", "training failed at step 2/2: CUDA out of memory"),
    ("crash", "the worker exited with code 3 at step 0/? without reporting an end"),
])
async def test_failures_carry_the_reason_and_the_log_tail(make_manager: Make, mode: str, expected: str) -> None:
    manager = make_manager(mode)
    done = await run_to_end(manager)
    assert done.state is JobState.FAILED
    assert done.error.startswith(expected)
    assert "last lines of train.log" in done.error
    assert ("CUDA out of memory" if mode.startswith("error") else "about to crash") in done.error.split("train.log:")[1]
    assert events(done)[-1]["type"] == "end" and events(done)[-1]["status"] == "failed"


async def test_one_cpu_slot_queues_the_second_job(make_manager: Make) -> None:
    manager = make_manager("succeed:4:0.15", max_cpu_jobs=1)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        first = await manager.start(config(), "local")
        second = await manager.start(config(), "local")
        await until(lambda: manager.get(first.id).state is JobState.RUNNING)
        await anyio.sleep(0.2)
        assert manager.get(second.id).state is JobState.QUEUED
        assert manager.queue_position(manager.get(second.id)) == 1
        a, b = await manager.wait(first.id, 10), await manager.wait(second.id, 10)
        tg.cancel_scope.cancel()
    assert a.state is b.state is JobState.SUCCEEDED
    assert b.started_at >= a.ended_at  # never both at once


async def test_cancel_stops_the_whole_process_group_and_marks_the_run(make_manager: Make) -> None:
    manager = make_manager("spawn-child")
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        await until(lambda: manager.get(job.id).pgid is not None and manager.get(job.id).total_steps is not None)
        pgid = manager.get(job.id).pgid
        await until(lambda: _members(pgid) >= 2)  # the worker and the child it spawned
        cancelled = await manager.cancel(job.id)
        tg.cancel_scope.cancel()
    assert cancelled.state is JobState.CANCELLED
    assert "cancelled at step 0/3; the partial run is kept in" in cancelled.error
    assert not process_group_alive(pgid)
    assert Path(job.run_dir, "spec.json").exists()  # the partial run stays
    assert events(cancelled)[-1] | {"time": 0} == {
        "type": "end", "status": "cancelled", "reason": cancelled.error.splitlines()[0], "step": 0,
        "written_by": "job-manager", "time": 0}
    assert (await manager.cancel(job.id)).state is JobState.CANCELLED  # idempotent


async def test_cancel_escalates_to_sigkill_after_the_grace_period(make_manager: Make) -> None:
    manager = make_manager("stubborn", cancel_grace_s=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        await until(lambda: manager.get(job.id).total_steps is not None)  # SIGTERM is ignored from here on
        started = time.monotonic()
        cancelled = await manager.cancel(job.id)
        took = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert cancelled.state is JobState.CANCELLED
    assert took >= 0.3
    assert not process_group_alive(cancelled.pgid)


async def test_cancel_of_a_queued_job_never_starts_it(make_manager: Make) -> None:
    manager = make_manager("hang", max_cpu_jobs=1)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        first = await manager.start(config(), "local")
        second = await manager.start(config(), "local")
        assert (await manager.cancel(second.id)).state is JobState.CANCELLED
        await manager.cancel(first.id)
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert manager.get(second.id).pid is None
    assert [c.to_state for c in manager.store.state_changes(second.id)] == [JobState.QUEUED, JobState.CANCELLED]


async def test_cancel_of_a_finished_job_is_an_error(make_manager: Make) -> None:
    manager = make_manager("succeed:1")
    done = await run_to_end(manager)
    assert done.state is JobState.SUCCEEDED
    with pytest.raises(JobError, match=f"job {done.id} already succeeded; there is nothing to cancel"):
        await manager.cancel(done.id)


async def test_a_restarted_manager_reattaches_a_live_worker(make_manager: Make) -> None:
    first = make_manager("succeed:8:0.1")
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        job = await first.start(config(), "local")
        await until(lambda: first.get(job.id).step >= 1)
        tg.cancel_scope.cancel()  # the server stops; the worker goes on
    pid = first.get(job.id).pid
    first.close()
    second = make_manager("succeed:8:0.1")
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        await until(lambda: second.is_supervisor)
        assert second.get(job.id).state is JobState.RUNNING
        done = await second.wait(job.id, 10)
        tg.cancel_scope.cancel()
    assert done.state is JobState.SUCCEEDED, done.error
    assert (done.pid, done.step) == (pid, 8)


async def test_a_restarted_manager_settles_a_dead_worker(make_manager: Make) -> None:
    first = make_manager("hang")
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        job = await first.start(config(), "local")
        await until(lambda: first.get(job.id).total_steps is not None)
        tg.cancel_scope.cancel()
    os.killpg(first.get(job.id).pgid, signal.SIGKILL)  # the machine's OOM killer, say
    first.close()
    second = make_manager("hang")
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        done = await second.wait(job.id, 10)
        tg.cancel_scope.cancel()
    assert done.state is JobState.FAILED
    assert done.error.startswith("the worker was gone when the server (re)started at step 0/3")


async def test_a_recycled_pid_is_not_mistaken_for_the_worker(make_manager: Make) -> None:
    """A running row whose pid now belongs to another process (other start time): settled as gone,
    and that process's group is left alone."""
    manager = make_manager("hang")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        job = await manager.start(config(), "local")
        manager.store.transition(job.id, JobState.RUNNING)
        handle = {"pid": stranger.pid, "pgid": stranger.pid, "start_ticks": _start_ticks(stranger.pid) - 1,
                  "host": os.uname().nodename}
        manager.store.update(job.id, handle=handle, pid=stranger.pid, pgid=stranger.pid)
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            done = await manager.wait(job.id, 5)
            tg.cancel_scope.cancel()
        assert done.state is JobState.FAILED and "gone" in done.error
        assert stranger.poll() is None  # still alive: not ours, not killed
    finally:
        stranger.kill()
        stranger.wait()


async def test_a_silent_worker_is_stopped_after_the_stall_timeout(make_manager: Make) -> None:
    clock = SteppedClock()
    manager = make_manager("hang", clock=clock, stall_timeout_s=600, cancel_grace_s=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        await until(lambda: manager.get(job.id).total_steps is not None)
        await anyio.sleep(0.2)
        assert manager.get(job.id).state is JobState.RUNNING  # quiet for 0.2 s is fine
        clock.advance(601)
        done = await manager.wait(job.id, 5)
        tg.cancel_scope.cancel()
    assert done.state is JobState.FAILED
    assert done.error.startswith("the worker wrote nothing for 600 s and was stopped")
    assert not process_group_alive(done.pgid)


async def test_observers_cannot_break_a_job(make_manager: Make) -> None:
    manager = make_manager("garbage:3")  # a damaged events line, then good ones
    seen: list[int] = []

    async def broken_observer(job: Job) -> None:
        seen.append(job.step)
        raise RuntimeError("observer bug")

    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await manager.start(config(), "local")
        done = await manager.wait(job.id, 10, on_progress=broken_observer)
        tg.cancel_scope.cancel()
    assert done.state is JobState.SUCCEEDED and done.step == 3
    assert seen and seen[-1] == 3


async def test_a_failed_start_leaves_nothing_behind(make_manager: Make, home: Path) -> None:
    def no_place(*_: object) -> None:
        raise BackendError("no place to run this job; set RUNPOD_API_KEY")

    manager = make_manager(placer=no_place)
    with pytest.raises(BackendError, match="RUNPOD_API_KEY"):
        await manager.start(config(), "auto")
    with pytest.raises(ConfigError, match="target: must be one of auto, local, runpod"):
        await manager.start(config(), "gpu9")
    busy = home / "busy"
    busy.mkdir(parents=True)
    (busy / "x").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        await manager.start(config(run_dir=str(busy)), "local")
    assert manager.list() == []
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    assert (busy / "x").read_text() == "x"


def test_bad_limits_from_the_environment_are_refused(make_manager: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINETUNE_MCP_MAX_CPU_JOBS", "zero")
    with pytest.raises(ConfigError, match="FINETUNE_MCP_MAX_CPU_JOBS must be a number >= 1"):
        make_manager()


def _members(pgid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            count += int(fields[2]) == pgid and fields[0] != "Z"
    return count
