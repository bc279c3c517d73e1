"""Jobs that rent machines: show the user what a RunPod pod costs, get their consent, set the cap.

`start_finetune` plans the job first (checks + placement, nothing queued: `kinds.plan_job`). A job
placed on this machine starts as before. A job placed on RunPod costs money from the moment its
pod exists, so before it is queued the tool asks the RunPod API which GPU type it would rent and at
what price (`runpod.backend.quote`), and asks the user (`tools.consent`): GPU type and count, $/h,
and the spending cap, which the user may change in the form. The agreed terms go into the job's
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
from finetune_mcp.jobs.placement import Placement
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


def _terms(quote: Any, cap: float | None) -> tuple[str, dict[str, Any]]:
    runtime_h = quote.max_runtime_s / 3600.0
    limit = (f"spending cap ${cap:.2f}: the pod is stopped and the job fails when its cost reaches it" if cap is not None
             else f"no spending cap: the pod runs until the job ends, at most {runtime_h:g} h "
                  f"(FINETUNE_MCP_RUNPOD_MAX_RUNTIME_S), i.e. up to ${quote.worst_case_usd:.2f}")
    summary = (f"Rent a RunPod pod for this job: {quote.gpu_count}× {quote.gpu_name} ({quote.gpu_type_id}, cloud "
               f"{quote.cloud_type}) at ${quote.price_per_hr:.2f}/h, billed from the pod's creation (image pull and "
               f"install included) until it is terminated; {limit}.")
    terms = {"provider": "runpod", "gpu_type_id": quote.gpu_type_id, "gpu_name": quote.gpu_name,
             "gpu_count": quote.gpu_count, "price_per_hr": quote.price_per_hr, "cloud_type": quote.cloud_type,
             "max_cost_usd": cap, "max_runtime_h": runtime_h}
    return summary, terms


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
    if placement.backend != "runpod":
        return await kinds.start_planned(manager, checked, target, placement), None
    from finetune_mcp.jobs.backends.runpod.backend import quote as quote_pod

    quote = await anyio.to_thread.run_sync(quote_pod, placement, manager.settings)
    cap = max_cost_usd if max_cost_usd is not None else quote.default_cap_usd
    summary, terms = _terms(quote, cap)
    agreed = await ask_consent(ctx, action=f"renting a RunPod {quote.gpu_name} at ${quote.price_per_hr:.2f}/h",
                               summary=summary, terms=terms, form=_form(cap or quote.worst_case_usd),
                               agree_field="start", confirm=confirm)
    if isinstance(agreed, mcp_types.InputRequiredResult):
        return ask_again(ctx, agreed)  # the retry must carry the roots as well as the answer
    record, filled = agreed
    if filled is not None and filled.max_cost_usd != cap:  # the user set the cap in the form
        cap = float(filled.max_cost_usd)
        summary, terms = _terms(quote, cap)
        record = ConsentRecord(how=record.how, summary=summary, terms=terms)
    details = {**placement.details, "max_price_per_hr": quote.price_per_hr, "consent": record.how,
               **({"max_cost_usd": cap} if cap is not None else {})}
    planned = Placement(placement.backend, placement.device, placement.gpu_index, placement.reason, details,
                        placement.env)
    return await kinds.start_planned(manager, checked, target, planned), record
