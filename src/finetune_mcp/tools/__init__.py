"""The MCP tools, one module per area. Each module exposes `register(mcp: FastMCP) -> None`.
Two helpers are not tool modules: `consent` (asking the user before spending or publishing) and
`spending` (a RunPod start's quote, consent and cap).

A tool is thin: validate its arguments (typed, with `Field` descriptions the agent reads), make one
call into `jobs/` or a capability package (`train/`, `report/`, ...), shape a typed result. It raises `FinetuneError`s as they come: the
server turns them into MCP tool errors in one place (`server.app.FinetuneErrorMiddleware`).

The job manager lives in the server's lifespan; a tool reaches it with `get_manager()`:

    from finetune_mcp.tools import get_manager

    @mcp.tool
    async def my_tool(job_id: str) -> MyResult:
        run_dir = get_manager().run_dir(job_id)   # validates the id; JobError if unknown
        ...

`get_manager(ctx)` also accepts the tool's `Context` when it has one (same object as
`ctx.lifespan_context["manager"]`); `client_capabilities(ctx)` says what the client declared (the
roots and consent helpers ask only a client that can answer). Everything here imports lazily: no
torch at server start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmcp import Context
    from mcp_types import ClientCapabilities

    from finetune_mcp.jobs.manager import JobManager

MANAGER_KEY = "manager"


def get_manager(ctx: Context | None = None) -> JobManager:
    """The server's JobManager, from the current request's lifespan context."""
    if ctx is None:
        from fastmcp.server.dependencies import get_context

        ctx = get_context()
    return ctx.lifespan_context[MANAGER_KEY]


def client_capabilities(ctx: Context) -> ClientCapabilities | None:
    """What the connected client declared (roots, elicitation, ...); None outside a client request."""
    try:
        return ctx.session.client_capabilities
    except RuntimeError:  # no session: called outside a client request
        return None
