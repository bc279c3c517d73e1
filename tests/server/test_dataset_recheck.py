"""The worker re-checks the dataset files the server checked (issue 26 bug 6), through the real server
over stdio: a CSV swapped for a link to a secret file after the start check had that file's first line
quoted in the job's error (as "keys"); a file rewritten with other valid rows was trained on silently.
Now the worker opens the recorded file without following links and compares device, inode, size,
mtime and SHA-256 with what the start check saw."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from finetune_mcp.testing.local_server import job_ended
from server.conftest import ServerHome

SECRET_LINE = "root:$6$SECRETHASHdoNotQuote:19000:0:99999:7:::"
TINY = {"max_examples": 8, "max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "validation_split": 0}


def csv_rows(path: Path, answer: str = "four") -> Path:
    path.write_text("prompt,completion\n" + "".join(f"What is {i} plus {i}?,{answer} {i}\n" for i in range(8)))
    return path




async def test_a_dataset_swapped_after_the_start_check_is_refused_unquoted(server_home: Callable[..., ServerHome],
                                                                          tiny_model: Path, tmp_path: Path) -> None:
    server = server_home()
    secret = tmp_path / "shadow"
    secret.write_text(SECRET_LINE + "\nsecond,line\n")
    linked, rewritten = csv_rows(tmp_path / "linked.csv"), csv_rows(tmp_path / "rewritten.csv")
    args = {"model": str(tiny_model), "target": "local", "max_steps": 1, "config_overrides": TINY}
    async with server.client() as client:
        first = (await client.call_tool("start_finetune", {**args, "dataset": str(linked)})).structured_content
        linked.unlink()
        os.symlink(secret, linked)  # after the server's check, before the worker reads
        second = (await client.call_tool("start_finetune", {**args, "dataset": str(rewritten)})).structured_content
        csv_rows(rewritten, answer="five")  # other valid rows, same size
        jobs = [await job_ended(client, first["job_id"], 300), await job_ended(client, second["job_id"], 300)]
    swapped, changed = jobs
    assert swapped["state"] == "failed" and "symbolic link now" in swapped["error"], swapped["error"]
    assert changed["state"] == "failed" and "changed since the job's start check" in changed["error"], changed["error"]
    for job in jobs:
        assert "SECRETHASH" not in job["error"] and "root:" not in job["error"]
    for path in server.home.rglob("*"):
        if path.is_file():
            assert b"SECRETHASH" not in path.read_bytes(), path
