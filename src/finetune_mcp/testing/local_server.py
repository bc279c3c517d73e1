"""The real MCP server as a client starts it (`finetune-mcp serve` over stdio), for the benchmarks.

Its environment allows the caller's work folder (FINETUNE_MCP_ROOTS): the models and data a benchmark
builds live there, outside the server's home, and a server allows only its home and the folders it is
given. Every benchmark starting its own copy of this is how four of them once refused their own model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
