"""A worker process with scripted behaviour, for the job manager's tests.

It speaks the worker's protocol (events.jsonl in the spec's folder, output to stdout/stderr which
the backend sends to train.log) but does no training, so the manager's process handling (exit
codes, signals, process groups, restarts) is tested in milliseconds. The real worker runs in
tests/server/. Usage: python scripted_worker.py MODE[:STEPS[:DELAY]] SPEC
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def event(run_dir: Path, **data: object) -> None:
    with (run_dir / "events.jsonl").open("a") as fh:
        fh.write(json.dumps({"time": time.time(), **data}) + "\n")


def main() -> int:
    mode, *args = sys.argv[1].split(":")
    steps = int(args[0]) if args else 3
    delay = float(args[1]) if len(args) > 1 else 0.0
    run_dir = Path(sys.argv[2]).parent
    json.loads(Path(sys.argv[2]).read_text())  # the spec must be there and valid
    print(f"scripted worker {mode} starting", flush=True)
    if mode == "env":  # what the backend handed over, for the worker-environment tests
        (run_dir / "worker-env.json").write_text(json.dumps(dict(os.environ)))
    if mode == "crash":
        print("about to crash", file=sys.stderr, flush=True)
        return 3
    event(run_dir, type="start", step=0, total_steps=steps)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "spawn-child":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # same process group
    if mode in ("hang", "stubborn", "spawn-child"):
        while True:
            time.sleep(0.05)
    if mode == "garbage":
        with (run_dir / "events.jsonl").open("a") as fh:
            fh.write("{not json\n")
    for step in range(1, steps + 1):
        time.sleep(delay)
        event(run_dir, type="progress", step=step, total_steps=steps, epoch=step / steps, eta_s=(steps - step) * delay,
              metrics={"train/loss": 2.0 / step, "train/entropy_mean": 1.5, "train/grad_norm": float("nan")})
        print(f"step {step}", flush=True)
    if mode == "forged":  # a forged / corrupt progress line and an unknown type, then a good end
        event(run_dir, type="progress", step=999_999, metrics={"train/loss": -1.0})
        event(run_dir, type="progress", step=1, total_steps=steps, metrics={"train/loss": -2.0})
        event(run_dir, type="shell", step=steps)
    if mode == "torn":  # killed mid-write, and the next write (an older writer) lands on the same line
        with (run_dir / "events.jsonl").open("a") as fh:
            fh.write('{"type": "progress", "step": 99, "metr')
        event(run_dir, type="error", message="the real reason", error_type="RuntimeError", work="training")
        return 1
    if mode == "fill":  # the disk fills up (nothing more can be written, not even the error): the worker dies
        fd = os.open(run_dir / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        block = b"\0" * 65536
        while len(block) >= 1:
            try:
                os.write(fd, block)
            except OSError:
                block = block[: len(block) // 2] if len(block) > 1 else b""
        os.close(fd)
        return 1
    if mode == "error":
        print("Traceback (most recent call last):\nRuntimeError: CUDA out of memory", file=sys.stderr, flush=True)
        event(run_dir, type="error", message="CUDA out of memory", error_type="RuntimeError", work="training")
        return 1
    event(run_dir, type="end", status="succeeded", step=steps, total_steps=steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
