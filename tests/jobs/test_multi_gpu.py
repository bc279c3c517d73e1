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


def _scripted_manager(home, monkeypatch, placements, script: str):
    """A JobManager whose local jobs run the scripted worker (`script`) and get `placements` in order."""
    import os
    from pathlib import Path

    from finetune_mcp.config import Settings
    from finetune_mcp.jobs.backends.local import LocalBackend
    from finetune_mcp.jobs.manager import JobManager

    from .conftest import no_preflight

    tests_dir = str(Path(__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    placements = iter(placements)
    return JobManager(
        Settings(home=home),
        backends={"local": LocalBackend(command=[sys.executable, "-m", "jobs.scripted_worker", script])},
        placer=lambda cfg, target, settings: next(placements), preflight=no_preflight, poll_interval_s=0.05,
    )


async def test_a_ddp_job_runs_one_worker_per_gpu_and_holds_each_gpu_slot(home, monkeypatch):
    """Job A owns GPUs 0 and 1 (torchrun, two scripted workers); job B wants GPU 1 and must wait."""
    from pathlib import Path

    import anyio

    from finetune_mcp.jobs.store import JobState

    from .conftest import config
    from .test_manager import until

    manager = _scripted_manager(home, monkeypatch, [
        Placement("local", "cuda", 0, "two GPUs", {"gpu_indices": [0, 1]}),
        Placement("local", "cuda", 1, "one GPU"),
    ], "succeed:4:0.2")
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


async def test_packed_workers_share_a_gpu_and_a_single_job_waits_for_all_of_them(home, monkeypatch):
    """Two workers of a parallel experiment packed on GPU 0 (`gpu:0/2`) run side by side; a plain job
    on GPU 0 waits until both have ended, and a third packed worker would wait for a free half."""
    import anyio

    from finetune_mcp.jobs.store import JobState

    from .conftest import config
    from .test_manager import until

    packed = Placement("local", "cuda", 0, "1 of 2 workers on GPU 0", {"gpu_share": 2})
    manager = _scripted_manager(home, monkeypatch, [packed, packed, packed, Placement("local", "cuda", 0, "one GPU")],
                                "succeed:4:0.3")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            a, b, c = [await manager.start(config(), "local") for _ in range(3)]
            single = await manager.start(config(), "local")
            assert (a.slot, single.slot) == ("gpu:0/2", "gpu:0")
            assert slot_parts(a.slot) == ["gpu:0"]
            await until(lambda: manager.get(a.id).state is manager.get(b.id).state is JobState.RUNNING)
            assert manager.get(c.id).state is manager.get(single.id).state is JobState.QUEUED
            done = [await manager.wait(j.id, 60) for j in (a, b, c, single)]
            tg.cancel_scope.cancel()
    finally:
        manager.close()
    assert all(j.state is JobState.SUCCEEDED for j in done)
    a, b, c, single = done
    assert c.started_at >= min(a.ended_at, b.ended_at)  # the third packed worker took a freed half
    assert single.started_at >= max(a.ended_at, b.ended_at, c.ended_at)  # the whole GPU, once all had ended


def test_workers_pack_onto_a_gpu_only_when_more_are_asked_than_gpus_and_the_runs_fit():
    from finetune_mcp.experiment.parallel import MAX_WORKERS_PER_GPU, _gpu_workers, workers_per_gpu

    h100 = [GpuInfo(0, "H100", 80.0, 78.0)]
    assert workers_per_gpu(6, h100, 2.0) == 6  # a 135M model: six runs side by side
    assert workers_per_gpu(40, h100, 2.0) == MAX_WORKERS_PER_GPU
    assert workers_per_gpu(6, h100, 30.0) == 2  # 2 × 33 GB fit in 78, 3 do not
    assert workers_per_gpu(6, h100, 50.0) == 1
    assert workers_per_gpu(2, GPUS[:2], 2.0) == 1  # as many GPUs as workers: one each
    one = Placement("local", "cuda", 0, "GPU 0 fits", {"required_gb": 2.0})
    where, why = _gpu_workers(one, GPUS[:2], 5, 2.0)
    assert [p.gpu_index for p in where] == [0, 1, 0, 1, 0]  # spread over the GPUs first
    assert {p.slot for p in where} == {"gpu:0/3", "gpu:1/3"}
    assert "5 workers on 2 local GPUs, up to 3 per GPU" in why
    assert all(Placement.from_json(p.to_json()) == p for p in where)
