"""The step plan: what each run's shape gets, and that an explicit setting always wins."""

from __future__ import annotations

from finetune_mcp.config import build_config
from finetune_mcp.testing.tiny_model import build_tiny_model
from finetune_mcp.train.step_plan import plan_step


def _config(tmp_path, **extra):
    model = build_tiny_model(tmp_path / "m")
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    return build_config({"model": str(model), "dataset": str(data), **extra})


H100 = "NVIDIA H100 80GB HBM3"


def test_a_small_model_on_a_gpu_replays_graphs_without_checkpointing(tmp_path):
    plan = plan_step(_config(tmp_path), "hf", cuda=True, device_memory_gb=80, device_name=H100)
    assert (plan.gradient_checkpointing, plan.decoder, plan.pad_to_multiple_of) == (False, "graphs", 32)
    assert any("fits" in r or "under 40%" in r for r in plan.reasons)
    # no host sync per step: the Trainer's NaN filter reads every loss
    assert plan.sft_arguments() == {"pad_to_multiple_of": 32, "logging_nan_inf_filter": False}


def test_an_explicit_checkpointing_setting_wins_and_keeps_the_decoder_eager(tmp_path):
    plan = plan_step(_config(tmp_path, gradient_checkpointing=True), "hf", cuda=True, device_memory_gb=80,
                     device_name=H100)
    assert plan.gradient_checkpointing and plan.decoder == "model"
    assert "set in the config" in plan.reasons[0] and "gradient checkpointing is on" in plan.reasons[1]


def test_a_card_too_small_for_the_step_keeps_checkpointing(tmp_path):
    plan = plan_step(_config(tmp_path, per_device_train_batch_size=64, max_seq_length=4096), "hf", cuda=True,
                     device_memory_gb=0.05)
    assert plan.gradient_checkpointing and plan.decoder == "model"


def test_cpu_and_unsloth_runs(tmp_path, monkeypatch):
    config = _config(tmp_path)
    cpu = plan_step(config, "hf", cuda=False, device_memory_gb=None)
    assert (cpu.gradient_checkpointing, cpu.decoder) == (False, "model")
    unsloth = plan_step(config, "unsloth", cuda=True, device_memory_gb=80)
    assert unsloth.decoder == "model" and unsloth.padding_free is False  # no flash-attn / xformers here
    monkeypatch.setenv("FINETUNE_MCP_CUDA_GRAPHS", "0")
    off = plan_step(config, "hf", cuda=True, device_memory_gb=80, device_name=H100)
    assert off.decoder == "model" and not off.gradient_checkpointing
    assert "turned off (FINETUNE_MCP_CUDA_GRAPHS=0)" in off.reasons[-1]
    monkeypatch.delenv("FINETUNE_MCP_CUDA_GRAPHS")
    unknown = plan_step(config, "hf", cuda=True, device_memory_gb=80, device_name="Some Unmeasured GPU")
    assert unknown.decoder == "model" and "GPU work is unknown" in unknown.reasons[-1]


def test_a_step_the_gpu_limits_runs_eagerly(tmp_path, monkeypatch):
    """Graphs save launches, not arithmetic; they hold a copy of the activations per shape, so a step
    that is not launch-bound (~200 ms of work here) keeps the model's own forward."""
    from types import SimpleNamespace

    from finetune_mcp.jobs import vram

    monkeypatch.setattr(vram, "load_model_info", lambda model: SimpleNamespace(params=4_000_000_000))
    big = plan_step(_config(tmp_path, per_device_train_batch_size=8, max_seq_length=2048), "hf", cuda=True,
                    device_memory_gb=10_000, device_name=H100)
    assert big.decoder == "model" and "not launch-bound (~" in big.reasons[-1]


def test_auto_picks_graphs_over_unsloth_only_for_a_launch_bound_step(tmp_path):
    from finetune_mcp.train.step_plan import auto_backend

    small = _config(tmp_path)
    backend, why = auto_backend(small, "unsloth", "NVIDIA H100 80GB HBM3")
    assert backend == "hf" and "kernel launches" in why
    assert auto_backend(small, "unsloth", "Some Unmeasured GPU") == ("unsloth", None)  # no peak known: keep
    assert auto_backend(_config(tmp_path / "b", backend="unsloth"), "unsloth", "NVIDIA H100") == ("unsloth", None)



def test_auto_keeps_unsloth_where_the_gpu_is_the_limit(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from finetune_mcp.jobs import vram
    from finetune_mcp.train.step_plan import auto_backend

    monkeypatch.setattr(vram, "load_model_info", lambda model: SimpleNamespace(params=4_000_000_000))
    big = _config(tmp_path, per_device_train_batch_size=8, max_seq_length=2048)  # ~200 ms of GPU work
    assert auto_backend(big, "unsloth", "NVIDIA H100 80GB HBM3") == ("unsloth", None)
