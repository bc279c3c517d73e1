"""num_gpus: how many GPUs a job gets, its queue slot, and the torchrun launch command."""

from __future__ import annotations

import sys

import pytest

from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.multi_gpu import distributed_command, spread
from finetune_mcp.jobs.placement import GpuInfo, Placement, gpu_indices, slot_parts

GPUS = [GpuInfo(0, "H200", 139.0, 130.0), GpuInfo(1, "H200", 139.0, 120.0), GpuInfo(2, "H200", 139.0, 5.0)]


def _one_gpu() -> Placement:
    return Placement("local", "cuda", 0, "GPU 0 fits", {"required_gb": 20.0})


def test_two_gpus_take_the_two_that_fit_and_hold_both_slots():
    placement = spread(_one_gpu(), 2, GPUS)
    assert gpu_indices(placement) == [0, 1]
    assert placement.slot == "gpu:0,1"
    assert slot_parts(placement.slot) == ["gpu:0", "gpu:1"]
    assert "DDP over GPUs 0, 1" in placement.reason
    assert Placement.from_json(placement.to_json()) == placement  # survives SQLite


def test_auto_takes_every_gpu_with_room_and_one_stays_one():
    assert gpu_indices(spread(_one_gpu(), "auto", GPUS)) == [0, 1]  # GPU 2 has 5 GB free of the 20 needed
    assert spread(_one_gpu(), 1, GPUS).slot == "gpu:0"


def test_too_few_gpus_is_an_error_that_says_what_qualifies():
    with pytest.raises(BackendError, match=r"num_gpus=3 needs 3 GPUs with ≥ 20.0 GB free each.*2 of the 3"):
        spread(_one_gpu(), 3, GPUS)
    cpu = Placement("local", "cpu", None, "no GPU")
    with pytest.raises(BackendError, match="placed on the CPU"):
        spread(cpu, 2, [])
    assert spread(cpu, "auto", []) == cpu


def test_runpod_asks_the_pod_for_the_gpus():
    pod = spread(Placement("runpod", "cuda", None, "no local GPU", {"required_gb": 20.0}), 4, [])
    assert pod.details["gpu_count"] == 4 and pod.slot == "runpod"


def test_launch_command_is_torchrun_with_one_process_per_gpu():
    worker = [sys.executable, "-m", "finetune_mcp.cli", "worker", "run"]
    assert distributed_command(worker, 1) == worker
    assert distributed_command(worker, 2) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "finetune_mcp.cli", "worker", "run",
    ]
    with pytest.raises(BackendError, match="python -m module"):
        distributed_command(["finetune-mcp", "worker", "run"], 2)


def test_config_accepts_num_gpus():
    from finetune_mcp.config import build_config
    from finetune_mcp.errors import ConfigError

    assert build_config({"model": "m", "dataset": "d", "num_gpus": "auto"}).num_gpus == "auto"
    with pytest.raises(ConfigError, match="num_gpus: must be 'auto' or a whole number from 1 to 64"):
        build_config({"model": "m", "dataset": "d", "num_gpus": 0})


async def test_a_ddp_job_runs_one_worker_per_gpu_and_holds_each_gpu_slot(home, monkeypatch):
    """Job A owns GPUs 0 and 1 (torchrun, two scripted workers); job B wants GPU 1 and must wait."""
    import os
    from pathlib import Path

    import anyio

    from finetune_mcp.config import Settings
    from finetune_mcp.jobs.backends.local import LocalBackend
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import JobState

    from .conftest import config, no_preflight
    from .test_manager import until

    tests_dir = str(Path(__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    placements = iter([
        Placement("local", "cuda", 0, "two GPUs", {"gpu_indices": [0, 1]}),
        Placement("local", "cuda", 1, "one GPU"),
    ])
    manager = JobManager(
        Settings(home=home),
        backends={"local": LocalBackend(command=[sys.executable, "-m", "jobs.scripted_worker", "succeed:4:0.2"])},
        placer=lambda cfg, target, settings: next(placements), preflight=no_preflight, poll_interval_s=0.05,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            ddp = await manager.start(config(), "local")
            single = await manager.start(config(), "local")
            assert (ddp.slot, single.slot) == ("gpu:0,1", "gpu:1")
            await until(lambda: manager.get(ddp.id).state is JobState.RUNNING)
            assert manager.get(single.id).state is JobState.QUEUED
            a, b = await manager.wait(ddp.id, 60), await manager.wait(single.id, 60)
            tg.cancel_scope.cancel()
    finally:
        manager.close()
    assert a.state is b.state is JobState.SUCCEEDED
    assert b.started_at >= a.ended_at
    log = (Path(a.run_dir) / "train.log").read_text()
    assert log.count("scripted worker succeed starting") == 2  # one worker per GPU
