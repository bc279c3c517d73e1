"""VRAM estimate from config.json and the routing rule, with GPU lists injected (no GPU needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_mcp.errors import BackendError, ModelError
from finetune_mcp.jobs.placement import GpuInfo
from finetune_mcp.jobs.router import decide_target, detect_local_gpus, estimate_for, plan
from finetune_mcp.jobs.vram import load_model_info

QWEN3_06B = {  # Qwen/Qwen3-0.6B config.json (the fields that size it)
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28,
    "intermediate_size": 3072, "vocab_size": 151936, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "hidden_act": "silu",
}
LLAMA3_8B = {  # meta-llama/Meta-Llama-3-8B config.json
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
    "intermediate_size": 14336, "vocab_size": 128256, "num_attention_heads": 32, "num_key_value_heads": 8,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
}


def model_folder(tmp_path: Path, name: str, config: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def qwen(tmp_path: Path) -> Path:
    return model_folder(tmp_path, "qwen3-0.6b", QWEN3_06B)


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return model_folder(tmp_path, "llama3-8b", LLAMA3_8B)


@pytest.mark.parametrize(("fixture", "real"), [("qwen", 596_049_920), ("llama", 8_030_261_248)])
def test_parameter_count_from_architecture_matches_the_published_size(request, fixture: str, real: int) -> None:
    info = load_model_info(str(request.getfixturevalue(fixture)))
    assert info.source == "local folder"
    assert abs(info.params - real) / real < 0.01, info.params


def test_estimate_breakdown_is_plausible_for_16_and_4_bit(llama: Path, qwen: Path) -> None:
    full = estimate_for(str(llama))
    qlora = estimate_for(str(llama), load_in_4bit=True)
    assert set(full.breakdown_gb) == {"weights", "lora_adapters", "gradients", "optimizer", "activations",
                                      "loss_head", "cuda_overhead"}
    assert 14.5 < full.breakdown_gb["weights"] < 15.5  # 8.03 B × 2 bytes
    assert 18 < full.total_gb < 24 and 7 < qlora.total_gb < 12
    assert qlora.bits == 4 and full.bits == 16
    # LoRA r=16 on q,k,v,o,gate,up,down of 32 layers: 41.9 M parameters; AdamW keeps 2 fp32 moments each
    assert full.lora_params == 41_943_040
    assert full.breakdown_gb["optimizer"] == pytest.approx(41_943_040 * 8 / 1024**3, abs=1e-3)
    assert qlora.breakdown_gb["optimizer"] == pytest.approx(41_943_040 * 2 / 1024**3, abs=1e-3)  # 8-bit AdamW
    assert estimate_for(str(qwen)).total_gb < 5
    longer = estimate_for(str(llama), max_seq_length=8192)
    assert longer.breakdown_gb["activations"] > 3.5 * full.breakdown_gb["activations"]
    no_ckpt = estimate_for(str(llama), gradient_checkpointing=False)
    assert no_ckpt.breakdown_gb["activations"] > 10 * full.breakdown_gb["activations"]
    fewer = estimate_for(str(llama), target_modules=["q_proj", "v_proj"], lora_r=8)
    assert fewer.lora_params == 8 * ((4096 + 4096) + (4096 + 1024)) * 32


def test_checkpoint_headers_give_the_exact_count(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from finetune_mcp.testing import build_tiny_model

    folder = tmp_path / "tiny"
    build_tiny_model(folder)
    exact = sum(t.size for t in load_file(str(folder / "model.safetensors")).values())
    info = load_model_info(str(folder))
    assert info.params == exact and info.checkpoint_params_source == "safetensors headers"


def test_hub_model_offline_gives_a_clear_answer_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.monotonic()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as err:
        load_model_info("unsloth/Qwen3-4B")
    assert time.monotonic() - started < 5
    assert "local model folder" in str(err.value)


def test_unreachable_hub_fails_fast_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"cannot read config\.json of 'someone/some-model' \(ConnectError"):
        load_model_info("someone/some-model")
    assert time.monotonic() - started < 5


def test_not_a_model_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model_info(str(tmp_path))
    with pytest.raises(ModelError, match="neither a model folder nor a Hub id"):
        load_model_info("./missing/model/folder")


H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.6, 79.1)
RTX3060 = GpuInfo(0, "NVIDIA GeForce RTX 3060", 12.0, 11.5)
A4000 = GpuInfo(0, "NVIDIA RTX A4000", 16.0, 15.6)
BUSY_A6000 = GpuInfo(1, "NVIDIA RTX A6000", 48.0, 6.0)


def test_auto_routing_rules(llama: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINETUNE_MCP_MIN_LOCAL_GPU_GB", raising=False)
    big = estimate_for(str(llama))
    small = estimate_for(str(qwen))
    qlora = estimate_for(str(llama), load_in_4bit=True)

    d = decide_target("auto", big, [H100], runpod_key_set=True)
    assert (d.target, d.device, d.gpu_index) == ("local", "cuda", 0) and "H100" in d.reason

    d = decide_target("auto", big, [RTX3060, BUSY_A6000], runpod_key_set=True)
    assert d.target == "runpod" and d.required_gb == big.total_gb and "RTX 3060" in d.reason

    with pytest.raises(BackendError) as err:
        decide_target("auto", big, [RTX3060], runpod_key_set=False, smaller_estimate=qlora)
    message = str(err.value)
    assert "RTX 3060" in message and f"{big.total_gb:.1f} GB" in message
    assert "RUNPOD_API_KEY" in message and "load_in_4bit" in message and f"{qlora.total_gb:.1f} GB" in message

    d = decide_target("auto", qlora, [A4000], runpod_key_set=False)  # below 24 GB, but it fits and no key
    assert (d.target, d.device) == ("local", "cuda") and "below 24 GB" in d.reason

    d = decide_target("auto", small, [], runpod_key_set=False)
    assert (d.target, d.device) == ("local", "cpu") and "CPU" in d.reason
    d = decide_target("auto", small, [], runpod_key_set=True)
    assert d.target == "runpod"

    monkeypatch.setenv("FINETUNE_MCP_MIN_LOCAL_GPU_GB", "80")
    d = decide_target("auto", qlora, [GpuInfo(1, "NVIDIA RTX A6000", 48.0, 40.0)], runpod_key_set=True)
    assert d.target == "runpod"


def test_explicit_targets(llama: Path, qwen: Path) -> None:
    big = estimate_for(str(llama))
    d = decide_target("local", estimate_for(str(qwen)), [], runpod_key_set=True)
    assert (d.target, d.device) == ("local", "cpu")
    d = decide_target("local", big, [GpuInfo(0, "RTX 4090", 24.0, 3.0)], runpod_key_set=False)
    assert d.device == "cuda" and "only 3.0 GB is free" in d.reason
    with pytest.raises(BackendError, match="largest local GPU is NVIDIA GeForce RTX 3060"):
        decide_target("local", big, [RTX3060], runpod_key_set=True)
    with pytest.raises(BackendError, match="set RUNPOD_API_KEY"):
        decide_target("runpod", big, [H100], runpod_key_set=False)
    d = decide_target("runpod", None, [], runpod_key_set=True, estimate_problem="offline")
    assert d.target == "runpod" and d.required_gb == 24.0


def test_plan_without_a_readable_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackendError, match=r"cannot size 'org/model'.*HF_HUB_OFFLINE"):
        plan("org/model", gpus=[], runpod_key_set=False)
    d = plan("org/model", gpus=[], runpod_key_set=True)  # the pod can download it; size unknown → default
    assert d.target == "runpod" and "unknown" in d.reason


def test_no_gpu_here_is_an_empty_list_not_an_error() -> None:
    gpus = detect_local_gpus()
    assert isinstance(gpus, list) and all(g.total_gb > 0 for g in gpus)


def test_server_side_modules_import_no_torch() -> None:
    code = ("import sys, finetune_mcp.jobs.router, finetune_mcp.tools.gpu, finetune_mcp.jobs.backends.runpod.backend, "
            "finetune_mcp.jobs.backends.runpod.pod_server; finetune_mcp.jobs.router.detect_local_gpus(); "
            "sys.exit(1 if {'torch', 'transformers', 'runpod'} & set(sys.modules) else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_hub_config_and_safetensors_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    files = {
        "/org/llama/resolve/main/config.json": LLAMA3_8B,
        "/org/llama/resolve/main/model.safetensors.index.json": {"metadata": {"total_size": 16_060_522_496}},
    }
    seen: list[str] = []

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps(files[self.path]).encode() if self.path in files else b"not found"
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        info = load_model_info("org/llama")
    finally:
        server.shutdown()
    assert info.source == "Hugging Face Hub"
    assert info.params == 8_030_261_248 and info.checkpoint_params_source == "safetensors index total_size"
    assert seen == list(files)  # one request per file, no retries


async def test_detect_gpus_tool_explains_where_a_model_would_run(llama: Path, qwen: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from fastmcp import Client

    from finetune_mcp.server.app import create_app

    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    async with Client(create_app()) as client:
        listed = (await client.call_tool("detect_gpus", {})).structured_content
        big = (await client.call_tool("detect_gpus", {"model": str(llama)})).structured_content
        small = (await client.call_tool("detect_gpus", {"model": str(qwen), "load_in_4bit": True})).structured_content
        missing = (await client.call_tool("detect_gpus", {"model": str(tmp_path)})).structured_content
    assert listed["estimate"] is None and listed["runpod_available"] is False
    assert big["estimate"]["params"] == 8_030_261_248 and big["estimate"]["bits"] == 16
    if not big["gpus"]:  # this machine has no GPU: nowhere to run an 8B model without a RunPod key
        assert big["decision"]["target"] is None
        assert "RUNPOD_API_KEY" in big["decision"]["reason"] and "load_in_4bit" in big["decision"]["reason"]
        assert small["decision"]["device"] == "cpu" and small["estimate"]["bits"] == 4
    assert missing["estimate"] is None and "no config.json" in missing["estimate_error"]
