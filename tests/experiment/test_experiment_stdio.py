"""Experiments through the real server over stdio (fastmcp.Client) and the real worker, on the
offline tiny model: 2 arms × 2 seeds to a table with intervals; bad arms refused with the fix;
cancel mid-way keeps the finished runs; a killed server's restart re-attaches the worker."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from finetune_mcp.jobs.backends.local import process_group_alive

pytestmark = pytest.mark.slow

SMALL = {"max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
         "max_examples": 16, "validation_split": 0.25, "max_new_tokens": 4, "save_steps": 100_000}
CLI = [sys.executable, "-m", "finetune_mcp.cli"]


def start_args(model: Path, data: Path, **extra) -> dict:
    return {"model": str(model), "dataset": str(data), "seeds": 2, "target": "local", "config_overrides": SMALL,
            **extra}


async def experiment(client, job_id: str) -> dict:
    return (await client.call_tool("get_experiment", {"job_id": job_id})).structured_content


async def job_state(client, job_id: str) -> dict:
    return (await client.call_tool("get_job", {"job_id": job_id})).structured_content


async def test_two_arms_by_two_seeds_end_with_a_table_and_an_interval(server_home, tiny_model, dataset,
                                                                       tmp_path) -> None:
    """... with the forgetting check on (retain_dataset): each run's CE rise over the base model's."""
    from finetune_mcp.testing import write_dataset

    retain = write_dataset(tmp_path / "retain.jsonl", "messages", n=6, seed=1)
    server = server_home()
    async with server.client() as client:
        refused = await client.call_tool("start_experiment", start_args(tiny_model, dataset, arms=["standard", "dtf"]),
                                         raise_on_error=False)
        no_retain = await client.call_tool("start_experiment", start_args(
            tiny_model, dataset, retain_dataset=str(tmp_path / "no-such-retain.jsonl")), raise_on_error=False)
        started = (await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=3,
                                                                         retain_dataset=str(retain)))
                   ).structured_content
        job_id = started["job_id"]
        done = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 600})).structured_content
        result = await experiment(client, job_id)
        shot = (await client.call_tool("tensorboard_screenshot", {"job_id": job_id, "allow_matplotlib": True})
                ).structured_content
        listed = (await client.call_tool("list_jobs", {})).structured_content
    assert refused.is_error and "unknown arm 'dtf': a named arm is 'standard'" in refused.content[0].text
    assert "for other settings give an object" in refused.content[0].text
    assert no_retain.is_error and "retain_dataset: " in no_retain.content[0].text
    assert "no-such-retain.jsonl: no such file or folder" in no_retain.content[0].text
    assert started["kind"] == "experiment" and started["runs"] == 4 and started["state"] == "queued"
    assert [a["name"] for a in started["arms"]] == ["standard", "entropy"] and started["seeds"] == [3407, 3408]
    assert done["state"] == "succeeded", done["error"]
    assert (done["step"], done["total_steps"]) == (12, 12) and "get_experiment" in done["hint"]
    assert listed["count"] == 1  # the runs belong to the experiment (and the refused starts made no job)

    assert (result["status"], result["runs_finished"], result["runs_total"]) == ("succeeded", 4, 4)
    primary = next(c for c in result["comparisons"] if c["metric"] == result["primary_metric"])
    assert primary["n"] == 2 and primary["ci_low"] <= primary["mean_difference"] <= primary["ci_high"]
    assert result["verdict"] and result["recommendation"]["reason"]
    assert result["summary"]["eval_ce"]["entropy"]["n"] == 2
    forgetting = result["heldout"]["retain"]
    assert (forgetting["rows"], forgetting["source"]) == (6, f"all of {retain}") and forgetting["base_ce"] > 0
    for run in result["runs"]:
        assert run["metrics"]["retain_ce_rise"] == pytest.approx(run["metrics"]["retain_ce"] - forgetting["base_ce"])
    assert result["summary"]["retain_ce_rise"]["entropy"]["n"] == 2
    assert "retain_ce_rise" in {m["name"] for m in result["metrics"]} | {c["metric"] for c in result["comparisons"]}
    assert "Forgetting check" in Path(result["report"]).read_text()
    assert Path(result["report"]).is_file() and Path(result["plot"]).is_file()
    assert shot["runs"] == ["standard-s3407", "entropy-s3407", "standard-s3408", "entropy-s3408"]
    assert Path(shot["path"]).parent == Path(done["run_dir"]) / "screenshots"

    table = await anyio.run_process([*CLI, "experiment-table", job_id], env=server.env)
    assert "verdict" in table.stderr.decode() and "standard vs entropy: 4 of 4 runs" in table.stdout.decode()
    card = await anyio.run_process([*CLI, "card", str(Path(done["run_dir"]) / "runs" / "entropy-s3407")], env=server.env)
    assert "## Part of an experiment" in Path(card.stdout.decode().strip()).read_text()
    server.stdout_messages()


async def test_cancel_mid_way_keeps_the_finished_runs(server_home, tiny_model, dataset) -> None:
    server = server_home(FINETUNE_MCP_CANCEL_GRACE_S="30")  # time to write the table, report and plot
    async with server.client() as client:
        job_id = (await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=12))
                  ).structured_content["job_id"]
        with anyio.fail_after(400):
            while (partial := await experiment(client, job_id))["runs_finished"] < 1:
                assert partial["state"] in ("queued", "running"), partial
                await anyio.sleep(0.3)
        running = await job_state(client, job_id)
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
        after = await experiment(client, job_id)
    assert cancelled["state"] == "cancelled" and not process_group_alive(running["worker"]["pgid"])
    assert after["status"] == "cancelled" and 1 <= after["runs_finished"] < 4
    finished = [r for r in after["runs"] if r["status"] == "succeeded"]
    stopped = [r for r in after["runs"] if r["status"] == "cancelled"]
    assert finished[0]["name"] == "standard-s3407" and finished[0]["metrics"]["eval_ce"] > 0
    assert (Path(finished[0]["run_dir"]) / "adapter" / "adapter_model.safetensors").is_file()
    assert len(stopped) == 1 and all(r["status"] == "pending" for r in after["runs"][len(finished) + 1:])
    last = json.loads((Path(stopped[0]["run_dir"]) / "events.jsonl").read_text().splitlines()[-1])
    assert (last["type"], last["status"]) == ("end", "cancelled")
    assert Path(after["report"]).is_file() and "status **cancelled**" in Path(after["report"]).read_text()


async def test_a_killed_server_re_attaches_the_experiment_after_restart(server_home, tiny_model, dataset) -> None:
    server = server_home()
    async with server.client() as client:
        job_id = (await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=100_000))
                  ).structured_content["job_id"]
        with anyio.fail_after(300):
            while (alive := await job_state(client, job_id))["step"] < 1:
                await anyio.sleep(0.3)
        os.kill(_parent_pid(alive["worker"]["pid"]), signal.SIGKILL)  # the server, not the worker
        with pytest.raises(Exception):  # noqa: B017 - the connection is gone, however the client says it
            await client.call_tool("get_job", {"job_id": job_id})

    async with server.client() as client:
        again = await job_state(client, job_id)
        with anyio.fail_after(120):
            while (later := await job_state(client, job_id))["step"] <= again["step"] + 1:
                await anyio.sleep(0.3)
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
    assert again["state"] == "running" and again["worker"]["pid"] == alive["worker"]["pid"]
    assert later["step"] > again["step"] and later["total_steps"] == 4 * 100_000
    assert cancelled["state"] == "cancelled" and not process_group_alive(alive["worker"]["pgid"])


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_an_experiment_with_its_own_held_out_file_starts(server_home, tiny_model, dataset, tmp_path) -> None:
    """The held-out file is another file than the training data: the start check's record of the training
    files must not be held against it (the H100 run on 2026-12-06 was refused at start: "the data files
    changed since the start check")."""
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(line for i, line in enumerate(dataset.read_text().splitlines(keepends=True)) if i < 4))
    server = server_home()
    async with server.client() as client:
        started = await client.call_tool("start_experiment", start_args(tiny_model, dataset, max_steps=1,
                                                                        eval_dataset=str(heldout)),
                                         raise_on_error=False)
        if not started.is_error:
            await client.call_tool("cancel_job", {"job_id": started.structured_content["job_id"]})
    assert not started.is_error, started.content[0].text
    assert started.structured_content["state"] in ("queued", "running")
