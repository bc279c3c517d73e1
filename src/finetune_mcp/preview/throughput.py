"""Seconds per optimiser step, estimated from the measured step times in `throughput.json`.

A LoRA step's work is the frozen model's forward and backward over the step's tokens, so the time
per token grows with the parameters the matmuls touch: the transformer body plus the output head
(V × hidden for SFT; two rows for the reranker's yes/no head). The H100 measurements give two
regimes, and the estimate takes the slower of them:

    small models are launch-bound:  Qwen3-0.6B (0.60 B matmul params) and the Qwen3-4B reranker
                                    (3.6 B) both run at ~19-20 k tokens/s, so below ~3.5 B the time
                                    per token is the 0.6B measurement;
    larger ones are compute-bound:  time per token = the Qwen3-4B measurement × params / 3.6 B.

Another GPU scales by its dense bf16 peak relative to the H100 SXM (vendor figures: a rough
carry-over, said so in `basis`). The CPU uses the CPU measurement, scaled by parameters. 4-bit
QLoRA is estimated like 16-bit (not measured at scale); model download and loading, and pod
start-up on RunPod, are not included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from finetune_mcp.config.methods import get_method
from finetune_mcp.jobs.vram import ModelShape, shape_from_config

TABLE = "throughput.json"


@dataclass(frozen=True)
class Measurement:
    name: str
    device: str
    task: str
    entropy_weighting: bool
    matmul_params: int
    seconds_per_token: float
    source: str


def matmul_params(shape: ModelShape, task: str) -> int:
    """Parameters a token's forward and backward multiply through (embedding lookups excluded)."""
    head_rows = get_method(task).loss_head_rows or shape.vocab
    return shape.parameter_count()["body"] + head_rows * shape.hidden


@cache
def table() -> dict[str, Any]:
    return json.loads((resources.files("finetune_mcp.preview") / TABLE).read_text(encoding="utf-8"))


@cache
def measurements() -> tuple[Measurement, ...]:
    out = []
    for row in table()["measured"]:
        shape = shape_from_config(row["config"])
        out.append(Measurement(
            name=row["name"], device=row["device"], task=row["task"],
            entropy_weighting=bool(row.get("entropy_weighting", False)),
            matmul_params=matmul_params(shape, row["task"]),
            seconds_per_token=row["seconds_per_step"] / row["tokens_per_step"], source=row["source"],
        ))
    return tuple(out)


def relative_speed(gpu: str) -> tuple[float, str] | None:
    """(speed relative to the H100 SXM, the table's name matched) for a GPU name as NVML or RunPod
    writes it ('NVIDIA GeForce RTX 4090', 'A100 PCIe'); None for a GPU the table does not know."""
    gpus: dict[str, float] = table()["relative_bf16_tflops"]["gpus"]
    reference = gpus[table()["relative_bf16_tflops"]["reference"]]
    name = gpu.upper().replace("NVIDIA", "").replace("GEFORCE", "").replace("-", " ")
    name = " ".join(name.split())
    matches = [key for key in gpus if key.upper() in name]
    if not matches:
        return None
    key = max(matches, key=len)
    return gpus[key] / reference, key


@dataclass(frozen=True)
class StepTime:
    seconds: float
    basis: str


def step_seconds(shape: ModelShape, task: str, tokens_per_step: int, device: str, gpu: str | None,
                 entropy_weighting: bool) -> StepTime | None:
    """Estimated seconds per optimiser step on `gpu` (device 'cuda'/'runpod') or on the CPU; None
    when nothing measured applies (an unknown GPU, no CPU measurement)."""
    params = matmul_params(shape, task)
    if device == "cpu":
        cpu = [m for m in measurements() if m.device.startswith("cpu")]
        if not cpu:
            return None
        ref = max(cpu, key=lambda m: m.matmul_params)
        per_token = ref.seconds_per_token * max(params / ref.matmul_params, 1e-3)
        return StepTime(per_token * tokens_per_step, (
            f"{tokens_per_step:,} tokens a step × {per_token * 1e6:,.1f} µs a token: the CPU measurement "
            f"'{ref.name}' ({ref.source}) scaled by matmul parameters ({params / 1e6:,.1f} M vs "
            f"{ref.matmul_params / 1e6:,.1f} M); CPU speed varies widely between machines"))
    gpu_meas = [m for m in measurements() if not m.device.startswith("cpu")]
    speed = relative_speed(gpu) if gpu else None
    if speed is None or not gpu_meas:
        return None
    small = [m for m in gpu_meas if get_method(m.task).loss_head_rows is None]  # full-vocabulary loss heads
    floor = min((m for m in small if m.entropy_weighting == entropy_weighting), key=lambda m: m.matmul_params,
                default=min(small, key=lambda m: m.matmul_params))
    big = max(gpu_meas, key=lambda m: m.matmul_params)
    compute = big.seconds_per_token * params / big.matmul_params
    bound, ref = ("launch-bound", floor) if floor.seconds_per_token >= compute else ("compute-bound", big)
    per_token = max(floor.seconds_per_token, compute) / speed[0]
    scaled = "" if speed[0] == 1 else (
        f", ÷ {speed[0]:.2f} for {gpu} ({speed[1]}'s dense bf16 peak relative to the H100 SXM: a datasheet ratio, "
        "rougher than the measurement)")
    return StepTime(per_token * tokens_per_step, (
        f"{tokens_per_step:,} tokens a step × {per_token * 1e6:,.1f} µs a token: {bound} at "
        f"{params / 1e9:.2f} B matmul parameters, from '{ref.name}' on an H100 ({ref.source})"
        + ("" if bound == "launch-bound" else f" scaled by {params / ref.matmul_params:.2f}× the parameters")
        + scaled + "; 4-bit QLoRA is estimated like 16-bit; model loading and pod start-up are not included"))
