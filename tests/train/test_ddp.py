"""Two processes (gloo, CPU) through torchrun: DDP trains, metrics cover both ranks, rank 0 writes once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.testing import write_dataset


@pytest.mark.slow
def test_two_process_gloo_run_trains_in_sync_and_logs_once(tiny_model_dir, tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", "messages", n=64)
    run = RunDirectory(tmp_path / "run").create()
    config = build_config(dict(model=str(tiny_model_dir), dataset=str(data), max_steps=6, logging_steps=2,
                               per_device_train_batch_size=4, gradient_accumulation_steps=1, max_seq_length=48,
                               enable_entropy_weighting=True))
    run.spec.write_text(config.model_dump_json())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "finetune_mcp.cli", "worker", "run", str(run.spec)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    result = json.loads(run.result.read_text())
    assert result["num_processes"] == 2
    assert result["ranks_in_sync"] is True  # every rank holds the same adapter: gradients were reduced
    steps = [e["step"] for e in run.iter_events("progress")]
    assert steps == [2, 4, 6]  # written once, by rank 0
    assert len(list(run.iter_events("end"))) == 1
    assert (run.adapter / "adapter_model.safetensors").exists()
    assert result["metrics"]["train/entropy_mean"] > 0


def _processes_running(marker: str) -> list[int]:
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State"))
            except (OSError, StopIteration):
                continue
            if marker in cmdline and "Z (zombie)" not in state:
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_killing_the_launcher_group_stops_every_rank(tiny_model_dir, tmp_path):
    """Cancel escalates to SIGKILL on the worker's process group; ranks (own sessions) must die too."""
    import os
    import signal
    import time

    data = write_dataset(tmp_path / "data.jsonl", "messages", n=64)
    run = RunDirectory(tmp_path / "ddp-kill").create()
    config = build_config(dict(model=str(tiny_model_dir), dataset=str(data), max_steps=10_000, logging_steps=1,
                               per_device_train_batch_size=2, max_seq_length=48, save_steps=10_000))
    run.spec.write_text(config.model_dump_json())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "finetune_mcp.cli", "worker", "run", str(run.spec)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(run.iter_events("progress")):
        time.sleep(0.5)
    ranks = [pid for pid in _processes_running(str(run.spec)) if pid != proc.pid]
    assert len(ranks) >= 2, "both ranks should be training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and [p for p in ranks if p in _processes_running(str(run.spec))]:
        time.sleep(0.2)
    assert not [p for p in ranks if p in _processes_running(str(run.spec))]
