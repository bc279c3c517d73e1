"""Fixtures for the server tests: the real `finetune-mcp serve` over stdio, driven by a real MCP
client (fastmcp.Client), on a temporary FINETUNE_MCP_HOME, with the offline tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from finetune_mcp.jobs.backends.local import process_group_alive
from finetune_mcp.jobs.store import JobStore

TEE = Path(__file__).with_name("stdout_tee.py")
SECRET = "hf_TESTSECRETdoNotLeak0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_server_process(env: dict[str, str], log: Path, cwd: Path | None = None) -> Iterator[str]:
    """A real `finetune-mcp serve --transport http` on a free port with `env`: yields its MCP URL once
    it accepts connections, stops it after. Its stderr goes to `log` (a pipe nobody reads could fill
    and stall it), quoted when it fails to start."""
    port = free_port()
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "finetune_mcp.cli", "serve", "--transport", "http", "--port",
                                 str(port)], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the HTTP server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Path:
    """The session's offline tiny model (tests/conftest.py), under this folder's usual name."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune_mcp.testing.datagen import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl", "messages", n=32)


class ServerHome:
    """One FINETUNE_MCP_HOME; `client()` starts a fresh server process on it (a restart is a new client)."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.home = root / "home"
        self.stdout_copy = root / "server-stdout.jsonl"
        self.stderr_log = root / "server-stderr.log"
        self.env = {
            **os.environ, "FINETUNE_MCP_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "HF_TOKEN": SECRET,
            "FINETUNE_MCP_CANCEL_GRACE_S": "5", **env,
        }

    def client(self, *, roots: list[str] | None = None, mode: str = "auto", cwd: str | None = None,
               elicitation_handler: Callable | None = None, **env: str) -> Client:
        """A client of a fresh server; `roots`: the MCP roots it declares (file:// URIs), `mode`: the
        protocol era (auto: 2026-07-28, legacy: 2025-11-25), `cwd`: the server's working directory,
        `elicitation_handler`: the user answering forms (the client then declares elicitation)."""
        transport = StdioTransport(
            sys.executable,
            [str(TEE), str(self.stdout_copy), "--", sys.executable, "-m", "finetune_mcp.cli", "serve"],
            env={**self.env, **env}, keep_alive=False, log_file=self.stderr_log, cwd=cwd,
        )
        return Client(transport, timeout=120, roots=roots, mode=mode,  # type: ignore[arg-type]
                      elicitation_handler=elicitation_handler)

    def stdout_messages(self) -> list[dict]:
        """Everything the servers wrote to stdout, each line parsed: a stray print fails here."""
        lines = self.stdout_copy.read_text().splitlines() if self.stdout_copy.exists() else []
        messages = [json.loads(line) for line in lines]
        assert all(m.get("jsonrpc") == "2.0" for m in messages), "non-protocol output on stdout"
        return messages

    def store(self) -> JobStore:
        return JobStore(self.home / "jobs.db")


@pytest.fixture
def server_home(tmp_path: Path) -> Iterator[Callable[..., ServerHome]]:
    made: list[ServerHome] = []

    def make(**env: str) -> ServerHome:
        made.append(ServerHome(tmp_path, **env))
        return made[-1]

    yield make
    for server in made:  # no test leaves a worker training in the background
        if (server.home / "jobs.db").exists():
            store = server.store()
            for job in store.list(limit=1000):
                if job.pgid and process_group_alive(job.pgid):
                    os.killpg(job.pgid, signal.SIGKILL)
            store.close()
