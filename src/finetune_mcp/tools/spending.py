"""Jobs that rent machines: show the user what a RunPod pod costs, get their consent, set the cap.

`start_finetune` plans the job first (checks + placement, nothing queued: `kinds.plan_job`). A job
placed on this machine starts as before. A job placed on RunPod costs money from the moment its
pod exists, so before it is queued the tool asks the RunPod API which GPU type it would rent and at
what price (`jobs.backends.quote`), and asks the user (`tools.consent`): GPU type and count, $/h,
and the spending cap, which the user may change in the form. A placement that rents several machines
(a parallel experiment's pods, an Instant Cluster's nodes) is quoted and agreed to once, as a whole,
before the first one starts; each pod's cap is its equal share of the whole. The agreed terms go into the job's
placement (`max_price_per_hr`, `max_cost_usd`), where the RunPod backend enforces them: no pricier
GPU type is rented, and the pod is stopped when the cap is reached.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types
from fastmcp import Context
from pydantic import BaseModel, Field, create_model

from finetune_mcp import kinds
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.placement import SHARES, Placement
from finetune_mcp.jobs.store import Job
from finetune_mcp.tools.consent import ConsentRecord, ask_consent
from finetune_mcp.tools.roots import allowed_roots, ask_again


def _form(default_cap: float) -> type[BaseModel]:
    """The consent form for one pod: yes/no, and the cap, pre-filled."""
    return create_model(
        "StartRunPodJob",
        start=(bool, Field(title="Start the pod", description="Rent this GPU and start the job now?")),
        max_cost_usd=(float, Field(default_cap, ge=0.01, title="Spending cap (USD)",
                                   description="The pod is stopped and the job fails when its cost reaches this.")),
    )


def _terms(quote: Any, cap: float | None, machines: int = 1) -> tuple[str, dict[str, Any]]:
    """The consent text for `machines` rentals like `quote` (a parallel experiment's pods), `cap` over all."""
    runtime_h = quote.max_runtime_s / 3600.0
    nodes = getattr(quote, "nodes", 1)
    what = (f"a RunPod Instant Cluster of {nodes} nodes × {quote.gpu_count}× {quote.gpu_name}" if nodes > 1 else
            f"{machines} RunPod pods, each {quote.gpu_count}× {quote.gpu_name}" if machines > 1 else
            f"a RunPod pod for this job: {quote.gpu_count}× {quote.gpu_name}")
    gone = "they are" if machines > 1 or nodes > 1 else "it is"
    total = quote.price_per_hr * machines
    limit = (f"spending cap ${cap:.2f} in all: the machines are stopped and the job fails when the cost reaches it"
             if cap is not None else f"no spending cap: billed until the job ends, at most {runtime_h:g} h "
             f"(FINETUNE_MCP_RUNPOD_MAX_RUNTIME_S), i.e. up to ${quote.worst_case_usd * machines:.2f}")
    summary = (f"Rent {what} ({quote.gpu_type_id}, cloud {quote.cloud_type}) at ${total:.2f}/h in all, billed from "
               f"creation (image pull and install included) until {gone} terminated; {limit}.")
    terms = {"provider": "runpod", "gpu_type_id": quote.gpu_type_id, "gpu_name": quote.gpu_name,
             "gpu_count": quote.gpu_count, "price_per_hr": round(total, 4), "cloud_type": quote.cloud_type,
             "max_cost_usd": cap, "max_runtime_h": runtime_h, "machines": machines, "nodes": nodes}
    return summary, terms


def _rented(placement: Placement) -> list[Placement]:
    """The placements of `placement` that rent machines: itself, or the shares it spreads over."""
    from finetune_mcp.jobs.backends import rents_machines

    shares = [Placement.from_json(s["placement"]) for s in placement.details.get(SHARES) or []]
    return [p for p in shares or [placement] if rents_machines(p.backend)]


def _agreed(placement: Placement, agreed: dict[str, Any]) -> Placement:
    """`placement` carrying what the user agreed to, on itself or on each share that rents."""
    from finetune_mcp.jobs.backends import rents_machines

    def add(p: Placement) -> Placement:
        return Placement(p.backend, p.device, p.gpu_index, p.reason, {**p.details, **agreed}, p.env)

    if not placement.details.get(SHARES):
        return add(placement)
    shares = [{**s, "placement": add(p).to_json() if rents_machines(p.backend) else s["placement"]}
              for s in placement.details[SHARES] for p in [Placement.from_json(s["placement"])]]
    return Placement(placement.backend, placement.device, placement.gpu_index, placement.reason,
                     {**placement.details, SHARES: shares}, placement.env)


async def start_with_consent(ctx: Context, manager: JobManager, kind: str, spec: Any, target: str, *,
                             confirm: bool, max_cost_usd: float | None
                             ) -> tuple[Job, ConsentRecord | None] | mcp_types.InputRequiredResult:
    """Plan the job; on RunPod, ask the user first (see the module docstring). Returns the queued job
    and what was agreed (None for a local job), or the InputRequiredResult the tool must return.
    Every path of the spec must lie in the client's allowed roots (`tools.roots`)."""
    roots = await allowed_roots(ctx)
    if isinstance(roots, mcp_types.InputRequiredResult):
        return roots
    checked, placement = await kinds.plan_job(manager, kind, spec, target, roots=roots)
    rented = _rented(placement)
    if not rented:
        return await kinds.start_planned(manager, checked, target, placement), None
    from finetune_mcp.jobs.backends import quote as quote_rental

    quote = await anyio.to_thread.run_sync(quote_rental, rented[0], manager.settings)
    machines = len(rented)  # one quote covers them all, before the first one starts
    cap = max_cost_usd if max_cost_usd is not None else quote.default_cap_usd
    summary, terms = _terms(quote, cap, machines)
    agreed = await ask_consent(ctx, action=f"renting RunPod {quote.gpu_name} at ${quote.price_per_hr * machines:.2f}/h",
                               summary=summary, terms=terms, form=_form(cap or quote.worst_case_usd * machines),
                               agree_field="start", confirm=confirm)
    if isinstance(agreed, mcp_types.InputRequiredResult):
        return ask_again(ctx, agreed)  # the retry must carry the roots as well as the answer
    record, filled = agreed
    if filled is not None and filled.max_cost_usd != cap:  # the user set the cap in the form
        cap = float(filled.max_cost_usd)
        summary, terms = _terms(quote, cap, machines)
        record = ConsentRecord(how=record.how, summary=summary, terms=terms)
    agreed_terms = {"max_price_per_hr": quote.price_per_hr, "consent": record.how,  # each machine: an equal share
                    **({"max_cost_usd": round(cap / machines, 4)} if cap is not None else {})}
    return await kinds.start_planned(manager, checked, target, _agreed(placement, agreed_terms)), record
