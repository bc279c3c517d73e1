"""The MCP server through a real client over stdio: listing, bad input, the import budget and the
stdout discipline. Training flows are in test_jobs_flow.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SECRET

EXPECTED_TOOLS = {
    "start_finetune", "preview_training", "get_job", "list_jobs", "cancel_job", "wait_for_job", "get_entropy_metrics",
    "detect_gpus",
    "tensorboard_screenshot", "generate_model_card", "deploy_to_hf", "enhance_dataset", "evaluate_model",
    "sample_model", "get_samples",
    "start_experiment", "get_experiment",
    "export_model",
}


def test_server_start_imports_no_training_libraries() -> None:
    code = (
        "import sys\n"
        "from finetune_mcp.server.app import create_app\n"
        "create_app()\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft', 'unsloth', 'runpod') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_lists_tools_prompts_and_resources(server_home) -> None:
    server = server_home()
    async with server.client() as client:
        tools = {t.name: t for t in await client.list_tools()}
        prompts = {p.name: p for p in await client.list_prompts()}
        templates = {t.uri_template for t in await client.list_resource_templates()}
        prompt = await client.get_prompt("finetune", {"model": "unsloth/Qwen3-4B", "dataset": "qa.jsonl"})
        deploy = await client.get_prompt("finetune-deploy", {"job_id": "ft-0123456789ab"})
    assert set(tools) == EXPECTED_TOOLS
    assert tools["get_job"].annotations.read_only_hint is True
    assert tools["cancel_job"].annotations.destructive_hint is True
    schema = tools["start_finetune"].input_schema["properties"]
    assert {"model", "dataset", "entropy_weighting", "target", "max_steps", "config_overrides"} <= set(schema)
    assert schema["target"]["enum"] == ["auto", "local", "runpod"]
    assert "description" in schema["learning_rate"] or "anyOf" in schema["learning_rate"]
    assert {"finetune", "finetune-deploy"} <= set(prompts)
    assert {a.name for a in prompts["finetune"].arguments} >= {"model", "dataset", "entropy_weighting"}
    text = prompt.messages[0].content.text
    assert "unsloth/Qwen3-4B" in text and "start_finetune" in text and "Do NOT call deploy_to_hf" in text
    assert "ft-0123456789ab" in deploy.messages[0].content.text
    assert templates >= {"job://{job_id}/log", "job://{job_id}/events", "job://{job_id}/spec"}
    server.stdout_messages()


async def test_bad_input_is_a_tool_error_and_leaves_nothing_behind(server_home, tiny_model: Path, dataset: Path,
                                                                     tmp_path: Path) -> None:
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output"\n')
    good = {"model": str(tiny_model), "dataset": str(dataset), "max_steps": 2}
    cases = [
        ({**good, "dataset": str(tmp_path / "missing.jsonl")}, "no such file or folder"),
        ({**good, "dataset": str(malformed)}, "malformed.jsonl, line 2"),
        ({**good, "model": str(tmp_path / "no-model")}, "no-model"),
        ({**good, "model": str(tmp_path)}, "has no config.json"),
        ({**good, "learning_rate": 5.0}, "learning_rate"),
        ({**good, "config_overrides": {"lora_alpha": 0}}, "lora_alpha: Input should be greater than or equal to 1"),
        ({**good, "config_overrides": {"lora_alfa": 8}}, "lora_alfa: unknown field"),
        ({**good, "config_overrides": {"run_dir": str(tmp_path)}}, "already exists and is not empty"),
        ({**good, "target": "runpod"}, "RUNPOD_API_KEY"),
        ({**good, "num_gpus": 2}, "num_gpus=2 needs 2 CUDA GPUs"),
        ({**good, "num_gpus": 0}, "num_gpus"),
    ]
    server = server_home(RUNPOD_API_KEY="")
    async with server.client() as client:
        for arguments, expected in cases:
            result = await client.call_tool("start_finetune", arguments, raise_on_error=False)
            assert result.is_error, arguments
            assert expected in result.content[0].text, (expected, result.content[0].text)
        for tool, job_id, expected in [
            ("get_job", "../../etc/passwd", "is not a job id"),
            ("cancel_job", "ft-../x", "is not a job id"),
            ("get_entropy_metrics", "ft-0123456789ab/../..", "is not a job id"),
            ("get_job", "ft-000000000000", "no job ft-000000000000; list_jobs shows the known ids"),
            ("cancel_job", "ft-000000000000", "no job ft-000000000000"),
        ]:
            result = await client.call_tool(tool, {"job_id": job_id}, raise_on_error=False)
            assert result.is_error and expected in result.content[0].text, (tool, result.content)
        with pytest.raises(Exception, match="no job ft-000000000000; list_jobs shows"):
            await client.read_resource("job://ft-000000000000/log")
        listed = await client.call_tool("list_jobs", {})
    assert listed.structured_content["count"] == 0
    assert not (server.home / "runs").exists() or not any((server.home / "runs").iterdir())
    messages = server.stdout_messages()
    assert SECRET not in json.dumps(messages)
