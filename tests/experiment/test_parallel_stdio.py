"""Experiments in parallel through the real server over stdio and real workers on the CPU (tiny model,
a few steps): parallel=2 gives the same per-run metrics and table as serial (seeds and data do not
depend on where a run trained); cancel stops the gatherer and every worker."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from finetune_mcp.jobs.backends.local import process_group_alive

from .test_experiment_stdio import experiment, job_state, start_args

pytestmark = pytest.mark.slow


async def _run(client, model: Path, data: Path, **extra) -> tuple[dict, dict, float]:
    began = time.perf_counter()
    started = (await client.call_tool("start_experiment", start_args(model, data, max_steps=3, **extra))
               ).structured_content
    done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 600})).structured_content
    wall = time.perf_counter() - began
    assert done["state"] == "succeeded", done["error"]
    return started, await experiment(client, started["job_id"]), wall


async def test_parallel_two_gives_the_serial_table(server_home, tiny_model, dataset) -> None:
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2")
    async with server.client() as client:
        _, serial, serial_s = await _run(client, tiny_model, dataset)
        started, parallel, parallel_s = await _run(client, tiny_model, dataset, parallel=2)
        workers = [await job_state(client, w) for w in started["workers"]]
    print(f"\nwall time, 2 arms × 2 seeds × 3 steps on the CPU: serial {serial_s:.1f} s, parallel=2 {parallel_s:.1f} s")
    assert len(started["workers"]) == 2 and all(w["state"] == "succeeded" for w in workers)
    assert (parallel["status"], parallel["runs_finished"]) == ("succeeded", 4)
    by_name = {r["name"]: r for r in serial["runs"]}
    for run in parallel["runs"]:
        same = by_name[run["name"]]
        assert run["seed"] == same["seed"] and run["metrics"].keys() == same["metrics"].keys()
        for metric, value in run["metrics"].items():
            assert value == pytest.approx(same["metrics"][metric], rel=1e-4, abs=1e-6), (run["name"], metric)
        assert Path(run["run_dir"]).parent.parent.name in started["workers"]  # trained by a worker job
        assert (Path(run["run_dir"]) / "adapter" / "adapter_model.safetensors").is_file()
    assert parallel["verdict"] == serial["verdict"]
    assert parallel["summary"]["eval_ce"]["entropy"]["n"] == 2 and Path(parallel["report"]).is_file()


async def test_cancelling_a_parallel_experiment_stops_every_worker(server_home, tiny_model, dataset) -> None:
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2", FINETUNE_MCP_CANCEL_GRACE_S="20")
    async with server.client() as client:
        started = (await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=100_000,
                                                                          parallel="auto"))).structured_content
        with anyio.fail_after(300):
            while (await job_state(client, started["job_id"]))["step"] < 2:
                await anyio.sleep(0.3)
        workers = [await job_state(client, w) for w in started["workers"]]
        cancelled = (await client.call_tool("cancel_job", {"job_id": started["job_id"]})).structured_content
        with anyio.fail_after(120):
            while any(s["state"] not in ("cancelled", "failed")
                      for s in [await job_state(client, w) for w in started["workers"]]):
                await anyio.sleep(0.3)
        after = await experiment(client, started["job_id"])
    assert len(started["workers"]) == 2 and cancelled["state"] == "cancelled"
    assert all(w["worker"] and not process_group_alive(w["worker"]["pgid"]) for w in workers)
    assert after["status"] == "cancelled"
