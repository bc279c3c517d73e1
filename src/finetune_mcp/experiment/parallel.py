"""Experiments in parallel (`start_experiment(parallel=N | "auto")`): the runs are dealt out to
workers, each an ordinary experiment job of its own that trains its share (`only_runs`) one run after
another, keeping its base model loaded — one per free local GPU, per RunPod pod, or per CPU slot —
and a gathering job (`experiment.gather`) that builds the one table from what they report.

Why jobs and not threads in one worker: every share then gets what a job already has — its own
slot, process group or pod, cancel, re-attach after a restart, and for pods the spending cap and
the guarantee that the pod is terminated in every ending — without a second lifecycle to get right.
The job manager cancels the shares when the gathering job ends (`Placement.details["child_jobs"]`).

On a GPU with room for several runs of a small model, up to MAX_WORKERS_PER_GPU workers share it
(`workers_per_gpu`): each holds 1/k of the GPU's queue slot (`gpu:<i>/k`), so a single job still
waits for the GPU to be free of them, and they for it.

Runs are dealt round-robin in plan order (seed by seed, every arm of a seed), so shares are even;
where a run trains changes neither its seed nor its data: its config is `spec.run_config(arm, seed)`
in every share, the held-out split is fixed by `split_seed`, and every run starts from
`reset_lora(model, seed)` whether its worker loaded the model for it or kept it from a run before.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import Settings
from finetune_mcp.experiment.spec import ExperimentSpec
from finetune_mcp.jobs.placement import COORDINATOR_SLOT, SHARES, GpuInfo, Placement

if TYPE_CHECKING:
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.jobs.store import Job


def deal(names: list[str], workers: int) -> list[list[str]]:
    """Round-robin: worker k trains names[k], names[k + workers], ..."""
    return [names[k::workers] for k in range(workers)]


MAX_WORKERS_PER_GPU = 8


def workers_per_gpu(asked: int, gpus: list[GpuInfo], need_gb: float) -> int:
    """How many workers share each GPU: more than one only when there are more workers asked than
    GPUs and every GPU holds that many runs (`need_gb` each, with 10 % to spare). Why pack at all: a
    small model's step is bound by the host launching kernels (SmolLM2-135M: the GPU is busy a few %
    of a step), so workers on one GPU run their steps side by side instead of one after another."""
    if not gpus or asked <= len(gpus) or need_gb <= 0:
        return 1
    fits = min(int(g.free_gb // (need_gb * 1.1)) for g in gpus)
    return max(1, min(MAX_WORKERS_PER_GPU, fits, -(-asked // len(gpus))))


def _gpu_workers(one: Placement, gpus: list[GpuInfo], asked: int, need_gb: float) -> tuple[list[Placement], str]:
    """One placement per worker, spread over the GPUs first (worker k on GPU k mod n)."""
    per_gpu = workers_per_gpu(asked, gpus, need_gb)
    details = {**one.details, "gpu_share": per_gpu} if per_gpu > 1 else one.details
    where = [replace(one, gpu_index=g.index, details=details,
                     reason=f"GPU {g.index} ({g.name})" + (f", 1 of {per_gpu} workers on it" if per_gpu > 1 else ""))
             for _ in range(per_gpu) for g in gpus][:asked]
    plural = "s" if len(gpus) > 1 else ""
    if per_gpu > 1:
        return where, (f"{len(where)} workers on {len(gpus)} local GPU{plural}, up to {per_gpu} per GPU (a run needs "
                       f"~{need_gb:.1f} GB; a small model's step leaves the GPU idle between kernel launches)")
    return where, f"{len(where)} local GPU{plural} that fit a run, one worker each"


def place_parallel(spec: ExperimentSpec, target: str, settings: Settings, *, cpu_slots: int,
                   remote_slots: int) -> Placement | None:
    """The gathering job's placement, its shares in `details["shares"]`; None when the runs go one
    after another in one worker (parallel=1 on this machine, or only one worker free)."""
    from finetune_mcp.jobs.router import detect_local_gpus, place_job

    names = [spec.run_label(arm, seed) for seed, arm in spec.plan]
    asked = len(names) if spec.parallel == "auto" else min(int(spec.parallel), len(names))
    config = spec.run_config(spec.arms[0], spec.seeds[0])
    if target == "runpod":
        one = place_job(config, "runpod", settings)
        workers = min(asked, remote_slots) if spec.parallel == "auto" else asked
        where = [one] * workers
        why = f"{workers} RunPod pod{'s' if workers > 1 else ''}, one worker each"
    else:
        if spec.parallel == 1:
            return None
        one = place_job(config, "local", settings)
        if one.device == "cuda":
            need = float(one.details.get("required_gb") or 0.0)
            gpus = sorted((g for g in detect_local_gpus() if g.index == one.gpu_index or g.free_gb >= need),
                          key=lambda g: (g.index != one.gpu_index, -g.free_gb))[:asked]
            where, why = _gpu_workers(one, gpus, asked, need)
        else:
            where = [one] * min(asked, cpu_slots)
            why = (f"{len(where)} CPU slot{'s' if len(where) > 1 else ''} (FINETUNE_MCP_MAX_CPU_JOBS="
                   f"{cpu_slots}), one worker each")
        if len(where) <= 1:
            return None
    shares = [{"runs": runs, "placement": p.to_json()} for runs, p in zip(deal(names, len(where)), where, strict=True)]
    reason = (f"experiment of {len(spec.arms)} arms × {len(spec.seeds)} seeds ({len(names)} runs) in parallel over "
              f"{why} (each keeps its base model loaded for its runs): {one.reason}")
    return Placement("local", "cpu", None, reason, {"slot": COORDINATOR_SLOT, SHARES: shares}, one.env)


async def queue_parallel(manager: JobManager, spec: ExperimentSpec, target: str, placement: Placement) -> Job:
    """Queue one job per share (each on its own placement, with what the user agreed to), then the
    gathering job that names them; nothing is left queued if any of it fails."""
    from finetune_mcp.errors import JobError

    shares: list[dict[str, Any]] = placement.details[SHARES]
    started: list[Job] = []
    try:
        for share in shares:
            share_spec = spec.model_copy(update={"only_runs": share["runs"], "parallel": 1, "run_dir": None})
            where = Placement.from_json(share["placement"])
            started.append(await manager.start(share_spec, target, preflight=lambda s, _settings: s,
                                               placer=lambda s, _t, _settings, where=where: where))
        gather = spec.model_copy(update={"shards": [
            {"job_id": job.id, "run_dir": job.run_dir, "runs": share["runs"]}
            for job, share in zip(started, shares, strict=True)]})
        details = {k: v for k, v in placement.details.items() if k != SHARES}
        coordinator = replace(placement, details={**details, "child_jobs": [job.id for job in started]})
        return await manager.start(gather, target, preflight=lambda s, _settings: s,
                                   placer=lambda s, _t, _settings: coordinator)
    except BaseException:
        for job in started:
            with contextlib.suppress(JobError):
                await manager.cancel(job.id, "the parallel experiment could not be queued")
        raise
