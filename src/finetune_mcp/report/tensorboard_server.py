"""One real TensorBoard server on 127.0.0.1, shared by every screenshot while the MCP server runs.

Why a folder of symlinks as the logdir: TensorBoard names a run after its folder under `--logdir`,
and a symlink `<links>/<job id> -> <run dir>/tensorboard` makes the run show up as `<job id>`.
Adding a job is then adding a link, which TensorBoard's reload loop picks up within
`reload_interval` seconds, so the server never restarts while jobs come and go, and comparing runs
is a run filter in the page URL. (`--logdir_spec` would name runs `job/.` and need a restart for
each new job.) The Python loader (`--load_fast=false`) is used because it follows the links and
needs no platform binary.

The process runs in its own session with secrets stripped from its environment; its output goes to
a log file, never to our stdout (which carries the MCP protocol on stdio).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from finetune_mcp.errors import FinetuneError

_READY_LINE = re.compile(r"TensorBoard \S+ at (http://127\.0\.0\.1:(\d+)/)")
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RUNPOD_API_KEY", "FINETUNE_MCP_WORKER_TOKEN",
               "FINETUNE_MCP_HTTP_TOKEN")
_RUN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# TensorBoard's own main, plus a thread that ends it when the process that started it is gone: a
# server killed with SIGKILL never runs its shutdown, and TensorBoard runs in its own session.
_WATCHED_TENSORBOARD = """
import os, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["tensorboard", *sys.argv[2:]]
from tensorboard.main import run_main
run_main()
"""


class TensorBoardError(FinetuneError):
    """TensorBoard could not start or does not show the asked data."""


class TensorBoardServer:
    """Start once, `add_run` per job, `stop` at shutdown. Also a context manager."""

    def __init__(self, *, reload_interval: float = 1.0, start_timeout: float = 60.0) -> None:
        self.reload_interval = reload_interval
        self.start_timeout = start_timeout
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._runs: dict[str, Path] = {}
        self._lock = threading.RLock()  # screenshots run in worker threads; one start, one link per run

    @property
    def logdir(self) -> Path:
        if self._workdir is None:
            raise TensorBoardError("the TensorBoard server is not started; call start() first")
        return self._workdir / "logdir"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start `tensorboard` on a free 127.0.0.1 port; returns its URL once it answers HTTP."""
        with self._lock:
            return self._start()

    def _start(self) -> str:
        if self.running and self.url is not None:
            return self.url
        self._stop()  # a server that died (or never started) leaves nothing behind
        self._workdir = Path(tempfile.mkdtemp(prefix="finetune-mcp-tb-"))
        self.logdir.mkdir()
        for name, target in self._runs.items():  # a restart after a crash keeps the runs
            (self.logdir / name).symlink_to(target, target_is_directory=True)
        log_path = self._workdir / "tensorboard.log"
        env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
        cmd = [
            sys.executable, "-c", _WATCHED_TENSORBOARD, str(os.getpid()),
            "--logdir", str(self.logdir), "--host", "127.0.0.1", "--port", "0",
            "--load_fast", "false", "--reload_interval", str(self.reload_interval),
        ]
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
        self.url = self._wait_ready(log_path)
        return self.url

    def _wait_ready(self, log_path: Path) -> str:
        deadline = time.monotonic() + self.start_timeout
        url = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            returncode = self._proc.poll()
            if returncode is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                self._proc = None
                raise TensorBoardError(f"tensorboard exited with code {returncode} before serving: {tail}; "
                                       "check that `tensorboard` is installed in this environment")
            if url is None:
                match = _READY_LINE.search(log_path.read_text(errors="replace"))
                url = match.group(1) if match else None
            if url is not None and _get_json(url + "data/environment") is not None:
                return url
            time.sleep(0.1)
        self._stop()
        raise TensorBoardError(f"tensorboard did not answer within {self.start_timeout:.0f} s; see {log_path}")

    def add_run(self, name: str, tensorboard_dir: Path) -> str:
        """Show `tensorboard_dir` as run `name` (sanitised; returned). Idempotent for the same target."""
        name = _RUN_NAME.sub("_", name).strip("._") or "run"
        target = Path(tensorboard_dir).resolve()
        with self._lock:
            base, suffix = name, 2
            while name in self._runs and self._runs[name] != target:
                name, suffix = f"{base}_{suffix}", suffix + 1
            if name not in self._runs:
                self._runs[name] = target
                if self._workdir is not None:
                    (self.logdir / name).symlink_to(target, target_is_directory=True)
        return name

    def tags(self, plugin: str = "scalars") -> dict[str, list[str]]:
        """run → tags, as the running server sees them now (`plugin`: scalars | histograms)."""
        data = _get_json(f"{self.start()}data/plugin/{plugin}/tags") or {}
        return {run: sorted(tags) for run, tags in data.items()}

    def wait_for_tags(self, runs: list[str], plugin: str, timeout: float = 30.0) -> dict[str, list[str]]:
        """Wait until TensorBoard has loaded every run in `runs` with at least one `plugin` tag."""
        deadline = time.monotonic() + timeout
        seen: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            seen = self.tags(plugin)
            if all(seen.get(run) for run in runs):
                return {run: seen[run] for run in runs}
            time.sleep(0.2)
        missing = [run for run in runs if not seen.get(run)]
        raise TensorBoardError(
            f"TensorBoard shows no {plugin} for run(s) {', '.join(missing)} after {timeout:.0f} s; the job has "
            "probably not logged its first step yet; try again once get_job reports a step > 0"
        )

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its link folder."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        proc, self._proc, self.url = self._proc, None, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> TensorBoardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None
