"""The allowed roots of the client calling a tool (`config.roots` says why and which).

A client's own roots come with the request in either protocol era: on handshake-era connections
(≤ 2025-11-25) the server asks with `roots/list`; 2026-07-28 connections have no server-to-client
requests, so the tool returns an `InputRequiredResult` holding the request and the client calls
again with its roots (`ctx.input_responses`). A client that does not declare the roots capability
is not asked. A tool that takes paths starts with:

    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # 2026-07-28: the client answers with its roots, then calls again
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import mcp_types
from fastmcp import Context
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from finetune_mcp.config.roots import AllowedRoots
from finetune_mcp.tools import client_capabilities, get_manager

log = logging.getLogger(__name__)

REQUEST_KEY = "finetune-mcp/roots"


async def allowed_roots(ctx: Context) -> AllowedRoots | mcp_types.InputRequiredResult:
    """The folders this client may reach (`config.roots`: the operator's roots, which the client's
    own can only narrow, save over stdio without FINETUNE_MCP_ROOTS); or the request for its roots."""
    declared = await _client_roots(ctx)
    if isinstance(declared, mcp_types.InputRequiredResult):
        return declared
    return AllowedRoots.for_client(get_manager(ctx).settings.home, declared, local=ctx.transport == "stdio")


def ask_again(ctx: Context, result: mcp_types.InputRequiredResult) -> mcp_types.InputRequiredResult:
    """`result` (another question for the client, e.g. consent) with the roots request beside it: a
    2026-07-28 retry carries only the latest round's answers, and the next call needs the roots too."""
    if _declares_roots(ctx):
        result.input_requests = {**(result.input_requests or {}), REQUEST_KEY: mcp_types.ListRootsRequest()}
    return result


def _declares_roots(ctx: Context) -> bool:
    caps = client_capabilities(ctx)
    return caps is not None and caps.roots is not None


async def _client_roots(ctx: Context) -> list[Path] | mcp_types.InputRequiredResult | None:
    """The client's file roots as folders; None when it declares none or cannot list them."""
    if not _declares_roots(ctx):
        return None
    version = ctx.request_context.protocol_version if ctx.request_context is not None else None
    if version in MODERN_PROTOCOL_VERSIONS:
        answer = (ctx.input_responses or {}).get(REQUEST_KEY)
        if not isinstance(answer, mcp_types.ListRootsResult):
            return mcp_types.InputRequiredResult(input_requests={REQUEST_KEY: mcp_types.ListRootsRequest()},
                                                 request_state=ctx.request_state)
        roots = answer.roots
    else:
        try:
            with warnings.catch_warnings(action="ignore", category=MCPDeprecationWarning):
                roots = (await ctx.session.list_roots()).roots
        except Exception as exc:  # declared roots but cannot list them: as if it had none
            log.info("the client declared roots but listing them failed: %s", exc)
            return None
    folders = [Path(url2pathname(unquote(urlparse(str(root.uri)).path))) for root in roots
               if str(root.uri).startswith("file://")]
    return folders or None
