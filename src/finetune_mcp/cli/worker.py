"""`finetune-mcp worker run|serve`: one job in this process (the job manager and RunPod pods start it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetune_mcp.cli.app import friendly_errors, worker_app


@worker_app.command("run")
def worker_run(spec: Annotated[Path, typer.Argument(help="spec.json inside the job's run directory.")]) -> None:
    """Run the job described by SPEC; its run directory is SPEC's folder. Exit 0 on success, 1 on failure."""
    from finetune_mcp.kinds import worker_main

    raise typer.Exit(worker_main(spec))


@worker_app.command("serve")
@friendly_errors
def worker_serve(
    port: Annotated[int, typer.Option(envvar="FINETUNE_MCP_WORKER_PORT",
                                      help="Port (RunPod exposes it as https://{pod_id}-{port}.proxy.runpod.net).")] = 8000,
    host: Annotated[str, typer.Option(envvar="FINETUNE_MCP_WORKER_HOST", help="Interface to bind.")] = "0.0.0.0",
    workdir: Annotated[Path, typer.Option(envvar="FINETUNE_MCP_WORKER_DIR",
                                          help="Where inputs and the run directory go.")] = Path("/workspace/finetune-mcp"),
    idle_timeout: Annotated[float, typer.Option(
        envvar="FINETUNE_MCP_WORKER_IDLE_TIMEOUT_S",
        help="Seconds without a request from the manager (and no training running) before the pod terminates itself.",
    )] = 900.0,
) -> None:
    """Serve one job over HTTP (RunPod pods run this); needs FINETUNE_MCP_WORKER_TOKEN in the environment."""
    from finetune_mcp.jobs.backends.runpod.pod_server import serve

    serve(host, port, workdir, idle_timeout)
