"""The MCP tools, one module per area. Each tool is a module-level function marked with FastMCP's
standalone `@tool` decorator; each module lists its tools in `TOOLS`, and `server.app.create_app`
adds them (`mcp.add_tool`) in that order. Two helpers are not tool modules: `consent` (asking the
user before spending or publishing) and `spending` (a RunPod start's quote, consent and cap).

A tool is thin: validate its arguments (typed, with `Field` descriptions the agent reads), make one
call into `jobs/` or a capability package (`train/`, `report/`, ...), shape a typed result. It raises `FinetuneError`s as they come: the
server turns them into MCP tool errors in one place (`server.app.FinetuneErrorMiddleware`).

The job manager lives in the server's lifespan; a tool receives it as an injected parameter, which
FastMCP fills in and leaves out of the tool's schema, and a test passes by hand:

    from fastmcp.dependencies import Depends
    from fastmcp.tools import tool
    from finetune_mcp.tools import get_manager

    @tool
    async def my_tool(job_id: str, manager: JobManager = Depends(get_manager)) -> MyResult:
        run_dir = manager.run_dir(job_id)   # validates the id; JobError if unknown
        ...

    TOOLS = (my_tool,)

    await my_tool("ft-3f9a0c1b2d4e", manager=JobManager(settings))   # in a test: a plain call

`get_manager(ctx)` also accepts a `Context` (same object as `ctx.lifespan_context["manager"]`);
`client_capabilities(ctx)` says what the client declared (the roots and consent helpers ask only a
client that can answer). Everything here imports lazily: no torch at server start.
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
