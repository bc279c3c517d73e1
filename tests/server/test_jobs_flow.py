"""Whole job flows through the real server and the real worker (the offline tiny model on the CPU):
train to success and read the metrics; queue on one slot and cancel; kill the server mid-job and
find the job again after a restart."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from fastmcp import Client

from finetune_mcp.jobs.backends.local import process_group_alive

from .conftest import SECRET

pytestmark = pytest.mark.slow

TINY = {"max_examples": 16, "max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
LONG = {**TINY, "max_steps": 100_000}  # runs until cancelled


async def job_state(client, job_id: str) -> dict:
    return (await client.call_tool("get_job", {"job_id": job_id})).structured_content


async def until_step(client, job_id: str, step: int = 1, timeout: float = 90) -> dict:
    """Poll get_job until the worker has logged `step` steps (i.e. it really trains)."""
    with anyio.fail_after(timeout):
        while True:
            job = await job_state(client, job_id)
            assert job["state"] in ("queued", "running"), job
            if job["step"] >= step:
                return job
            await anyio.sleep(0.3)


async def test_train_to_success_then_read_entropy_metrics(server_home, tiny_model: Path, dataset: Path) -> None:
    server = server_home()
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with server.client() as client:
        started = await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), "entropy_weighting": True, "max_steps": 5,
            "target": "local", "config_overrides": TINY,
        })
        job_id = started.structured_content["job_id"]
        assert started.structured_content["state"] == "queued" and started.structured_content["device"] == "cpu"
        done = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 150},
                                       progress_handler=on_progress)).structured_content
        metrics = (await client.call_tool("get_entropy_metrics", {"job_id": job_id})).structured_content
        log = await client.read_resource(f"job://{job_id}/log")
        events = await client.read_resource(f"job://{job_id}/events")
        spec = json.loads((await client.read_resource(f"job://{job_id}/spec"))[0].text)
    assert done["state"] == "succeeded", done["error"]
    assert (done["step"], done["total_steps"], done["progress_pct"]) == (5, 5, 100.0)
    assert done["metrics"]["train/loss"] > 0 and done["entropy_weighting"] is True
    assert progress and progress[-1][0] == 5 and "succeeded" in progress[-1][2]  # notifications while waiting

    assert metrics["entropy_weighting"] is True and metrics["steps_logged"] == 5
    assert metrics["mean_entropy"] > 0 and 0 <= metrics["high_entropy_share"] <= 1
    points = metrics["series"]
    assert [p["step"] for p in points] == [1, 2, 3, 4, 5]
    assert all(p["loss"] > 0 and p["ce_loss"] > 0 and p["weighted_loss"] > 0 for p in points)
    assert all(p["loss"] > p["ce_loss"] for p in points)  # weights in [1, 2]: the weighted loss is larger
    histogram = metrics["histogram"]
    assert sum(histogram["counts"]) == histogram["tokens_sampled"] > 0
    assert len(histogram["bin_edges"]) == len(histogram["counts"]) + 1
    assert metrics["top_tokens"] and metrics["top_tokens"][0]["count"] >= 1

    assert "loaded" in log[0].text
    assert json.loads(events[0].text.splitlines()[-1])["type"] == "end"
    assert spec["model"] == str(tiny_model) and spec["enable_entropy_weighting"] is True
    run_dir = Path(done["run_dir"])
    for path in [run_dir / "spec.json", run_dir / "train.log", run_dir / "events.jsonl"]:
        assert SECRET not in path.read_text()  # HF_TOKEN reached the worker by environment only
    assert SECRET not in json.dumps(server.stdout_messages())


async def test_one_slot_queues_the_second_job_and_cancel_stops_the_worker(server_home, tiny_model: Path,
                                                                          dataset: Path) -> None:
    """The second job waits for the slot; the first is cancelled by the tool, the second by the CLI
    (another process) while the server supervises it."""
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="1")
    args = {"model": str(tiny_model), "dataset": str(dataset), "target": "local", "config_overrides": LONG}
    async with server.client() as client:
        first = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        second = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        running = await until_step(client, first)
        queued = await job_state(client, second)
        assert (queued["state"], queued["queue_position"]) == ("queued", 1)
        listed = (await client.call_tool("list_jobs", {"state": "running"})).structured_content
        assert [j["job_id"] for j in listed["jobs"]] == [first]

        pgid = running["worker"]["pgid"]
        cancelled = (await client.call_tool("cancel_job", {"job_id": first})).structured_content
        assert cancelled["state"] == "cancelled" and "partial run is kept" in cancelled["error"]
        assert not process_group_alive(pgid)
        with anyio.fail_after(30):  # the slot is free: the second job starts
            while not (second_running := await job_state(client, second))["worker"]:  # running, pid known
                await anyio.sleep(0.2)

        cli = [sys.executable, "-m", "finetune_mcp.cli"]
        table = await anyio.run_process([*cli, "jobs"], env=server.env)
        status = json.loads((await anyio.run_process([*cli, "status", second], env=server.env)).stdout)
        logs = await anyio.run_process([*cli, "logs", second, "-n", "5"], env=server.env)
        stopped = await anyio.run_process([*cli, "cancel", second], env=server.env)
        assert (await job_state(client, second))["state"] == "cancelled"
    assert first in table.stdout.decode() and "cancelled" in table.stdout.decode()
    assert status["job_id"] == second and status["state"] == "running"
    assert logs.returncode == 0 and len(logs.stdout.decode().splitlines()) <= 5
    assert f"{second}: cancelled" in stopped.stderr.decode()
    assert not process_group_alive(second_running["worker"]["pgid"])
    last = json.loads(Path(cancelled["run_dir"], "events.jsonl").read_text().splitlines()[-1])
    assert (last["type"], last["status"]) == ("end", "cancelled")


async def test_a_killed_server_finds_its_jobs_after_restart(server_home, tiny_model: Path, dataset: Path) -> None:
    """Two jobs run; the server is killed (SIGKILL) and one worker dies with it. The restarted server
    re-attaches the live worker (it keeps training) and marks the dead one failed, saying why."""
    server = server_home(FINETUNE_MCP_MAX_CPU_JOBS="2")
    args = {"model": str(tiny_model), "dataset": str(dataset), "target": "local", "config_overrides": LONG}
    async with server.client() as client:
        survivor = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        victim = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        alive = await until_step(client, survivor)
        dead = await until_step(client, victim)
        server_pid = _parent_pid(alive["worker"]["pid"])
        os.kill(server_pid, signal.SIGKILL)
        os.killpg(dead["worker"]["pgid"], signal.SIGKILL)
        with pytest.raises(Exception):  # noqa: B017 - the connection is gone, however the client says it
            await client.call_tool("get_job", {"job_id": survivor})

    async with server.client() as client:
        with anyio.fail_after(30):
            while (failed := await job_state(client, victim))["state"] != "failed":
                await anyio.sleep(0.2)
        again = await job_state(client, survivor)
        assert again["state"] == "running" and again["worker"]["pid"] == alive["worker"]["pid"]
        later = await until_step(client, survivor, step=again["step"] + 2)  # progress still arrives
        cancelled = (await client.call_tool("cancel_job", {"job_id": survivor})).structured_content
    assert failed["error"].startswith("the worker was gone when the server (re)started")
    assert later["step"] > again["step"]
    assert cancelled["state"] == "cancelled" and not process_group_alive(alive["worker"]["pgid"])
    server.stdout_messages()


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_a_client_configured_from_mcp_json_runs_the_whole_flow(tmp_path: Path, tiny_model: Path,
                                                                    dataset: Path, server_home,
                                                                    allowed_test_root: Path) -> None:
    """The shipped mcp.json, as Claude Code / Desktop would use it: start → poll → metrics → cancel. A
    client's `env` replaces the inherited environment, so the data's folder is allowed there, as a user
    would allow theirs."""
    config = json.loads((Path(__file__).parents[2] / "mcp.json").read_text())
    entry = config["mcpServers"]["finetune-mcp"]
    home = server_home()  # cleans up any worker left behind
    entry["env"] = {**entry.get("env", {}), "FINETUNE_MCP_HOME": str(home.home), "HF_HUB_OFFLINE": "1",
                    "FINETUNE_MCP_ROOTS": str(allowed_test_root),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    async with Client(config, timeout=120) as client:
        job_id = (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), "entropy_weighting": True, "target": "local",
            "config_overrides": LONG,
        })).structured_content["job_id"]
        await until_step(client, job_id, step=2)
        metrics = (await client.call_tool("get_entropy_metrics", {"job_id": job_id})).structured_content
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
    assert metrics["state"] == "running" and metrics["steps_logged"] >= 2 and metrics["series"][0]["loss"] > 0
    assert cancelled["state"] == "cancelled"
