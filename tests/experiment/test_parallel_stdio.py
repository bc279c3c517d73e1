"""Experiments in parallel through the real server over stdio and real workers on the CPU (tiny model,
a few steps): parallel=2 gives the same per-run metrics and table as serial (seeds and data do not
depend on where a run trained), also when the server is killed mid-way and a new one re-attaches the
gatherer and its workers; cancel after such a restart stops the gatherer and every worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from finetune_mcp.jobs.backends.local import process_group_alive
from server.conftest import ServerHome

from .test_experiment_stdio import _parent_pid, experiment, job_state, start_args

pytestmark = pytest.mark.slow


async def _run(client, model: Path, data: Path, **extra) -> tuple[dict, dict, float]:
    began = time.perf_counter()
    started = (await client.call_tool("start_experiment", start_args(model, data, max_steps=3, **extra))
               ).structured_content
    done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 600})).structured_content
    wall = time.perf_counter() - began
    assert done["state"] == "succeeded", done["error"]
    assert (done["step"], done["total_steps"]) == (12, 12)  # 4 runs × 3 steps, however fast they went
    return started, await experiment(client, started["job_id"]), wall


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, dataset: Path) -> dict:
    """The experiment run serially, once for the module: the table every parallel run here must give."""

    async def main() -> dict:
        async with ServerHome(tmp_path_factory.mktemp("serial")).client() as client:
            _, table, wall = await _run(client, tiny_model, dataset)
        print(f"\nwall time, 2 arms × 2 seeds × 3 steps on the CPU, serially: {wall:.1f} s")
        return table

    return anyio.run(main)


def assert_same_runs(parallel: dict, serial: dict, workers: list[str]) -> None:
    """Every run's metrics as serially, each trained by one of `workers`; the same verdict."""
    assert (parallel["status"], parallel["runs_finished"]) == ("succeeded", 4)
    by_name = {r["name"]: r for r in serial["runs"]}
    for run in parallel["runs"]:
        same = by_name[run["name"]]
        assert run["seed"] == same["seed"] and run["metrics"].keys() == same["metrics"].keys()
        for metric, value in run["metrics"].items():
            assert value == pytest.approx(same["metrics"][metric], rel=1e-4, abs=1e-6), (run["name"], metric)
        assert Path(run["run_dir"]).parent.parent.name in workers  # trained by a worker job
        assert (Path(run["run_dir"]) / "adapter" / "adapter_model.safetensors").is_file()
    assert parallel["verdict"] == serial["verdict"]
    assert parallel["summary"]["eval_ce"]["entropy"]["n"] == 2 and Path(parallel["report"]).is_file()


async def test_parallel_two_gives_the_serial_table(server_home, tiny_model, dataset, serial) -> None:
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2")
    async with server.client() as client:
        started, parallel, parallel_s = await _run(client, tiny_model, dataset, parallel=2)
        workers = [await job_state(client, w) for w in started["workers"]]
    print(f"\nwall time, 2 arms × 2 seeds × 3 steps on the CPU, parallel=2: {parallel_s:.1f} s")
    assert len(started["workers"]) == 2 and all(w["state"] == "succeeded" for w in workers)
    assert_same_runs(parallel, serial, started["workers"])


async def _kill_server(client, started: dict) -> dict[str, dict]:
    """SIGKILL the server (not its workers: they are detached); returns the gatherer's and every
    worker's job as they were just before."""
    jobs = {j: await job_state(client, j) for j in [started["job_id"], *started["workers"]]}
    os.kill(_parent_pid(jobs[started["job_id"]]["worker"]["pid"]), signal.SIGKILL)
    with pytest.raises(Exception):  # noqa: B017 - the connection is gone, however the client says it
        await client.call_tool("get_job", {"job_id": started["job_id"]})
    return jobs


async def test_a_killed_server_re_attaches_a_parallel_experiment_which_ends_with_the_serial_table(
        server_home, tiny_model, dataset, serial) -> None:
    """The gatherer and both workers keep training while no server runs; the next server adopts them
    (same processes, not new ones) and the experiment ends as if nothing had happened."""
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2")
    async with server.client() as client:
        started = (await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=3,
                                                                          parallel=2))).structured_content
        with anyio.fail_after(300):
            while (await job_state(client, started["job_id"]))["step"] < 1:
                await anyio.sleep(0.2)
        before = await _kill_server(client, started)

    async with server.client() as client:
        again = await job_state(client, started["job_id"])
        done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 600})
                ).structured_content
        workers = [await job_state(client, w) for w in started["workers"]]
        parallel = await experiment(client, started["job_id"])
    assert all(job["state"] == "running" for job in before.values())
    assert again["state"] == "running" and again["worker"]["pid"] == before[started["job_id"]]["worker"]["pid"]
    assert done["state"] == "succeeded", done["error"]
    assert all(w["state"] == "succeeded" for w in workers), [w["error"] for w in workers]
    assert_same_runs(parallel, serial, started["workers"])
    assert not any(process_group_alive(job["worker"]["pgid"]) for job in before.values())


async def test_cancel_stops_every_worker_also_after_a_server_restart(server_home, tiny_model, dataset) -> None:
    """The experiment a killed server had started is cancelled through the next one: the gatherer and both
    workers it adopted are stopped (they were started by another process: only their stored handles
    lead to them)."""
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2", FINETUNE_MCP_CANCEL_GRACE_S="20")
    args = start_args(tiny_model, dataset, max_steps=100_000, parallel="auto")
    async with server.client() as client:
        started = (await client.call_tool("start_experiment", args)).structured_content
        with anyio.fail_after(300):
            while (await job_state(client, started["job_id"]))["step"] < 2:
                await anyio.sleep(0.3)
        before = await _kill_server(client, started)

    async with server.client() as client:
        again = [await job_state(client, j) for j in before]
        cancelled = (await client.call_tool("cancel_job", {"job_id": started["job_id"]})).structured_content
        with anyio.fail_after(120):
            while any(s["state"] not in ("cancelled", "failed")
                      for s in [await job_state(client, w) for w in started["workers"]]):
                await anyio.sleep(0.3)
        workers = [await job_state(client, w) for w in started["workers"]]
        after = await experiment(client, started["job_id"])
    assert len(started["workers"]) == 2 and all(job["state"] == "running" for job in again)
    assert [job["worker"]["pid"] for job in again] == [job["worker"]["pid"] for job in before.values()]
    assert cancelled["state"] == "cancelled" and all(w["state"] == "cancelled" for w in workers)
    assert not any(process_group_alive(job["worker"]["pgid"]) for job in before.values())
    assert after["status"] == "cancelled"
