"""RunPod jobs through the real JobManager (in this process) against the stand-in, whose pods run the
real worker: every ending — timeout, cancel while provisioning or training, a dead worker, the API
down, server shutdown, restart — leaves the pod terminated and the job in a true state."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from finetune_mcp import kinds
from finetune_mcp.config import Settings, build_config
from finetune_mcp.jobs.backends.runpod.backend import RunPodBackend
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import Job, JobState, JobStore
from standins.runpod_api import RunPodStandIn

from .conftest import SteppedClock
from .runpod_support import files_containing, runpod_env, training_spec

pytestmark = pytest.mark.slow
HF_SECRET = "hf_RUNPODTESTdoNotLeak0123456789"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune_mcp.testing import write_dataset

    return write_dataset(tmp_path_factory.mktemp("rp-data") / "train.jsonl", "messages", n=32)


@pytest.fixture
def rp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodStandIn]:
    with RunPodStandIn(tmp_path / "runpod") as standin:
        for key, value in runpod_env(standin).items():
            monkeypatch.setenv(key, value)
        yield standin


@asynccontextmanager
async def supervising(home: Path, rp: RunPodStandIn, clock: SteppedClock | None = None) -> AsyncIterator[JobManager]:
    """A server's JobManager: supervising while inside, shut down (as the server does) on exit.
    `clock`: the RunPod backend's (what it bills by), for tests that move time on."""
    settings = Settings(home=home, runpod_api_key=rp.api_key, hf_token=HF_SECRET)
    backends = {"runpod": RunPodBackend(settings, clock=clock)} if clock is not None else None
    manager = JobManager(settings, backends=backends, poll_interval_s=0.2, cancel_grace_s=3)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            try:
                yield manager
            finally:
                tg.cancel_scope.cancel()
    finally:
        manager.close()


async def start(manager: JobManager, model: Path, dataset: Path, **fields: object) -> Job:
    return await kinds.start_job(manager, "train", build_config(training_spec(model, dataset, **fields)), target="runpod",
                                 roots=None)


async def until(manager: JobManager, job_id: str, predicate, timeout: float = 60.0) -> Job:
    with anyio.fail_after(timeout):
        while True:
            job = manager.get(job_id)
            if predicate(job):
                return job
            await anyio.sleep(0.1)


def assert_no_pod_left(rp: RunPodStandIn, home: Path) -> None:
    assert rp.pods, "the test meant to create a pod"
    assert not rp.running_pods(), f"pods left running: {[p.id for p in rp.running_pods()]}"
    assert rp.terminated() == set(rp.pods)
    for call in rp.ops("podFindAndDeployOnDemand"):  # secrets never reach the pod's env (RunPod's API shows it)
        assert all(HF_SECRET not in e["value"] and rp.api_key not in e["value"] for e in call["args"]["input"]["env"])
    assert files_containing(home, rp.api_key) == [] and files_containing(home, HF_SECRET) == []


async def start_agreed(manager: JobManager, model: Path, dataset: Path, agreed: dict[str, float],
                       **fields: object) -> Job:
    """Start as start_finetune does after the user's consent: planned, with the agreed terms in the placement."""
    checked, placement = await kinds.plan_job(manager, "train", build_config(training_spec(model, dataset, **fields)),
                                              "runpod", roots=None)
    placement = Placement(placement.backend, placement.device, None, placement.reason, {**placement.details, **agreed})
    return await kinds.start_planned(manager, checked, "runpod", placement)


async def test_the_spending_cap_stops_the_pod_and_fails_the_job(rp, tmp_path, tiny_model_dir, dataset) -> None:
    clock = SteppedClock()
    async with supervising(tmp_path / "home", rp, clock=clock) as manager:
        job = await start_agreed(manager, tiny_model_dir, dataset, {"max_cost_usd": 0.10}, max_steps=20_000)
        job = await until(manager, job.id, lambda j: j.step >= 1, timeout=90)
        assert job.state is JobState.RUNNING  # well under $0.10 so far
        clock.advance(3600)  # an hour later at $0.22-0.43/h
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=60)
    assert job.state is JobState.FAILED
    assert "spending cap reached: $0." in job.error and "of $0.10" in job.error and "raise max_cost_usd" in job.error
    assert json.loads((Path(job.run_dir) / "events.jsonl").read_text().splitlines()[0])["type"] == "start"
    assert_no_pod_left(rp, tmp_path / "home")


async def test_no_gpu_above_the_agreed_price_is_rented(rp, tmp_path, tiny_model_dir, dataset) -> None:
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start_agreed(manager, tiny_model_dir, dataset, {"max_price_per_hr": 0.05})
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=30)
    assert job.state is JobState.FAILED and "at or below the $0.05/h agreed to" in job.error
    assert not rp.ops("podFindAndDeployOnDemand") and not rp.pods


async def test_pod_never_ready_fails_at_the_provisioning_timeout(rp, tmp_path, tiny_model_dir, dataset,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("FINETUNE_MCP_RUNPOD_PROVISION_TIMEOUT_S", "2")
    rp.faults.never_ready = True
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset)
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=30)
    assert job.state is JobState.FAILED
    assert "did not become ready within 2 s" in job.error and "FINETUNE_MCP_RUNPOD_PROVISION_TIMEOUT_S" in job.error
    assert_no_pod_left(rp, tmp_path / "home")


@pytest.mark.parametrize("moment", ["while the pod is created", "while the pod starts"])
async def test_cancel_during_provisioning(rp, tmp_path, tiny_model_dir, dataset, moment) -> None:
    rp.faults.never_ready = True
    if moment == "while the pod is created":
        rp.faults.delays["podFindAndDeployOnDemand"] = [1.0]
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset)
        await until(manager, job.id, lambda j: j.state is JobState.PROVISIONING)
        if moment == "while the pod is created":
            await until(manager, job.id, lambda j: bool(rp.ops("podFindAndDeployOnDemand")))
        else:
            await until(manager, job.id, lambda j: bool(rp.pods))
        job = await manager.cancel(job.id)
        assert job.state is JobState.CANCELLED
        if moment == "while the pod starts":  # billed from its creation (here < $0.0001), though never polled
            assert job.cost_usd is not None
    rp.wait_for(lambda: rp.pods and not rp.running_pods(), timeout=10, what="the pod made during the cancel to end")
    assert_no_pod_left(rp, tmp_path / "home")


async def test_runpod_api_down_fails_clearly_and_creates_nothing(rp, tmp_path, tiny_model_dir, dataset) -> None:
    rp.faults.errors["gpuTypes"] = [500] * 20
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset)
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=30)
    assert job.state is JobState.FAILED
    assert "could not list GPU types after 3 attempt(s)" in job.error and "5xx" in job.error
    assert not rp.ops("podFindAndDeployOnDemand") and not rp.pods


async def test_worker_dies_mid_run(rp, tmp_path, tiny_model_dir, dataset) -> None:
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=20_000)
        job = await until(manager, job.id, lambda j: j.step >= 1, timeout=90)
        [pod_id] = rp.pods
        rp.kill_worker(pod_id)
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=30)
    assert job.state is JobState.FAILED
    assert f"the worker on pod {pod_id} did not answer for 3 s" in job.error
    assert job.cost_usd and job.cost_usd > 0
    assert_no_pod_left(rp, tmp_path / "home")


async def test_cancel_during_training_keeps_the_partial_run(rp, tmp_path, tiny_model_dir, dataset) -> None:
    rp.faults.no_capacity = {"NVIDIA GeForce RTX 3090"}  # the cheapest type is sold out: the next one is used
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=20_000)
        job = await until(manager, job.id, lambda j: j.step >= 3, timeout=90)
        assert job.state is JobState.RUNNING and job.metrics.get("train/loss") is not None
        job = await manager.cancel(job.id)
    assert job.state is JobState.CANCELLED
    tried = [c["args"]["input"]["gpuTypeId"] for c in rp.ops("podFindAndDeployOnDemand")]
    assert tried == ["NVIDIA GeForce RTX 3090", "NVIDIA RTX A6000"]
    run = Path(job.run_dir)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "start" and sum(e["type"] == "progress" for e in events) >= 3
    assert (run / "train.log").stat().st_size > 0 and (run / "tensorboard").is_dir()
    assert_no_pod_left(rp, tmp_path / "home")


def stored(home: Path, job_id: str) -> Job:
    store = JobStore(home / "jobs.db")
    try:
        return store.get(job_id)
    finally:
        store.close()


async def test_a_user_function_the_operator_allowed_runs_on_the_pod(rp, tmp_path, tiny_model_dir, dataset,
                                                                    monkeypatch) -> None:
    """The allow-list travels in the pod's env (the pod's worker checks it again before importing);
    the module itself reaches the pod as the operator installs it (here: on PYTHONPATH)."""
    calls = tmp_path / "calls"
    (tmp_path / "pod_weights.py").write_text(
        "def doubled(entropy, log_vocab):\n"
        f"    open({str(calls)!r}, 'a').write('called\\n')\n"
        "    return 2.0 + 0.0 * entropy\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", "pod_weights")
    monkeypatch.syspath_prepend(str(tmp_path))  # the server's start checks find it too
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=2, enable_entropy_weighting=True,
                          entropy_weight_fn="pod_weights:doubled")
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=120)
    assert job.state is JobState.SUCCEEDED, job.error
    assert calls.read_text().count("called") >= 2  # the pod's worker called it each step
    [create] = rp.ops("podFindAndDeployOnDemand")
    pod_env = {e["key"]: e["value"] for e in create["args"]["input"]["env"]}
    assert pod_env["FINETUNE_MCP_USER_FUNCTIONS"] == "pod_weights"
    assert_no_pod_left(rp, tmp_path / "home")


async def test_server_shutdown_terminates_the_pod(rp, tmp_path, tiny_model_dir, dataset) -> None:
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=20_000)
        await until(manager, job.id, lambda j: j.step >= 1, timeout=90)
    job = stored(tmp_path / "home", job.id)
    assert job.state is JobState.FAILED and "the server shut down" in job.error
    assert_no_pod_left(rp, tmp_path / "home")


async def test_a_restarted_server_finds_its_pod_and_finishes_the_job(rp, tmp_path, tiny_model_dir, dataset,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("FINETUNE_MCP_RUNPOD_KEEP_ON_SHUTDOWN", "1")
    home = tmp_path / "home"
    async with supervising(home, rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=40)
        await until(manager, job.id, lambda j: j.step >= 1, timeout=90)
    assert stored(home, job.id).state is JobState.RUNNING and len(rp.running_pods()) == 1  # left training
    async with supervising(home, rp) as manager:  # the next server adopts the job from its stored handle
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=120)
    assert job.state is JobState.SUCCEEDED, job.error
    run = Path(job.run_dir)
    assert (run / "adapter" / "adapter_config.json").exists() and (run / "tensorboard").is_dir()
    result = json.loads((run / "result.json").read_text())
    assert result["cost_usd"] > 0 and result["compute"]["provider"] == "runpod"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "events were lost or repeated over the restart"
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    assert_no_pod_left(rp, home)


async def test_a_pod_brings_back_its_checkpoints_and_gets_its_trackers_key_privately(rp, tmp_path, tiny_model_dir,
                                                                                     dataset, monkeypatch) -> None:
    """W&B's key reaches the pod's worker in the start request (the worker records that it had it), never
    the pod's environment (RunPod's API shows that); the offline W&B run and the checkpoints the run kept
    come home with the artifacts, and the result says which checkpoints came back."""
    key = "wandb_RUNPODTESTdoNotLeak0123456789abcdef"
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    async with supervising(tmp_path / "home", rp) as manager:
        job = await start(manager, tiny_model_dir, dataset, max_steps=4, save_steps=2, save_total_limit=3,
                          report_to=["wandb"])
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=180)
    assert job.state is JobState.SUCCEEDED, job.error
    run = Path(job.run_dir)
    trackers = json.loads((run / "tracking" / "trackers.json").read_text())
    assert trackers["run_name"] == job.id and trackers["trackers"]["wandb"]["credentials"] == ["WANDB_API_KEY"]
    assert list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    transfer = json.loads((run / "result.json").read_text())["checkpoints_from_pod"]
    assert [c["step"] for c in transfer["brought_back"]] == [4, 2] and transfer["left_on_pod"] == []
    assert transfer["limit_bytes"] == 2048 * 2**20 and "every checkpoint the pod kept came back" in transfer["note"]
    [create] = rp.ops("podFindAndDeployOnDemand")
    assert all(key not in e["value"] and "WANDB" not in e["key"] for e in create["args"]["input"]["env"])
    assert files_containing(tmp_path / "home", key) == []
    assert_no_pod_left(rp, tmp_path / "home")
