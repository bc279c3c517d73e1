"""Fixtures for the job manager's tests: managers on a temporary FINETUNE_MCP_HOME whose local
backend runs `scripted_worker.py` (real processes, real signals, real SQLite), and a clock the
tests can move."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from finetune_mcp.config import EnhancedTrainingConfig, Settings, build_config
from finetune_mcp.jobs.backends.local import LocalBackend, process_group_alive
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import JobStore

SCRIPTED_WORKER = Path(__file__).with_name("scripted_worker.py")


class SteppedClock:
    """Wall time plus an offset the test moves forward (`advance`), so time jumps without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def cpu_placer(config: EnhancedTrainingConfig, target: str, settings: Settings) -> Placement:
    return Placement("local", "cpu", None, "tests run on the CPU")


def no_preflight(config: EnhancedTrainingConfig, settings: Settings) -> EnhancedTrainingConfig:
    """The scripted worker reads neither model nor dataset; the real checks are tested in tests/server."""
    return config


def config(**fields: object) -> EnhancedTrainingConfig:
    return build_config({"model": "tiny", "dataset": "data.jsonl", **fields})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_manager(home: Path) -> Iterator[Callable[..., JobManager]]:
    managers: list[JobManager] = []

    def make(mode: str = "succeed", **kwargs: object) -> JobManager:
        kwargs.setdefault("cancel_grace_s", 2.0)
        kwargs.setdefault("poll_interval_s", 0.05)
        kwargs.setdefault("placer", cpu_placer)
        kwargs.setdefault("preflight", no_preflight)
        manager = JobManager(
            Settings(home=home),
            backends={"local": LocalBackend(command=[sys.executable, str(SCRIPTED_WORKER), mode])},
            **kwargs,  # type: ignore[arg-type]
        )
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()
    _kill_leftovers(home)


def _kill_leftovers(home: Path) -> None:
    """No test leaves a worker behind, whatever it asserted."""
    if not (home / "jobs.db").exists():
        return
    store = JobStore(home / "jobs.db")
    for job in store.list(limit=1000):
        if job.pgid and process_group_alive(job.pgid):
            os.killpg(job.pgid, signal.SIGKILL)
    store.close()
