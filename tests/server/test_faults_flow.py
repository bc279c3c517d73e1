"""Issue 16's faults as the agent meets them, through the real server over stdio and the real worker
(the offline tiny model on the CPU): a disk that fills mid-run and one already full at start (a real
small tmpfs holding FINETUNE_MCP_HOME), forged and torn lines in events.jsonl, and a screenshot that
compares a job with itself."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from finetune_mcp.report.screenshot import find_chromium
from standins.small_disk import fill

from .test_jobs_flow import LONG, TINY, job_state, until_step

pytestmark = pytest.mark.slow


async def test_a_disk_that_fills_mid_run_fails_the_job_saying_so(server_home, small_disk: Path, tiny_model: Path,
                                                                 dataset: Path) -> None:
    """Was: the worker died, the job stayed `running` with no error, the server logged a traceback a
    second, and the next start_finetune answered "[Errno 28] No space left on device"."""
    server = server_home()
    server.home = small_disk / "home"  # FINETUNE_MCP_HOME on the 32 MiB tmpfs
    server.env["FINETUNE_MCP_HOME"] = str(server.home)
    args = {"model": str(tiny_model), "dataset": str(dataset), "target": "local",
            "config_overrides": {**LONG, "save_steps": 1}}  # a checkpoint every step: the disk is written to
    async with server.client() as client:
        job_id = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        await until_step(client, job_id, step=1, timeout=120)
        fill(small_disk)
        filled = time.monotonic()
        with anyio.fail_after(60):
            while (job := await job_state(client, job_id))["state"] == "running":
                await anyio.sleep(0.2)
        seconds = time.monotonic() - filled
        refused = await client.call_tool("start_finetune", {**args, "config_overrides": TINY}, raise_on_error=False)
    assert job["state"] == "failed", job
    first = job["error"].splitlines()[0]
    assert f"disk full at {job['run_dir']}: free 0.00 GB; free space or set FINETUNE_MCP_HOME to another disk" in first
    assert "Errno" not in first
    assert refused.is_error
    text = refused.content[0].text
    assert "disk full at" in text and "free space or set FINETUNE_MCP_HOME to another disk" in text, text
    assert "[Errno 28]" not in text
    log = server.stderr_log.read_text()
    assert log.count("Traceback") == 0, log[-3000:]
    print(f"\nENOSPC mid-run: job failed {seconds:.1f} s after the disk filled: {first}")
    server.stdout_messages()


async def test_forged_and_torn_event_lines_move_nothing(server_home, tiny_model: Path, dataset: Path) -> None:
    """Was: a forged progress line put the job at step 999,999 of N; a torn line joined to the next
    event swallowed it. Then the job's screenshot compared with itself (was: 62 s, then an error)."""
    server = server_home()
    args = {"model": str(tiny_model), "dataset": str(dataset), "target": "local", "config_overrides": LONG}
    async with server.client() as client:
        job_id = (await client.call_tool("start_finetune", args)).structured_content["job_id"]
        running = await until_step(client, job_id, step=1, timeout=120)
        events = Path(running["run_dir"]) / "events.jsonl"
        pgid = running["worker"]["pgid"]
        os.killpg(pgid, signal.SIGSTOP)  # the worker holds still: the forged lines are the newest
        try:
            with events.open("a") as fh:
                fh.write(json.dumps({"type": "progress", "step": 999_999, "total_steps": running["total_steps"]})
                         + "\n")
                fh.write(json.dumps({"type": "progress", "step": 999_999}) + "\n")
                fh.write(json.dumps({"type": "delete_everything"}) + "\n")
            await anyio.sleep(2)  # the manager has read them
            frozen = await job_state(client, job_id)
            with events.open("a") as fh:
                fh.write('{"type": "progress", "step": 3, "metr')  # torn: the worker's next event follows it
        finally:
            os.killpg(pgid, signal.SIGCONT)
        assert frozen["step"] < 1000 and frozen["total_steps"] == running["total_steps"], frozen
        later = await until_step(client, job_id, step=frozen["step"] + 2, timeout=120)
        assert later["step"] < 1000 and later["total_steps"] == running["total_steps"]
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
        shot = None
        if find_chromium() is not None:
            started = time.monotonic()
            shot = (await client.call_tool("tensorboard_screenshot", {
                "job_id": job_id, "compare_with": [job_id, job_id]})).structured_content
            shot_s = time.monotonic() - started
    assert cancelled["state"] == "cancelled" and cancelled["step"] < 1000
    lines = events.read_text().splitlines()
    assert lines.index('{"type": "progress", "step": 3, "metr') < len(lines) - 1  # the fragment is alone
    assert json.loads(lines[-1])["type"] == "end"
    if shot is not None:
        assert shot["runs"] == [job_id] and shot_s < 40, (shot, shot_s)
        print(f"\nscreenshot compare_with itself: {shot_s:.1f} s")
    server.stdout_messages()
