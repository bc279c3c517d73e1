"""Multi-node training on the stand-in's Instant Clusters through the real JobManager: two "nodes" (local
processes with the rendezvous variables RunPod sets) run the real worker under torchrun, rendezvous over
gloo on 127.0.0.1 and train one DDP run; the cluster is deleted on success, failure, cancel (here after a
server restart that adopted it) and server shutdown, and the cost is in the result. Placement refuses what cannot train multi-node, at start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from finetune_mcp import kinds
from finetune_mcp.config import Settings, build_config
from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.router import place_job
from finetune_mcp.jobs.store import JobState
from finetune_mcp.tools.training import job_view
from standins.runpod_api import RunPodStandIn

from .runpod_support import runpod_env, training_spec
from .test_runpod_jobs import stored, supervising, until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune_mcp.testing import write_dataset

    return write_dataset(tmp_path_factory.mktemp("cluster-data") / "train.jsonl", "messages", n=32)


@pytest.fixture
def rp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodStandIn]:
    with RunPodStandIn(tmp_path / "runpod") as standin:
        for key, value in runpod_env(standin).items():
            monkeypatch.setenv(key, value)
        yield standin


def two_nodes(model: Path, data: Path, **fields: object):
    return build_config(training_spec(model, data, num_nodes=2, num_gpus=1, **fields))


def assert_cluster_gone(rp) -> None:
    assert rp.clusters, "the test meant to create a cluster"
    assert not rp.live_clusters() and not rp.running_pods()
    assert any(c["ok"] for c in rp.ops("clusterDelete"))  # later deletes of a deleted cluster: 404, fine


async def test_two_nodes_train_in_sync_and_the_cluster_is_deleted(rp, tmp_path, tiny_model_dir, dataset) -> None:
    async with supervising(tmp_path / "home", rp) as manager:
        job = await kinds.start_job(manager, "train", two_nodes(tiny_model_dir, dataset, max_steps=4), "runpod",
                                    roots=None)
        assert job.backend == "runpod_cluster" and "2 nodes × 1 GPU" in job.placement["reason"]
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=400)
    assert job.state is JobState.SUCCEEDED, job.error
    result = json.loads((Path(job.run_dir) / "result.json").read_text())
    assert result["num_processes"] == 2 and result["ranks_in_sync"] is True  # the same adapter on both nodes
    assert result["cost_usd"] > 0 and job.cost_usd == result["cost_usd"]  # billed to the deletion, both
    assert result["compute"]["num_nodes"] == 2 and result["compute"]["cluster_id"] == job.handle["cluster_id"]
    assert (Path(job.run_dir) / "adapter" / "adapter_model.safetensors").is_file()
    [create] = rp.ops("clusterCreate")
    assert create["ok"] and len(rp.clusters[next(iter(rp.clusters))]["pods"]) == 2
    progress = [json.loads(line)["step"] for line in (Path(job.run_dir) / "events.jsonl").read_text().splitlines()
                if json.loads(line)["type"] == "progress"]
    assert progress == sorted(set(progress)) and progress[-1] == 4  # written once, by global rank 0
    assert_cluster_gone(rp)


async def test_a_node_that_dies_fails_the_job_and_the_cluster_is_deleted(rp, tmp_path, tiny_model_dir,
                                                                         dataset) -> None:
    async with supervising(tmp_path / "home", rp) as manager:
        job = await kinds.start_job(manager, "train", two_nodes(tiny_model_dir, dataset, max_steps=20_000), "runpod",
                                    roots=None)
        job = await until(manager, job.id, lambda j: j.step >= 1, timeout=300)
        node_1 = job.handle["node_pods"][1]
        rp.kill_worker(node_1)
        job = await until(manager, job.id, lambda j: j.state.terminal, timeout=120)
    assert job.state is JobState.FAILED and job.error
    assert_cluster_gone(rp)


async def test_a_restarted_server_adopts_the_cluster_and_cancel_deletes_it(rp, tmp_path, tiny_model_dir, dataset,
                                                                          monkeypatch) -> None:
    """A server that stops with FINETUNE_MCP_RUNPOD_KEEP_ON_SHUTDOWN=1 leaves both nodes training; the next one
    finds the cluster from the stored handle alone (a new backend, nothing in memory), follows node 0's
    progress, and cancel deletes the cluster, its cost recorded."""
    monkeypatch.setenv("FINETUNE_MCP_RUNPOD_KEEP_ON_SHUTDOWN", "1")
    home = tmp_path / "home"
    async with supervising(home, rp) as manager:
        job = await kinds.start_job(manager, "train", two_nodes(tiny_model_dir, dataset, max_steps=20_000), "runpod",
                                    roots=None)
        job = await until(manager, job.id, lambda j: j.step >= 1, timeout=300)
    left = stored(home, job.id)
    assert left.state is JobState.RUNNING and len(rp.live_clusters()) == 1
    assert len(rp.running_pods()) == 2  # both nodes train on while no server runs
    monkeypatch.delenv("FINETUNE_MCP_RUNPOD_KEEP_ON_SHUTDOWN")
    async with supervising(home, rp) as manager:
        job = await until(manager, job.id, lambda j: j.step > left.step + 1, timeout=120)
        job = await manager.cancel(job.id)
    assert job.state is JobState.CANCELLED and job.cost_usd and job.cost_usd > 0
    assert len(rp.ops("clusterCreate")) == 1  # adopted, not started again
    assert_cluster_gone(rp)


async def test_server_shutdown_deletes_the_cluster(rp, tmp_path, tiny_model_dir, dataset) -> None:
    """By default a cluster does not outlive the server that supervises it: it bills by the second."""
    async with supervising(tmp_path / "home", rp) as manager:
        job = await kinds.start_job(manager, "train", two_nodes(tiny_model_dir, dataset, max_steps=20_000), "runpod",
                                    roots=None)
        await until(manager, job.id, lambda j: j.state is JobState.RUNNING, timeout=300)
    job = stored(tmp_path / "home", job.id)
    assert job.state is JobState.FAILED and "the server shut down" in job.error
    assert job.cost_usd and job.cost_usd > 0
    assert_cluster_gone(rp)


def test_placement_refuses_what_cannot_train_multi_node(tmp_path) -> None:
    settings = Settings(home=tmp_path, runpod_api_key="rpa_x")
    with pytest.raises(BackendError, match="target='runpod'"):
        place_job(build_config({"model": "m", "dataset": "d", "num_nodes": 2}), "auto", settings)
    with pytest.raises(BackendError, match="Unsloth documents no multi-node training"):
        place_job(build_config({"model": "m", "dataset": "d", "num_nodes": 2, "backend": "unsloth"}), "runpod",
                  settings)
    with pytest.raises(BackendError, match="num_gpus as a number"):
        place_job(build_config({"model": "m", "dataset": "d", "num_nodes": 2, "num_gpus": "auto"}), "runpod",
                  settings)


async def test_a_parallel_experiment_on_two_pods_gives_the_serial_table(rp, tmp_path, tiny_model_dir,
                                                                        dataset) -> None:
    """parallel=2 on target='runpod': two stand-in pods, each training its share; the same per-run
    metrics as the same experiment run serially here (the forgetting check's too: the retain file is
    uploaded to each pod); both pods terminated; the cost in the result."""
    from finetune_mcp.experiment.spec import build_experiment_spec
    from finetune_mcp.jobs.placement import SHARES
    from finetune_mcp.testing import write_dataset

    retain = write_dataset(tmp_path / "retain.jsonl", "messages", n=4, seed=1)
    fields = dict(training_spec(tiny_model_dir, dataset), kind="experiment", seeds=1, max_steps=2, max_examples=16,
                  validation_split=0.25, max_new_tokens=4, save_steps=100_000, max_seq_length=64,
                  retain_dataset=str(retain))
    async with supervising(tmp_path / "home", rp) as manager:
        serial = await kinds.start_job(manager, "experiment", build_experiment_spec(fields), "local", roots=None)
        checked, placement = await kinds.plan_job(manager, "experiment", build_experiment_spec(
            {**fields, "parallel": 2}), "runpod", roots=None)
        agreed = [{**s, "placement": {**s["placement"], "details": {**s["placement"]["details"], "max_cost_usd": 5.0}}}
                  for s in placement.details[SHARES]]
        gather = await kinds.start_planned(manager, checked, "runpod", Placement(
            placement.backend, placement.device, None, placement.reason, {**placement.details, SHARES: agreed}))
        serial = await until(manager, serial.id, lambda j: j.state.terminal, timeout=400)
        gather = await until(manager, gather.id, lambda j: j.state.terminal, timeout=600)
        shown = job_view(manager, gather).cost_usd  # get_job of the experiment: its pods' cost together
    assert serial.state is JobState.SUCCEEDED and gather.state is JobState.SUCCEEDED, gather.error
    tables = [json.loads((Path(j.run_dir) / "experiment" / "table.json").read_text()) for j in (serial, gather)]
    metrics = [{r["name"]: r["metrics"] for r in t["runs"]} for t in tables]
    assert metrics[0].keys() == metrics[1].keys() and len(metrics[0]) == 2
    for name, values in metrics[0].items():
        assert metrics[1][name] == pytest.approx(values, rel=1e-4, abs=1e-6), name
        assert "retain_ce_rise" in values, name
    here, pods = (t["heldout"]["retain"] for t in tables)
    assert pods["source"].endswith("inputs/retain_dataset/retain.jsonl") and here["source"] == f"all of {retain}"
    assert (pods["fingerprint"], pods["base_ce"]) == (here["fingerprint"], pytest.approx(here["base_ce"], rel=1e-5))
    result = json.loads((Path(gather.run_dir) / "result.json").read_text())
    assert result["parallel"]["workers"] == 2 and result["cost_usd"] > 0 and shown == result["cost_usd"]
    assert len(rp.ops("podFindAndDeployOnDemand")) == 2 and not rp.running_pods()


async def test_cancelling_a_parallel_experiment_on_pods_terminates_every_pod(rp, tmp_path, tiny_model_dir,
                                                                            dataset) -> None:
    """cancel_job on the gatherer: both workers are cancelled with it (`child_jobs`) and both pods terminated."""
    from finetune_mcp.experiment.spec import build_experiment_spec

    fields = dict(training_spec(tiny_model_dir, dataset), kind="experiment", seeds=1, max_steps=20_000,
                  max_examples=16, save_steps=100_000, max_seq_length=64, parallel=2)
    async with supervising(tmp_path / "home", rp) as manager:
        gather = await kinds.start_job(manager, "experiment", build_experiment_spec(fields), "runpod", roots=None)
        workers = Placement.from_json(gather.placement).details["child_jobs"]
        for worker in workers:  # both pods made and their workers started
            await until(manager, worker, lambda j: j.state is JobState.RUNNING, timeout=300)
        gather = await manager.cancel(gather.id)
        shares = [await until(manager, w, lambda j: j.state.terminal, timeout=120) for w in workers]
    assert gather.state is JobState.CANCELLED and [s.state for s in shares] == [JobState.CANCELLED] * 2
    assert len(rp.ops("podFindAndDeployOnDemand")) == 2 and not rp.running_pods()
    assert all(s.cost_usd is not None for s in shares)
    table = json.loads((Path(gather.run_dir) / "experiment" / "table.json").read_text())
    assert table["status"] == "cancelled"


async def test_server_shutdown_stops_a_parallel_experiments_pods_and_the_next_server_ends_it(rp, tmp_path,
                                                                                           tiny_model_dir,
                                                                                           dataset) -> None:
    """By default pods do not outlive the server: its shutdown terminates both workers' pods (the workers
    fail, saying why); the gatherer, a local process, sees that and ends the experiment as failed, which the
    next server records. Nothing is left running or billing."""
    from finetune_mcp.experiment.spec import build_experiment_spec
    from finetune_mcp.jobs.backends.local import process_group_alive

    fields = dict(training_spec(tiny_model_dir, dataset), kind="experiment", seeds=1, max_steps=20_000,
                  max_examples=16, save_steps=100_000, max_seq_length=64, parallel=2)
    home = tmp_path / "home"
    async with supervising(home, rp) as manager:
        gather = await kinds.start_job(manager, "experiment", build_experiment_spec(fields), "runpod", roots=None)
        workers = Placement.from_json(gather.placement).details["child_jobs"]
        for worker in workers:
            await until(manager, worker, lambda j: j.state is JobState.RUNNING, timeout=300)
        gather = await until(manager, gather.id, lambda j: j.pgid is not None)
    assert not rp.running_pods() and len(rp.pods) == 2
    assert all(stored(home, w).state is JobState.FAILED and "the server shut down" in stored(home, w).error
               for w in workers)
    with anyio.fail_after(60):  # the gatherer notices its workers failed and exits on its own
        while process_group_alive(gather.pgid):
            await anyio.sleep(0.2)
    async with supervising(home, rp) as manager:
        gather = await until(manager, gather.id, lambda j: j.state.terminal)
    assert gather.state is JobState.FAILED and any(w in gather.error for w in workers)
    assert json.loads((Path(gather.run_dir) / "experiment" / "table.json").read_text())["status"] == "failed"
