"""The real MCP server as a client starts it (`finetune-mcp serve` over stdio), for the benchmarks and
the stdio tests, and the loop that waits for one of its jobs to end (`job_ended`).

Its environment allows the caller's work folder (FINETUNE_MCP_ROOTS): the models and data a benchmark
builds live there, outside the server's home, and a server allows only its home and the folders it is
given. Every benchmark starting its own copy of this is how four of them once refused their own model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from fastmcp.client.transports import StdioTransport

SERVE_COMMAND = (sys.executable, "-m", "finetune_mcp.cli", "serve")


def server_env(home: Path, work: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a server on `home` that may read and write under `work`, offline."""
    return {**os.environ, "FINETUNE_MCP_HOME": str(home), "FINETUNE_MCP_ROOTS": str(work), "HF_HUB_OFFLINE": "1",
            **extra}


def stdio_server(home: Path, work: Path, *, log_file: Path | None = None, **extra: str) -> StdioTransport:
    """A transport that starts a fresh server (see `server_env`) for one client session."""
    return StdioTransport(SERVE_COMMAND[0], list(SERVE_COMMAND[1:]), env=server_env(home, work, **extra),
                          keep_alive=False, log_file=log_file)


ACTIVE_STATES = ("queued", "provisioning", "running")


async def job_ended(client: Any, job_id: str, budget_s: float = 600) -> dict[str, Any]:
    """`wait_for_job` until the job ends, each call (60 s) shorter than a client's request timeout; the
    job's view. TimeoutError after `budget_s` — the one loop every stdio test and benchmark waits with."""
    import anyio

    with anyio.fail_after(budget_s):
        while (job := (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 60})
                       ).structured_content)["state"] in ACTIVE_STATES:
            pass
    return job
