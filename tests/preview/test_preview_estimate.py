"""preview/throughput.py and estimate.py: the time model against its measured table, the Trainer's
step arithmetic, and RunPod's GPU type and price read from the RunPod stand-in."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune_mcp.config import Settings, build_config
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.vram import shape_from_config
from finetune_mcp.preview.dry_run import preview_training
from finetune_mcp.preview.estimate import Where, estimate_run
from finetune_mcp.preview.lengths import padded_tokens_per_step, steps
from finetune_mcp.preview.throughput import matmul_params, measurements, relative_speed, step_seconds, table
from finetune_mcp.testing.template_tokenizers import FAMILIES
from standins.runpod_api import GPU_TYPES, RunPodStandIn

from .support import chat, write_rows

H100 = "NVIDIA H100 80GB HBM3"


def shape(family: str):
    return shape_from_config(FAMILIES[family].config)


def test_every_measurement_is_a_number_of_its_raw_benchmark_file() -> None:
    root = Path(__file__).resolve().parents[2]
    for row in table()["measured"]:
        files = [root / part.strip() for part in row["source"].split(";") if part.strip().endswith(".json")]
        assert files and all(f.is_file() for f in files), row["source"]
        medians = [r["median_step_s"] for f in files for r in json.loads(f.read_text())["results"] if "median_step_s" in r]
        assert row["seconds_per_step"] in medians, row["name"]
        assert row["source"].startswith("benchmarks/RESULTS.md")


def test_gpu_names_as_nvml_and_runpod_write_them() -> None:
    assert relative_speed(H100) == (1.0, "H100 80GB HBM3")
    assert relative_speed("H100 SXM") == (1.0, "H100 SXM")
    assert relative_speed("NVIDIA GeForce RTX 4090")[1] == "RTX 4090"
    assert relative_speed("NVIDIA A100-SXM4-80GB")[1] == "A100"
    assert relative_speed("NVIDIA RTX A4000")[1] == "RTX A4000"  # not A40
    assert relative_speed("NVIDIA L40S")[1] == "L40S"
    assert relative_speed("Some Future GPU") is None


def test_small_models_are_launch_bound_large_ones_scale_with_parameters() -> None:
    small = step_seconds(shape("qwen3"), "sft", 8192, "cuda", H100, entropy_weighting=False)
    assert small is not None and small.seconds == pytest.approx(0.4157, rel=1e-3)  # the 0.6B measurement itself
    assert "launch-bound" in small.basis and "train_step_qwen3-0.6b_h100.json" in small.basis
    big = step_seconds(shape("llama3_1"), "sft", 8192, "cuda", H100, entropy_weighting=False)
    four_b = max(measurements(), key=lambda m: m.matmul_params)
    assert big is not None and "compute-bound" in big.basis
    params = matmul_params(shape("llama3_1"), "sft")
    assert 7.0e9 < params < 8.1e9  # Llama-3.1-8B's body and head; the embedding lookup is not a matmul
    assert big.seconds / 8192 == pytest.approx(four_b.seconds_per_token * params / four_b.matmul_params)
    slower = step_seconds(shape("llama3_1"), "sft", 8192, "cuda", "RTX 4090", entropy_weighting=False)
    assert slower.seconds == pytest.approx(big.seconds * 989 / 165) and "datasheet" in slower.basis
    assert step_seconds(shape("qwen3"), "sft", 8192, "cuda", "Mystery GPU", entropy_weighting=False) is None
    cpu = step_seconds(shape("qwen3"), "sft", 512, "cpu", None, entropy_weighting=False)
    assert cpu is not None and "CPU measurement" in cpu.basis and cpu.seconds > 13.87


def test_steps_follow_the_trainer() -> None:
    config = build_config({"model": "m", "dataset": "d", "per_device_train_batch_size": 3,
                           "gradient_accumulation_steps": 4, "num_train_epochs": 2.5, "warmup_ratio": 0.1})
    per_epoch, total, warmup, epochs = steps(100, config)
    assert per_epoch == math.ceil(math.ceil(100 / 3) / 4) == 9
    assert total == math.ceil(2.5 * 9) and warmup == math.ceil(total * 0.1) and epochs == round(total / 9, 3)
    assert steps(100, config, devices=2)[0] == math.ceil(math.ceil(50 / 3) / 4)
    capped = config.model_copy(update={"max_steps": 5, "warmup_steps": 2})
    assert steps(100, capped)[1:3] == (5, 2)
    assert padded_tokens_per_step([10, 10, 10, 10], batch=2, accumulation=3, seed=0) == 60
    assert padded_tokens_per_step([1, 9], batch=2, accumulation=1, seed=0) == 18  # padded to the longest


def test_a_local_gpu_placement_gets_its_time(template_models) -> None:
    config = build_config({"model": str(template_models("qwen3")), "dataset": "d"})
    where = Where("auto", Placement("local", "cuda", 0, "GPU 0 has room", {"required_gb": 9.0}), gpu=H100)
    estimate = estimate_run(config, where, tokens_per_step=8192, total_steps=100, eval_tokens=0, evaluations=0)
    assert estimate.gpu == H100 and estimate.seconds_per_step == pytest.approx(0.416, abs=1e-3)
    assert estimate.total_seconds == pytest.approx(41.6, abs=0.1) and estimate.cost_usd is None


def test_runpod_placement_names_the_gpu_type_and_the_cost(template_models, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_rows(tmp_path / "chat.jsonl", [chat(("user", "hi"), ("assistant", "yes"))] * 40)
    with RunPodStandIn(tmp_path / "runpod") as runpod:
        monkeypatch.setenv("RUNPOD_API_KEY", runpod.api_key)
        monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod.url)
        monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path / "home"))
        config = build_config({"model": str(template_models("llama3_1")), "dataset": str(data), "max_steps": 100})
        report = preview_training(config, "runpod", settings=Settings.from_env())
        creates = runpod.ops("podFindAndDeployOnDemand")
    estimate = report.estimate
    fitting = [t for t in GPU_TYPES if t[2] >= estimate.memory_gb and t[5]]
    cheapest = min(fitting, key=lambda t: min(t[3], t[4]))
    assert estimate.backend == "runpod" and estimate.gpu == cheapest[1]
    assert estimate.price_per_hr == pytest.approx(min(cheapest[3], cheapest[4]))
    assert estimate.cost_usd == pytest.approx(estimate.price_per_hr * estimate.total_seconds / 3600, abs=0.01)
    assert "datasheet" in estimate.basis and not creates  # priced, never rented
