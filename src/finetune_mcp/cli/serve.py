"""`finetune-mcp serve`: the MCP server over stdio or streamable HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from finetune_mcp.cli.app import app, friendly_errors


@app.command()
@friendly_errors
def serve(
    transport: Annotated[str, typer.Option(help="stdio (Claude Code / Desktop) or http (streamable HTTP).")] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port.")] = 8765,
    path: Annotated[str, typer.Option(help="HTTP: endpoint path.")] = "/mcp",
    log_level: Annotated[str, typer.Option(help="DEBUG | INFO | WARNING (logs go to stderr).")] = "INFO",
) -> None:
    """Run the MCP server. HTTP needs FINETUNE_MCP_TOKEN (clients send it as a bearer token)."""
    from finetune_mcp.server.app import serve as run_server

    run_server(transport, host, port, path, log_level)
