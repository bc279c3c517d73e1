"""Memory, placement, time and cost of the run `start_finetune` would queue.

The placement is the job manager's own placer (`place_job`: the memory estimate of `jobs.vram`,
the routing rule, DDP spreading), so the preview says what the job would get. On RunPod the GPU
type is the one the launch would try first: the cheapest type with enough memory, read from
RunPod's API (read-only queries; without an answer the type is left open, and said so). Time comes
from `throughput`; cost is RunPod's hourly price × that time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from finetune_mcp.config import EnhancedTrainingConfig, Settings
from finetune_mcp.errors import FinetuneError
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.router import detect_local_gpus, estimate_for, place_job
from finetune_mcp.jobs.vram import load_model_info
from finetune_mcp.preview.report import Estimate
from finetune_mcp.preview.throughput import step_seconds

log = logging.getLogger(__name__)
EVAL_COST = 1 / 3  # a forward pass without backward: about a third of a training step's time per token


@dataclass
class Where:
    """The placement (or why there is none) and the GPU it names."""

    target: str
    placement: Placement | None
    refused: str | None = None
    gpu: str | None = None
    gpu_count: int = 1
    price_per_hr: float | None = None

    @property
    def devices(self) -> int:
        """Processes that share the data (DDP ranks)."""
        return self.gpu_count if self.placement is not None and self.placement.device != "cpu" else 1


def place(config: EnhancedTrainingConfig, target: str, settings: Settings) -> Where:
    """Where `start_finetune` would put the run; a refusal is reported, not raised."""
    try:
        placement = place_job(config, target, settings)
    except FinetuneError as exc:
        return Where(target, None, refused=str(exc))
    details = placement.details
    if placement.backend == "runpod":
        count = int(details.get("gpu_count") or 1)
        choice = _runpod_choice(float(details.get("required_gb") or 0), settings)
        if choice is None:
            return Where(target, placement, gpu_count=count)
        price = round(choice.price_per_hr * count, 4) if choice.price_per_hr is not None else None
        return Where(target, placement, gpu=choice.display_name, gpu_count=count, price_per_hr=price)
    if placement.device != "cuda":
        return Where(target, placement)
    indices = details.get("gpu_indices") or [placement.gpu_index]
    names = {g.index: g.name for g in detect_local_gpus()}
    return Where(target, placement, gpu=names.get(placement.gpu_index), gpu_count=len(indices))


def estimate_run(config: EnhancedTrainingConfig, where: Where, *, tokens_per_step: int, total_steps: int,
                 eval_tokens: int, evaluations: int) -> Estimate:
    """The memory, time and cost of the run placed at `where`."""
    if where.placement is None:
        return _refused(config, where)
    placement, details = where.placement, where.placement.details
    device = "cpu" if placement.device == "cpu" else "cuda"
    shape = load_model_info(config.model).shape
    step = step_seconds(shape, config.method, tokens_per_step, device, where.gpu, config.enable_entropy_weighting)
    total = cost = None
    if step is not None:
        per_token = step.seconds / tokens_per_step if tokens_per_step else 0.0
        total = total_steps * step.seconds + evaluations * eval_tokens * per_token * EVAL_COST
        basis = step.basis + (f"; plus {evaluations} evaluation(s) of {eval_tokens:,} validation tokens at a third "
                              "of the training cost per token" if evaluations and eval_tokens else "")
        if where.price_per_hr is not None:
            cost = round(where.price_per_hr * total / 3600, 2)
            basis += f"; cost = ${where.price_per_hr:g}/h × the training time (pod start-up is billed too)"
    elif placement.backend == "runpod" and where.gpu is None:
        basis = "the RunPod GPU type is chosen at launch (RunPod's API did not answer now), so no time is estimated"
    else:
        basis = (f"no measured or datasheet speed for {where.gpu or placement.device} in preview/throughput.json, "
                 "so no time is estimated")
    return Estimate(
        target=where.target, backend=placement.backend, device=placement.device, gpu=where.gpu,
        gpu_count=where.gpu_count, reason=placement.reason, memory_gb=details.get("required_gb"),
        memory_breakdown_gb=dict(details.get("estimate_gb") or {}), params=details.get("params"),
        seconds_per_step=round(step.seconds, 3) if step else None,
        total_seconds=round(total, 1) if total is not None else None, price_per_hr=where.price_per_hr,
        cost_usd=cost, basis=basis,
    )


def _runpod_choice(required_gb: float, settings: Settings):
    """The GPU type the launch would try first, or None when RunPod cannot be asked now."""
    from finetune_mcp.jobs.backends.runpod.api import RunPodAPI, RunPodSettings

    try:
        choices = RunPodAPI(settings.runpod_api_key or "", RunPodSettings.from_env()).choose_gpu(required_gb)
    except FinetuneError as exc:
        log.info("RunPod GPU types unavailable for the preview: %s", exc)
        return None
    return choices[0] if choices else None


def _refused(config: EnhancedTrainingConfig, where: Where) -> Estimate:
    """No placement: still the memory the run needs (when the config can be read), and why not."""
    memory = params = None
    breakdown: dict[str, float] = {}
    try:
        found = estimate_for(config.model, load_in_4bit=config.load_in_4bit, lora_r=config.lora_r,
                             target_modules=config.target_modules, max_seq_length=config.max_seq_length,
                             batch_size=config.per_device_train_batch_size,
                             gradient_checkpointing=config.gradient_checkpointing, optim=config.resolved_optim)
        memory, breakdown, params = found.total_gb, found.breakdown_gb, found.params
    except FinetuneError:
        pass
    return Estimate(target=where.target, backend=None, device=None, gpu=None, reason="not placed",
                    refused=where.refused, memory_gb=memory, memory_breakdown_gb=breakdown, params=params,
                    seconds_per_step=None, total_seconds=None, basis="the run cannot be placed, so no time is estimated")
