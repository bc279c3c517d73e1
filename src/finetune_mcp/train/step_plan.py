"""How a run's training step executes, chosen per run from its shape and said in the run's log.

The loss is never part of the choice: every plan computes the same loss through the same fused
kernel, so the arms of an experiment stay comparable. What is chosen:

- `gradient_checkpointing` ("auto" by default): recomputing every layer in backward saves memory
  and costs a second forward. It is turned off when the step's activations fit easily (the memory
  estimate without it is under `FIT_SHARE` of the card), which for small models is always.
- `decoder`: how the hidden states are computed. `graphs` replays the decoder's forward and backward
  from CUDA graphs (`train.decoder_graphs`) when the step is launch-bound (a micro-batch estimated
  under LAUNCH_BOUND_S of GPU work), on the transformers + PEFT backend, CUDA, 16-bit, one process,
  no checkpointing; `model` (the model's own forward) everywhere else, or with
  FINETUNE_MCP_CUDA_GRAPHS=0. On an H100 (2026-12-06, SmolLM2-135M, batch 16 × ~45 tokens) graphs
  took a step from 0.243 s to 0.083 s; a capture that fails leaves the run eager, as before.
- `pad_to_multiple_of`: with graphs, batches are padded to a multiple of this, so a few shapes
  (each captured once) cover a run. A graph step also waits for the GPU nowhere: every position goes
  through the loss head with ignored ones masked in the kernel (`sft.trainer`, `head_rows`), and the
  Trainer's NaN/inf loss filter (a host read of every step's loss) is off.
- `padding_free`: Unsloth turns padding-free batching on by itself; without a varlen attention
  kernel (FlashAttention 2 or xformers) it then runs attention once per packed sequence, which
  made its step slower than padded batches of these short rows. Off unless such a kernel exists.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("finetune_mcp.run")

FIT_SHARE = 0.4  # checkpointing stays off while the estimate without it is under this share of the card
GRAPH_PAD_MULTIPLE = 32
# A micro-batch whose GPU work is estimated under this many seconds is bound by kernel launches (Unsloth's
# own padding rule measured 0.1 s as that line on A100 / L4 / T4; half of it keeps a margin).
LAUNCH_BOUND_S = 0.05
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40": 362.0, "L4": 121.0}


@dataclass
class StepPlan:
    gradient_checkpointing: bool
    decoder: str = "model"  # "model" | "graphs"
    pad_to_multiple_of: int | None = None
    padding_free: bool | None = None  # None: the library's own choice
    reasons: list[str] = field(default_factory=list)

    def sft_arguments(self) -> dict[str, Any]:
        """The SFTConfig fields this plan sets (fixed padding multiples for graphs, Unsloth's padding-free)."""
        fields: dict[str, Any] = {}
        if self.pad_to_multiple_of:
            fields["pad_to_multiple_of"] = self.pad_to_multiple_of
        if self.decoder == "graphs":
            # The Trainer's NaN/inf filter reads every step's loss on the host (a sync that leaves the GPU
            # idle while the host launches the next step); without it a NaN loss is logged as NaN.
            fields["logging_nan_inf_filter"] = False
        if self.padding_free is not None:
            fields["padding_free"] = self.padding_free
        return fields

    def describe(self) -> dict[str, Any]:
        return {"gradient_checkpointing": self.gradient_checkpointing, "decoder": self.decoder,
                "pad_to_multiple_of": self.pad_to_multiple_of, "padding_free": self.padding_free,
                "reasons": self.reasons}


def micro_batch_gpu_s(config: Any, device_name: str | None) -> tuple[float, float] | None:
    """(seconds of GPU work a micro-batch needs at half the card's bf16 peak, parameters), or None when
    the card's peak or the model's size is unknown."""
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in (device_name or "")), None)
    if peak is None:
        return None
    try:
        from finetune_mcp.jobs.vram import load_model_info

        params = load_model_info(config.model).params
    except Exception:
        return None
    tokens = config.per_device_train_batch_size * config.max_seq_length
    return 6 * params * tokens / (peak * 1e12 * 0.5), params


def auto_backend(config: Any, backend: str, device_name: str | None) -> tuple[str, str | None]:
    """With `backend="auto"` on a GPU where Unsloth is installed: transformers + PEFT instead, when the
    step is launch-bound (a small model, short rows). There Unsloth's kernels save nothing, its
    padding-free attention and patching add launches, and its import costs ~40 s before the first
    step: on an H100, SmolLM2-135M at batch 16 × ~45 tokens took 0.083 s a step on this project's
    transformers path (CUDA-graph decoder; 0.243 s eager) against 0.65 s for plain Unsloth + TRL, and
    reached step 1 in ~20 s against 65-93 s through Unsloth (issue #22's measurement).
    Returns (backend, why) — why is None when nothing changed."""
    if config.backend != "auto" or backend != "unsloth" or config.load_in_4bit:
        return backend, None
    work = micro_batch_gpu_s(config, device_name)
    if work is None or work[0] >= LAUNCH_BOUND_S:
        return backend, None
    gpu_s, params = work
    tokens = config.per_device_train_batch_size * config.max_seq_length
    return "hf", (f"backend hf rather than Unsloth: a micro-batch is ~{gpu_s * 1e3:.1f} ms of GPU work "
                  f"({params / 1e6:.0f}M parameters × {tokens} tokens), so the step is bound by kernel launches, "
                  "where Unsloth's kernels save nothing and its import delays the first step; "
                  "set backend='unsloth' to override")


def plan_checkpointing(config: Any, cuda: bool, device_memory_gb: float | None) -> tuple[bool, str]:
    """(use checkpointing, why). An explicit true/false in the config always wins."""
    asked = config.gradient_checkpointing
    if asked is not None and asked != "auto":
        return bool(asked), f"gradient checkpointing {'on' if asked else 'off'}: set in the config"
    if not cuda:
        return False, "gradient checkpointing off: CPU run (memory is not the limit there)"
    try:
        from finetune_mcp.jobs.vram import estimate_memory, load_model_info

        estimate = estimate_memory(load_model_info(config.model), load_in_4bit=config.load_in_4bit,
                                   lora_r=config.lora_r, target_modules=config.target_modules,
                                   max_seq_length=config.max_seq_length,
                                   batch_size=config.per_device_train_batch_size, gradient_checkpointing=False,
                                   optim=config.resolved_optim)
    except Exception as exc:  # an estimate we cannot make keeps the memory-safe choice
        return True, f"gradient checkpointing on: no memory estimate ({exc})"
    if device_memory_gb and estimate.total_gb <= FIT_SHARE * device_memory_gb:
        return False, (f"gradient checkpointing off: the step needs ~{estimate.total_gb:.1f} GB without it, "
                       f"under {FIT_SHARE:.0%} of the card's {device_memory_gb:.0f} GB")
    return True, (f"gradient checkpointing on: ~{estimate.total_gb:.1f} GB without it "
                  f"(card: {device_memory_gb or 0:.0f} GB)")


def plan_step(config: Any, backend: str, *, cuda: bool, device_memory_gb: float | None,
              num_processes: int = 1, device_name: str | None = None) -> StepPlan:
    """The plan for one run, before its model is loaded (Unsloth takes checkpointing at load time)."""
    checkpointing, why = plan_checkpointing(config, cuda, device_memory_gb)
    plan = StepPlan(gradient_checkpointing=checkpointing, reasons=[why])
    if backend == "unsloth":
        varlen = any(importlib.util.find_spec(m) is not None for m in ("flash_attn", "xformers"))
        if not varlen:
            plan.padding_free = False
            plan.reasons.append("padded batches: Unsloth's padding-free mode would run attention once per "
                                "sequence here (no FlashAttention 2 / xformers)")
        return plan
    work = micro_batch_gpu_s(config, device_name) if cuda else None
    blockers = [
        reason for reason, blocked in (
            ("no CUDA", not cuda),
            ("CUDA graphs turned off (FINETUNE_MCP_CUDA_GRAPHS=0)", os.environ.get("FINETUNE_MCP_CUDA_GRAPHS") == "0"),
            ("the step's GPU work is unknown (card or model size)", cuda and work is None),
            (f"not launch-bound (~{work[0] * 1e3:.0f} ms of GPU work a micro-batch)" if work else "",
             work is not None and work[0] >= LAUNCH_BOUND_S),
            ("4-bit weights", config.load_in_4bit),
            ("gradient checkpointing is on", checkpointing),
            (f"{num_processes} processes (DDP)", num_processes > 1),
        ) if blocked
    ]
    if blockers:
        plan.reasons.append("decoder runs eagerly: " + ", ".join(blockers))
        return plan
    plan.decoder = "graphs"
    plan.pad_to_multiple_of = GRAPH_PAD_MULTIPLE
    plan.reasons.append(f"decoder forward+backward replayed from CUDA graphs (launch-bound step), batches padded "
                        f"to a multiple of {GRAPH_PAD_MULTIPLE} tokens")
    return plan


def log_plan(plan: StepPlan) -> None:
    for reason in plan.reasons:
        log.info("step plan: %s", reason)
