"""The whole RunPod flow as an agent sees it: the real `finetune-mcp serve` over stdio, a real MCP
client, target='runpod', the stand-in's pod running the real worker. The user agrees to the GPU,
price and cap first (elicitation), progress arrives, the artifacts land in the local run dir, every
later tool reads them, the pod is terminated, and the RunPod key and HF token appear nowhere (tool
output, server log, SQLite, files, the pod's env). Without consent no pod is rented; a hostile pod's
artifacts never replace the local spec, events or sidecar."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from standins.runpod_api import RunPodStandIn

from .runpod_support import files_containing, runpod_env

pytestmark = pytest.mark.slow
HF_SECRET = "hf_MCPRUNPODdoNotLeak0123456789"


@pytest.fixture
def rp(tmp_path: Path) -> Iterator[RunPodStandIn]:
    with RunPodStandIn(tmp_path / "runpod") as standin:
        yield standin


async def test_finetune_on_runpod_through_mcp(rp: RunPodStandIn, tmp_path: Path, tiny_model_dir: Path) -> None:
    from finetune_mcp.testing import write_dataset

    dataset = write_dataset(tmp_path / "train.jsonl", "messages", n=32)
    home = tmp_path / "home"
    server_log = tmp_path / "server.log"
    env = {**os.environ, "FINETUNE_MCP_HOME": str(home), "RUNPOD_API_KEY": rp.api_key, "HF_TOKEN": HF_SECRET,
           "HF_HUB_OFFLINE": "1", **runpod_env(rp)}
    transport = StdioTransport(sys.executable, ["-m", "finetune_mcp.cli", "serve"], env=env, keep_alive=False,
                               log_file=server_log)
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    outputs = []
    asked: list[str] = []

    async def user(message, response_type, params, context):  # agrees, and sets a cap of $5
        asked.append(message)
        return response_type(start=True, max_cost_usd=5.0)

    async with Client(transport, timeout=120, progress_handler=on_progress, elicitation_handler=user) as client:
        detected = await client.call_tool("detect_gpus", {"model": str(tiny_model_dir)})
        outputs.append(detected.structured_content)
        if not detected.structured_content["gpus"]:
            assert detected.structured_content["decision"]["target"] == "runpod"
            assert "RUNPOD_API_KEY is set" in detected.structured_content["decision"]["reason"]

        started = await client.call_tool("start_finetune", {
            "model": str(tiny_model_dir), "dataset": str(dataset), "target": "runpod", "max_steps": 8,
            "max_seq_length": 128, "entropy_weighting": True,
        })
        job_id = started.structured_content["job_id"]
        assert started.structured_content["backend"] == "runpod"
        outputs.append(started.structured_content)
        [message] = asked
        assert "RTX 3090" in message and "$0.22/h" in message and "spending cap" in message
        consent = started.structured_content["consent"]
        assert consent["how"] == "elicitation" and consent["terms"]["max_cost_usd"] == 5.0
        assert consent["terms"]["gpu_name"] == "RTX 3090" and consent["terms"]["price_per_hr"] == 0.22

        for _ in range(6):
            waited = await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 30})
            if waited.structured_content["state"] in ("succeeded", "failed", "cancelled"):
                break
        job = (await client.call_tool("get_job", {"job_id": job_id})).structured_content
        entropy = await client.call_tool("get_entropy_metrics", {"job_id": job_id}, raise_on_error=False)
        log = await client.read_resource(f"job://{job_id}/log")
        outputs += [waited.structured_content, job, entropy.structured_content, log[0].text]

    assert job["state"] == "succeeded", job["error"]
    assert job["step"] == 8 and job["metrics"].get("train/loss") is not None
    assert job["cost_usd"] and job["cost_usd"] > 0 and job["worker"]["max_cost_usd"] == 5.0
    [pod_id] = rp.pods
    assert job["worker"]["pod_id"] == pod_id and job["worker"]["gpu_name"] == "RTX 3090"  # cheapest that fits
    assert progress, "wait_for_job sent no progress notifications"
    assert not entropy.is_error, entropy.content
    assert log[0].text.strip(), "the worker's log did not reach the local run dir"

    run = Path(job["run_dir"])
    assert run.parent == home / "runs"
    assert (run / "adapter" / "adapter_config.json").exists() and (run / "adapter" / "adapter_model.safetensors").exists()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "succeeded" and result["cost_usd"] > 0 and result["compute"]["pod_id"] == pod_id
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "progress"][:8] == list(range(1, 9))

    assert rp.terminated() == {pod_id} and not rp.running_pods()
    [deploy] = rp.ops("podFindAndDeployOnDemand")
    pod_env = {e["key"]: e["value"] for e in deploy["args"]["input"]["env"]}
    assert len(pod_env["FINETUNE_MCP_WORKER_TOKEN"]) == 64 and deploy["args"]["input"]["ports"] == "8000/http"
    for secret in (rp.api_key, HF_SECRET):
        assert secret not in json.dumps(outputs, default=str)
        assert secret not in server_log.read_text()
        assert secret not in json.dumps(pod_env)
        assert files_containing(home, secret) == []


def server(tmp_path: Path, rp: RunPodStandIn, **extra: str) -> StdioTransport:
    env = {**os.environ, "FINETUNE_MCP_HOME": str(tmp_path / "home"), "RUNPOD_API_KEY": rp.api_key,
           "HF_TOKEN": HF_SECRET, "HF_HUB_OFFLINE": "1", **runpod_env(rp), **extra}
    return StdioTransport(sys.executable, ["-m", "finetune_mcp.cli", "serve"], env=env, keep_alive=False,
                          log_file=tmp_path / "server.log")


async def test_no_pod_is_rented_without_the_users_consent(rp: RunPodStandIn, tmp_path: Path,
                                                          tiny_model_dir: Path) -> None:
    from finetune_mcp.testing import write_dataset

    args = {"model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=8)),
            "target": "runpod", "max_steps": 2, "max_seq_length": 128}

    async def declines(message, response_type, params, context):
        from fastmcp.client.elicitation import ElicitResult

        return ElicitResult(action="decline")

    async with Client(server(tmp_path, rp), timeout=120) as client:  # cannot ask: confirm=true is needed
        refused = await client.call_tool("start_finetune", args, raise_on_error=False)
        assert refused.is_error and "confirm=true" in refused.content[0].text
        assert "RTX 3090" in refused.content[0].text and "$0.22/h" in refused.content[0].text
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    async with Client(server(tmp_path, rp), timeout=120, elicitation_handler=declines) as client:
        declined = await client.call_tool("start_finetune", {**args, "confirm": True}, raise_on_error=False)
        assert declined.is_error and "declined" in declined.content[0].text
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    assert not rp.ops("podFindAndDeployOnDemand") and not rp.pods


async def test_a_hostile_pod_cannot_replace_the_local_spec_events_or_sidecar(rp: RunPodStandIn, tmp_path: Path,
                                                                              tiny_model_dir: Path) -> None:
    """Issue 16, finding 5: the pod's archive carries ./spec.json, adapter/../events.jsonl and
    ./.runpod.json; the whole archive is refused, the job fails saying so, the pod is terminated."""
    from finetune_mcp.testing import write_dataset

    from .hostile_worker import HOSTILE, hostile_install_command

    install = hostile_install_command(tmp_path / "hostile-bin")
    args = {"model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=8)),
            "target": "runpod", "max_steps": 2, "max_seq_length": 128, "confirm": True, "max_cost_usd": 1.0}
    async with Client(server(tmp_path, rp, FINETUNE_MCP_RUNPOD_INSTALL=install), timeout=120) as client:
        started = (await client.call_tool("start_finetune", args)).structured_content
        assert started["consent"]["how"] == "confirm" and started["consent"]["terms"]["max_cost_usd"] == 1.0
        for _ in range(6):
            job = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 30})
                   ).structured_content
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
    assert job["state"] == "failed" and "artifacts of pod" in job["error"] and "were refused" in job["error"]
    assert "spec.json" in job["error"]
    run = Path(job["run_dir"])
    for name in ("spec.json", "events.jsonl", ".runpod.json"):
        assert HOSTILE.strip() not in (run / name).read_bytes(), name
    assert json.loads((run / "spec.json").read_text())["max_steps"] == 2  # still the spec the server wrote
    assert not (run / "adapter").exists()  # nothing of the refused archive landed
    assert rp.pods and not rp.running_pods()
