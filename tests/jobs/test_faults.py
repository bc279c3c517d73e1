"""Faults the job manager must survive and name (issue 16): a full disk, forged and torn event
lines, a supervisor pass that keeps failing. Real worker processes (scripted_worker.py), real
SQLite, and for the disk a real small tmpfs filled to the last byte."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from pathlib import Path

import anyio
import pytest

from finetune_mcp.config import Settings
from finetune_mcp.errors import DiskFullError
from finetune_mcp.jobs.backends.local import LocalBackend
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.store import JobState
from standins.small_disk import fill

from .conftest import SCRIPTED_WORKER, _kill_leftovers, config, cpu_placer, no_preflight
from .test_manager import Make, run_to_end


def manager_on(home: Path, mode: str) -> JobManager:
    return JobManager(Settings(home=home), backends={"local": LocalBackend(command=[
        sys.executable, str(SCRIPTED_WORKER), mode])}, placer=cpu_placer, preflight=no_preflight,
        poll_interval_s=0.05, cancel_grace_s=2.0)


async def test_a_forged_step_does_not_move_a_succeeded_job(make_manager: Make) -> None:
    """Was: step 999,999 of 3 on a succeeded job, and the forged loss in its metrics."""
    manager = make_manager("forged:3")
    done = await run_to_end(manager)
    assert done.state is JobState.SUCCEEDED, done.error
    assert (done.step, done.total_steps) == (3, 3)
    assert done.metrics["train/loss"] == pytest.approx(2 / 3)


async def test_a_torn_line_does_not_swallow_the_error_after_it(make_manager: Make) -> None:
    """Was: "the worker exited with code 1 ... without reporting an end": the error event shared a
    line with a torn fragment and was skipped with it."""
    manager = make_manager("torn:2")
    done = await run_to_end(manager)
    assert done.state is JobState.FAILED
    assert done.error.startswith("training failed at step 2/2: the real reason"), done.error


async def test_a_full_disk_fails_the_job_naming_the_disk(small_disk: Path, caplog) -> None:
    """The worker fills the disk that also holds jobs.db and dies without a word. Was: the job stayed
    `running`, SQLite answered "database or disk is full" and the supervisor logged a traceback each
    pass. Now the manager gives up its 1 MiB reserve, records the job failed with the disk's free
    space, and logs each distinct error once."""
    home = small_disk / "home"
    manager = manager_on(home, "fill:1")
    try:
        with caplog.at_level(logging.INFO, logger="finetune_mcp"):
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                job = await manager.start(config(), "local")
                started = time.monotonic()
                done = await manager.wait(job.id, 30)
                seconds = time.monotonic() - started
                tg.cancel_scope.cancel()
    finally:
        manager.close()
        _kill_leftovers(home)
    assert done.state is JobState.FAILED, (done.state, done.error)
    assert f"disk full at {done.run_dir}: free 0.00 GB; free space or set FINETUNE_MCP_HOME" in done.error
    assert done.error.startswith("the worker exited with code 1 (disk full at")
    assert seconds < 15
    assert not any(r.exc_info for r in caplog.records), "no tracebacks"
    failures = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert len(failures) == len(set(failures)) <= 3, failures  # once per distinct error
    print(f"full disk: job failed {seconds:.2f} s after start; {len(failures)} distinct failure lines")


async def test_start_on_a_full_disk_says_where_and_what_to_do(small_disk: Path) -> None:
    home = small_disk / "home"
    manager = manager_on(home, "succeed")
    try:
        manager.store.list()  # jobs.db exists, then the disk fills
        fill(small_disk)
        with pytest.raises(DiskFullError) as raised:
            await manager.start(config(), "local")
    finally:
        manager.close()
    assert str(raised.value).startswith("disk full at ")
    assert "free 0.00 GB; free space or set FINETUNE_MCP_HOME to another disk" in str(raised.value)
    assert "Errno" not in str(raised.value)
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # nothing left behind


async def test_a_failing_supervisor_pass_backs_off_and_logs_once(make_manager: Make, monkeypatch, caplog) -> None:
    """Was: `log.exception` every poll interval (a traceback a second, forever)."""
    manager = make_manager("succeed")
    calls: list[float] = []
    real = manager.store.in_states

    def broken(states):
        if not calls or calls[-1] > 0:
            calls.append(time.monotonic())
            raise OSError(28, "No space left on device")
        return real(states)

    monkeypatch.setattr(manager.store, "in_states", broken)
    with caplog.at_level(logging.INFO, logger="finetune_mcp"):
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            await anyio.sleep(2.5)
            calls.append(0.0)  # repaired: the shutdown pass reads the store
            tg.cancel_scope.cancel()
    calls.pop()
    lines = [r for r in caplog.records if "supervisor pass failed" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info
    assert len(calls) <= 7  # 0.05 s doubling: ~6 tries in 2.5 s, not 50
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(gaps) >= 3 and gaps[-1] > 3 * gaps[0], gaps  # exponential


def test_events_of_a_finished_run_read_the_same(tmp_path: Path) -> None:
    """The manager's `end` after a torn fragment stays on its own line (written by RunDirectory)."""
    from finetune_mcp.jobs.records import last_ending, mark_ended
    from finetune_mcp.jobs.store import Job
    from finetune_mcp.runs.rundir import RunDirectory

    run = RunDirectory(tmp_path).create()
    run.events.write_text(json.dumps({"type": "progress", "step": 1}) + "\n" + '{"type": "progr')
    job = Job(id="ft-000000000001", state=JobState.FAILED, target="local", backend="local", device="cpu",
              slot="cpu", placement={}, config={}, run_dir=str(tmp_path), created_at=0.0, updated_at=0.0, step=1)
    mark_ended(job, "failed", "the worker was killed")
    assert last_ending(run)["reason"] == "the worker was killed"
