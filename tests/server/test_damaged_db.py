"""A damaged jobs.db (issue 26 bug 7), through the real server over stdio: 8 KiB of garbage, an
overwritten header or a damaged page used to kill the server at start (the client saw "Connection
closed"). Now the server stays up, moves the file aside and rebuilds the job list from the run
directories, and says so in its log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from finetune_mcp.jobs.store import Job, JobState, JobStore
from finetune_mcp.runs.rundir import RunDirectory
from server.conftest import ServerHome

DONE, BROKEN = "ft-0000000000a1", "ft-0000000000b2"


def runs_on_disk(home: Path) -> None:
    """Two run directories: one that succeeded (result.json), one whose worker reported an error."""
    for job_id in (DONE, BROKEN):
        run = RunDirectory(home / "runs" / job_id).create()
        run.write_json(run.spec, {"kind": "train", "model": "tiny", "dataset": "d.jsonl"})
    RunDirectory(home / "runs" / DONE).write_json(RunDirectory(home / "runs" / DONE).result, {"status": "succeeded"})
    RunDirectory(home / "runs" / BROKEN).write_event("error", message="training failed at step 3/10: out of memory")


def a_database_with_rows(path: Path, n: int = 400) -> None:
    store = JobStore(path)
    for i in range(n):
        store.insert(Job(id=f"ft-{i:012x}", state=JobState.QUEUED, target="local", backend="local", device="cpu",
                         slot="cpu", placement={}, config={"note": "x" * 200}, run_dir=f"/nowhere/{i}",
                         created_at=float(i), updated_at=float(i)))
    store.close()


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 32)  # 8 KiB that is no database


def header(path: Path) -> None:
    a_database_with_rows(path, 5)
    data = bytearray(path.read_bytes())
    data[:100] = b"\xff" * 100
    path.write_bytes(bytes(data))


def page(path: Path) -> None:
    a_database_with_rows(path)
    data = bytearray(path.read_bytes())
    assert len(data) > 16 * 4096
    data[8 * 4096:9 * 4096] = b"\x07" * 4096  # one page in the middle of the table
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [garbage, header, page], ids=["garbage", "header", "page"])
async def test_a_damaged_job_database_keeps_the_server_up_and_is_rebuilt(server_home: Callable[..., ServerHome],
                                                                         damage) -> None:
    server = server_home()
    server.home.mkdir(parents=True)
    runs_on_disk(server.home)
    damage(server.home / "jobs.db")
    async with server.client() as client:
        listed = (await client.call_tool("list_jobs", {})).structured_content
        done = (await client.call_tool("get_job", {"job_id": DONE})).structured_content
        broken = (await client.call_tool("get_job", {"job_id": BROKEN})).structured_content
    assert {j["job_id"] for j in listed["jobs"]} == {DONE, BROKEN}, listed
    assert done["state"] == "succeeded"
    assert broken["state"] == "failed" and "out of memory" in broken["error"] and "damaged jobs.db" in broken["error"]
    kept = list(server.home.glob("jobs.db.damaged-*"))
    assert kept, list(server.home.iterdir())
    log = server.stderr_log.read_text()
    assert "is damaged" in log and "2 job(s) rebuilt" in log, log[-3000:]
    assert json.loads(json.dumps(listed))  # a plain answer, not a connection error
