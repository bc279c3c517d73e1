"""Where a run goes: the local GPUs (NVML), the memory it needs (`jobs.vram`), and the decision.

The server process reads GPUs through NVML only — importing torch there would cost seconds and a
CUDA context. No NVML library, no driver or no GPU all mean "no local GPU": an empty list.

The rule for `target="auto"`, in order:
  1. a local CUDA GPU with at least FINETUNE_MCP_MIN_LOCAL_GPU_GB (default 24) total whose free
     memory holds the estimate → local;
  2. RUNPOD_API_KEY set → RunPod (the cheapest GPU type with enough memory, chosen at launch);
  3. a smaller local GPU whose free memory still holds the estimate → local;
  4. no usable GPU but a small run (estimate ≤ FINETUNE_MCP_MAX_CPU_GB, default 4) → the CPU
     (transformers + PEFT: fine for tiny models, tests and the demo; hours for anything real);
  5. otherwise an error saying what was found, what the run needs, and how to get it.
`target="local"` means local whatever the size: the biggest GPU when its total memory holds the
estimate, else the CPU when the machine's RAM holds it. `target="runpod"` needs the key.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from finetune_mcp.config import Settings, TrainingConfig
from finetune_mcp.config.methods import MemoryExtras
from finetune_mcp.config.optim import auto_optim
from finetune_mcp.errors import BackendError, FinetuneError
from finetune_mcp.jobs.multi_gpu import spread
from finetune_mcp.jobs.placement import GpuInfo, Placement
from finetune_mcp.jobs.vram import GB, MemoryEstimate, estimate_memory, load_model_info

Target = Literal["auto", "local", "runpod"]
DEFAULT_MIN_LOCAL_GPU_GB = 24.0
DEFAULT_MAX_CPU_GB = 4.0
DEFAULT_RUNPOD_MIN_GPU_GB = 24.0  # when no estimate could be made


@dataclass
class RoutingDecision:
    """Where the run goes (`target`), on what (`device`), how much memory it needs, and why."""

    target: Literal["local", "runpod"]
    device: Literal["cuda", "cpu", "runpod"]
    reason: str
    gpu_index: int | None = None
    required_gb: float | None = None
    estimate: MemoryEstimate | None = None
    gpus: list[GpuInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["estimate"] = self.estimate.to_dict() if self.estimate else None
        return data


def detect_local_gpus() -> list[GpuInfo]:
    """CUDA GPUs via NVML: name, total and free memory. Any NVML failure means none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(
                index=i,
                name=name.decode() if isinstance(name, bytes) else str(name),
                total_gb=round(mem.total / GB, 2),
                free_gb=round(mem.free / GB, 2),
            ))
        return gpus
    except pynvml.NVMLError:
        return []
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BackendError(f"{name}={raw!r} is not a number; set it to a size in GB, e.g. {default:g}") from None


def _system_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return 0.0


def estimate_for(
    model: str,
    *,
    load_in_4bit: bool = False,
    lora_r: int = 16,
    target_modules: list[str] | None = None,
    max_seq_length: int = 2048,
    batch_size: int = 2,
    gradient_checkpointing: bool = True,
    optim: str = "auto",
    extras: MemoryExtras | None = None,
) -> MemoryEstimate:
    """Read the model's config and estimate one run's memory (see `jobs.vram`)."""
    if optim == "auto":
        optim = auto_optim(load_in_4bit)
    return estimate_memory(
        load_model_info(model), load_in_4bit=load_in_4bit, lora_r=lora_r, target_modules=target_modules,
        max_seq_length=max_seq_length, batch_size=batch_size,
        gradient_checkpointing=gradient_checkpointing, optim=optim, extras=extras,
    )


def _describe(gpus: list[GpuInfo]) -> str:
    if not gpus:
        return "no CUDA GPU (NVML found none)"
    return ", ".join(f"GPU {g.index} {g.name} ({g.free_gb:.1f} of {g.total_gb:.1f} GB free)" for g in gpus)


def decide_target(
    requested: Target,
    estimate: MemoryEstimate | None,
    gpus: list[GpuInfo],
    *,
    runpod_key_set: bool,
    estimate_problem: str | None = None,
    smaller_estimate: MemoryEstimate | None = None,
) -> RoutingDecision:
    """Apply the module's rule. Pure: GPUs, key presence and estimate are passed in (tests inject them)."""
    min_local = _env_float("FINETUNE_MCP_MIN_LOCAL_GPU_GB", DEFAULT_MIN_LOCAL_GPU_GB)
    max_cpu = _env_float("FINETUNE_MCP_MAX_CPU_GB", DEFAULT_MAX_CPU_GB)
    need = estimate.total_gb if estimate else None
    need_text = f"~{need:.1f} GB" if need is not None else f"an unknown amount of memory ({estimate_problem})"
    found = _describe(gpus)
    by_free = sorted(gpus, key=lambda g: g.free_gb, reverse=True)

    def local(gpu: GpuInfo, why: str) -> RoutingDecision:
        return RoutingDecision("local", "cuda", why, gpu.index, need, estimate, gpus)

    def runpod(why: str) -> RoutingDecision:
        required = need if need is not None else _env_float("FINETUNE_MCP_RUNPOD_MIN_GPU_GB", DEFAULT_RUNPOD_MIN_GPU_GB)
        return RoutingDecision("runpod", "runpod", why, None, required, estimate, gpus)

    def cpu(why: str) -> RoutingDecision:
        return RoutingDecision("local", "cpu", why, None, need, estimate, gpus)

    if requested == "runpod":
        if not runpod_key_set:
            raise BackendError("target='runpod' needs a RunPod API key; set RUNPOD_API_KEY in the server's environment")
        return runpod(f"target='runpod' was asked for; the run needs {need_text}")

    if requested == "local":
        if by_free:
            best = max(gpus, key=lambda g: g.total_gb)
            if need is None or need <= best.total_gb:
                note = "" if need is None or need <= best.free_gb else (
                    f"; only {best.free_gb:.1f} GB is free now, so other processes must release memory first")
                return local(best, f"target='local': GPU {best.index} {best.name} ({best.total_gb:.1f} GB) "
                                   f"for a run that needs {need_text}{note}")
            raise BackendError(
                f"target='local' but the run needs {need_text} and the largest local GPU is {best.name} with "
                f"{best.total_gb:.1f} GB; use load_in_4bit=True or a smaller model, or target='runpod'"
            )
        ram = _system_ram_gb()
        if need is not None and ram and need > ram:
            raise BackendError(
                f"target='local' on a machine without a CUDA GPU: the run needs {need_text} and this machine has "
                f"{ram:.1f} GB of RAM; use a smaller model, or target='runpod' with RUNPOD_API_KEY set"
            )
        return cpu(f"target='local' and {found}: training on the CPU with transformers + PEFT "
                   f"(the run needs {need_text}); practical only for small models and short runs")

    # auto
    if need is not None:
        for gpu in by_free:
            if gpu.total_gb >= min_local and need <= gpu.free_gb:
                return local(gpu, f"GPU {gpu.index} {gpu.name} has {gpu.free_gb:.1f} GB free (≥ {need_text} needed, "
                                  f"and ≥ {min_local:g} GB total)")
    elif by_free and by_free[0].total_gb >= min_local and not runpod_key_set:
        gpu = by_free[0]
        return local(gpu, f"no memory estimate ({estimate_problem}); GPU {gpu.index} {gpu.name} has "
                          f"{gpu.total_gb:.1f} GB and RUNPOD_API_KEY is not set, so the run is tried locally")
    if runpod_key_set:
        why = "no local GPU can hold it" if need is not None else "its size is unknown"
        return runpod(f"{found}; the run needs {need_text} and {why}, so it goes to RunPod (RUNPOD_API_KEY is set)")
    if need is not None:
        for gpu in by_free:
            if need <= gpu.free_gb:
                return local(gpu, f"GPU {gpu.index} {gpu.name} is below {min_local:g} GB but has {gpu.free_gb:.1f} GB "
                                  f"free, enough for the {need_text} the run needs")
        if need <= max_cpu and (not gpus or by_free[0].free_gb < need):
            return cpu(f"{found}; the run is small ({need_text} ≤ FINETUNE_MCP_MAX_CPU_GB={max_cpu:g}), so it trains "
                       "on the CPU with transformers + PEFT")
    hint = ""
    if smaller_estimate is not None:
        hint = f" (with load_in_4bit=True it needs ~{smaller_estimate.total_gb:.1f} GB)"
    raise BackendError(
        f"No place to run this job: found {found}; the run needs {need_text}{hint}. Set RUNPOD_API_KEY to train on "
        f"a RunPod GPU, or use a smaller model / load_in_4bit=True / a shorter max_seq_length"
    )


def plan(
    model: str | None,
    *,
    target: Target = "auto",
    load_in_4bit: bool = False,
    gpus: list[GpuInfo] | None = None,
    runpod_key_set: bool | None = None,
    **estimate_kwargs: Any,
) -> RoutingDecision:
    """Estimate (when a model is given) and decide. A model whose config cannot be read still gets a
    decision when one is possible without its size (explicit targets, RunPod with a default size)."""
    gpus = detect_local_gpus() if gpus is None else gpus
    key_set = bool(os.environ.get("RUNPOD_API_KEY")) if runpod_key_set is None else runpod_key_set
    estimate = smaller = None
    problem = None if model else "no model given"
    if model:
        try:
            estimate = estimate_for(model, load_in_4bit=load_in_4bit, **estimate_kwargs)
            if not load_in_4bit:
                smaller = estimate_for(model, **{**estimate_kwargs, "load_in_4bit": True, "optim": "auto"})
        except FinetuneError as exc:
            problem = str(exc)
    if estimate is None and model and target == "auto" and not key_set and not gpus:
        raise BackendError(f"cannot size {model!r}: {problem}")
    return decide_target(target, estimate, gpus, runpod_key_set=key_set, estimate_problem=problem,
                         smaller_estimate=smaller)


def place_job(config: TrainingConfig, target: str, settings: Settings) -> Placement:
    """The `train` kind's placer: size the run from `config`, decide, and say why (`Placement.reason`)."""
    if getattr(config, "num_nodes", 1) > 1:
        return place_cluster(config, target, settings)
    return place_model(
        config.model, target, settings, num_gpus=config.num_gpus, load_in_4bit=config.load_in_4bit,
        lora_r=config.lora_r, target_modules=config.target_modules, max_seq_length=config.max_seq_length,
        batch_size=config.per_device_train_batch_size, gradient_checkpointing=config.gradient_checkpointing,
        optim=config.resolved_optim, extras=config.memory_extras,
    )


def place_model(model: str, target: str, settings: Settings, *, num_gpus: int | str = 1, load_in_4bit: bool = False,
                **estimate_kwargs: Any) -> Placement:
    """Place any job that loads `model` (training, evaluation, a student, sampling): estimate its
    memory with `estimate_kwargs` (see `jobs.vram.estimate_memory`), decide, and say why."""
    decision = plan(model, target=target, load_in_4bit=load_in_4bit,  # type: ignore[arg-type]
                    runpod_key_set=bool(settings.runpod_api_key), **estimate_kwargs)
    details: dict[str, Any] = {"required_gb": decision.required_gb}
    if decision.estimate is not None:
        details["estimate_gb"] = decision.estimate.breakdown_gb
        details["params"] = decision.estimate.params
    if decision.target == "runpod":
        placement = Placement("runpod", "cuda", None, decision.reason, details)
    elif load_in_4bit and decision.device != "cuda":
        raise BackendError(
            f"load_in_4bit=True needs a CUDA GPU (bitsandbytes 4-bit weights), but this job would run on the CPU "
            f"({decision.reason}); drop load_in_4bit (train in 16/32 bits on the CPU, fine for small models), or "
            "run it on a GPU: target='runpod' with RUNPOD_API_KEY set, or a machine with a CUDA GPU"
        )
    else:
        placement = Placement("local", decision.device, decision.gpu_index, decision.reason, details)
    return spread(placement, num_gpus, decision.gpus)


def place_cluster(config: TrainingConfig, target: str, settings: Settings) -> Placement:
    """num_nodes > 1: a RunPod Instant Cluster, `num_gpus` GPUs per node, DDP over all of them through
    torchrun. Only the HF/PEFT backend: Unsloth documents no multi-node training."""
    nodes = config.num_nodes
    if target != "runpod":
        raise BackendError(f"num_nodes={nodes} trains on a RunPod Instant Cluster; set target='runpod' (with "
                           "RUNPOD_API_KEY), or use num_nodes=1 (num_gpus spreads a run over one machine's GPUs)")
    if config.backend == "unsloth":
        raise BackendError(f"num_nodes={nodes}: Unsloth documents no multi-node training; use backend='hf' (or "
                           "'auto', which trains multi-node runs with transformers + PEFT under DDP)")
    if config.num_gpus == "auto":
        raise BackendError(f"num_nodes={nodes} needs num_gpus as a number (GPUs per node), not 'auto'")
    one = place_job(config.model_copy(update={"num_nodes": 1, "num_gpus": 1}), "runpod", settings)
    gpus = int(config.num_gpus)
    reason = (f"{nodes} nodes × {gpus} GPU{'s' if gpus > 1 else ''} on a RunPod Instant Cluster (DDP over "
              f"{nodes * gpus} processes, HF/PEFT backend): {one.reason}")
    return Placement("runpod_cluster", "cuda", None, reason,
                     {**one.details, "gpu_count": gpus, "num_nodes": nodes}, one.env)
