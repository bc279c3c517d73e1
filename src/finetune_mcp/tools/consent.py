"""Asking the user before a tool spends money (a RunPod pod) or publishes (a Hub upload).

The agent calling a tool is not the user, so the tool asks the user directly, through MCP
elicitation, when the client supports it: a form with the terms (repo id, visibility and files;
GPU type, hourly price and the spending cap) and a yes/no. Both protocol eras are handled:

- handshake-era connections (≤ 2025-11-25): `ctx.elicit(...)` pauses the tool until the answer;
- 2026-07-28 connections have no server-to-client requests: the tool returns an
  `InputRequiredResult` holding the form, the client asks the user and calls the tool again with
  the answer (`ctx.input_responses`); the terms' digest travels in the sealed `request_state`, so an
  answer counts only for the terms that were shown.

A client without elicitation cannot show the form; the agent must then show the user the terms
itself and pass `confirm=true` once the user agreed. Without either, the tool fails with a
`ConsentError` that says so and lists the terms. The tool's result says what was agreed
(`ConsentRecord`), so the agent (and the user reading along) can check it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Literal

import mcp_types
from fastmcp import Context
from fastmcp.server.elicitation import get_elicitation_schema
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError

from finetune_mcp.errors import ConsentError
from finetune_mcp.tools import client_capabilities

log = logging.getLogger(__name__)

REQUEST_KEY = "finetune-mcp/consent"


class ConsentRecord(BaseModel):
    """What the user agreed to, and how."""

    how: Literal["elicitation", "confirm"] = Field(
        description="elicitation: the user answered the server's form; confirm: the caller passed confirm=true "
        "(the client cannot show forms).")
    summary: str = Field(description="The terms in words, as they were shown.")
    terms: dict[str, Any] = Field(description="The same terms as data (repo id, visibility, files / GPU, $/h, cap).")


def client_can_elicit(ctx: Context) -> bool:
    """Whether the connected client declared the elicitation capability (either protocol era)."""
    caps = client_capabilities(ctx)
    return caps is not None and caps.elicitation is not None


def _digest(terms: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(terms, sort_keys=True, default=str).encode()).hexdigest()[:32]


async def ask_consent(ctx: Context, *, action: str, summary: str, terms: dict[str, Any], form: type[BaseModel],
                      agree_field: str, confirm: bool) -> tuple[ConsentRecord, BaseModel | None] | \
        mcp_types.InputRequiredResult:
    """Ask the user to agree to `terms` (see the module docstring). Returns the record and the form
    as the user filled it (None with confirm=true), or an `InputRequiredResult` the tool must
    return as it is (2026-07-28: the client asks, then calls again). Raises ConsentError when the
    user declines, or when the client cannot ask and `confirm` is not set."""
    message = f"{summary}\n\nAgree by setting '{agree_field}'."
    if not client_can_elicit(ctx):
        if confirm:
            return ConsentRecord(how="confirm", summary=summary, terms=terms), None
        raise ConsentError(f"{action} needs the user's consent, and this MCP client cannot ask them (it does not "
                           f"support elicitation). Show the user these terms: {summary} — and only if they agree, "
                           "call the tool again with the same arguments and confirm=true")
    version = ctx.request_context.protocol_version if ctx.request_context is not None else None
    digest = _digest(terms)
    if version in MODERN_PROTOCOL_VERSIONS:
        responses = ctx.input_responses or {}
        answer = responses.get(REQUEST_KEY)
        if answer is None or ctx.request_state != digest:  # first round, or the terms changed since
            request = mcp_types.ElicitRequest(params=mcp_types.ElicitRequestFormParams(
                message=message, requested_schema=get_elicitation_schema(form)))
            return mcp_types.InputRequiredResult(input_requests={REQUEST_KEY: request}, request_state=digest)
        action_taken, content = getattr(answer, "action", None), getattr(answer, "content", None)
    else:
        try:
            result = await ctx.elicit(message, form)
        except ValidationError as exc:  # the client's answer does not fit the form
            raise ConsentError(f"the answer to the consent form for {action} is not valid "
                               f"({exc.errors()[0]['msg']}); nothing was done; try again") from None
        action_taken = result.action
        content = result.data.model_dump() if result.action == "accept" else None
    if action_taken != "accept":
        raise ConsentError(f"the user {'declined' if action_taken == 'decline' else 'dismissed'} {action}; nothing "
                           "was done. Ask the user what to change before trying again")
    try:
        filled = form.model_validate(content or {})
    except ValidationError as exc:
        raise ConsentError(f"the answer to the consent form for {action} is not valid ({exc.errors()[0]['msg']}); "
                           "nothing was done; try again") from None
    if not getattr(filled, agree_field):
        raise ConsentError(f"the user did not agree to {action}; nothing was done. Ask the user what to change")
    log.info("consent for %s given through elicitation: %s", action, summary)
    return ConsentRecord(how="elicitation", summary=summary, terms=terms), filled
