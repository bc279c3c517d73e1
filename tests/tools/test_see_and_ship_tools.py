"""tensorboard_screenshot, generate_model_card and deploy_to_hf through an MCP client on the real app
(its lifespan: JobManager on SQLite, the shared TensorBoard server), with finished tiny runs registered
as jobs. The whole flow over stdio, from start_finetune on, is in test_see_and_ship_stdio.py."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastmcp import Client
from PIL import Image

from finetune_mcp.jobs.store import Job, JobState, JobStore
from finetune_mcp.report.screenshot import find_chromium
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import PLAIN_ID, WEIGHTED_ID, TinyRuns, copy_run, tiny_runs

pytestmark = pytest.mark.slow
FAILED_ID = "ft-00000000fa11"
ENHANCE_ID = "ft-0000000e0a11"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def _register(store: JobStore, job_id: str, run: RunDirectory, state: JobState, kind: str | None = None) -> None:
    now = time.time()
    config = run.read_json(run.spec) | ({"kind": kind} if kind else {})
    store.insert(Job(id=job_id, state=JobState.QUEUED, target="local", backend="local", device="cpu", slot="cpu",
                     placement={}, config=config, run_dir=str(run.root), created_at=now, updated_at=now))
    if state is JobState.SUCCEEDED:
        store.transition(job_id, JobState.RUNNING)
    store.transition(job_id, state, reason="registered by the test")


@pytest.fixture
def app(runs: TinyRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real app on a fresh home holding two succeeded jobs (A/B) and a failed one."""
    from finetune_mcp.server.app import create_app

    home = tmp_path / "home"
    monkeypatch.setenv("FINETUNE_MCP_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    store = JobStore(home / "jobs.db")
    for job_id, run, state in ((WEIGHTED_ID, runs.weighted, JobState.SUCCEEDED),
                               (PLAIN_ID, runs.plain, JobState.SUCCEEDED),
                               (FAILED_ID, runs.plain, JobState.FAILED)):
        _register(store, job_id, copy_run(run, tmp_path / job_id), state)
    _register(store, ENHANCE_ID, copy_run(runs.plain, tmp_path / ENHANCE_ID), JobState.SUCCEEDED, kind="enhance")
    store.close()
    return create_app()


async def test_tools_are_listed_with_honest_annotations(app) -> None:
    async with Client(app) as client:
        tools = {t.name: t for t in await client.list_tools()}
    shot, card, deploy = tools["tensorboard_screenshot"], tools["generate_model_card"], tools["deploy_to_hf"]
    assert shot.input_schema["properties"]["view"]["enum"] == ["scalars", "histograms"]
    assert card.annotations.idempotent_hint is True and card.annotations.destructive_hint is False
    assert deploy.annotations.destructive_hint is True and deploy.annotations.open_world_hint is True
    token = deploy.input_schema["properties"]["token"]["anyOf"][0]
    assert token.get("writeOnly") is True and token.get("format") == "password"
    assert "ONLY when the user explicitly asks" in deploy.description


@pytest.mark.skipif(find_chromium() is None, reason="needs Debian chromium (make browser)")
async def test_screenshot_is_image_content_of_tensorboard_and_the_server_stops_with_the_app(app) -> None:
    async with Client(app) as client:
        result = await client.call_tool("tensorboard_screenshot",
                                        {"job_id": WEIGHTED_ID, "compare_with": [PLAIN_ID]})
        again = await client.call_tool("tensorboard_screenshot", {"job_id": WEIGHTED_ID, "view": "histograms"})
    image, caption = result.content
    assert image.type == "image" and image.mime_type == "image/png"
    png = Image.open(io.BytesIO(base64.b64decode(image.data)))
    data = result.structured_content
    assert png.size == (data["width"], data["height"]) and Path(data["path"]).is_file()
    assert data["renderer"] == "tensorboard" and data["runs"] == [WEIGHTED_ID, PLAIN_ID]
    assert "TensorBoard scalars" in caption.text and data["path"] in caption.text
    assert again.structured_content["tags"] == ["entropy/token_entropy"]
    url = again.structured_content["url"]
    assert url.split("?")[0] == data["url"].split("?")[0]  # one TensorBoard, reused
    with pytest.raises(urllib.error.URLError):  # and stopped with the server
        urllib.request.urlopen(url.split("?")[0] + "data/environment", timeout=2)


async def test_model_card_tool_writes_the_card_with_a_comparison(app) -> None:
    async with Client(app) as client:
        result = await client.call_tool("generate_model_card", {"job_id": WEIGHTED_ID, "compare_with": PLAIN_ID})
    data = result.structured_content
    readme = Path(data["path"])
    assert readme.name == "README.md" and readme.read_text() == data["markdown"]
    assert data["size_bytes"] == len(data["markdown"].encode()) and len(data["plots"]) == 4
    assert data["markdown"].startswith("---\n") and f"## Comparison with `{PLAIN_ID}`" in data["markdown"]


async def test_domain_errors_are_tool_errors_that_say_what_to_fix(app) -> None:
    async with Client(app) as client:
        async def error(tool: str, args: dict) -> str:
            result = await client.call_tool(tool, args, raise_on_error=False)
            assert result.is_error, (tool, args)
            return result.content[0].text

        assert "is failed; a model card needs a succeeded job" in await error("generate_model_card",
                                                                                {"job_id": FAILED_ID})
        assert "needs a succeeded job" in await error("generate_model_card",
                                                      {"job_id": WEIGHTED_ID, "compare_with": FAILED_ID})
        assert "list_jobs" in await error("tensorboard_screenshot", {"job_id": "ft-ffffffffffff"})
        assert "not a job id" in await error("tensorboard_screenshot", {"job_id": "../../etc"})
        assert "pattern" in await error("tensorboard_screenshot", {"job_id": WEIGHTED_ID, "tags": ["a b;"]})
        assert "invalid repo id" in await error("deploy_to_hf", {"job_id": WEIGHTED_ID, "repo_id": "al ice/x!"})
        assert "a deployment needs a succeeded job" in await error("deploy_to_hf",
                                                                   {"job_id": FAILED_ID, "repo_id": "alice/x"})
        assert "set HF_TOKEN" in await error("deploy_to_hf", {"job_id": WEIGHTED_ID, "repo_id": "alice/x"})
        assert "a model card needs a training job" in await error("generate_model_card", {"job_id": ENHANCE_ID})
        assert "a deployment needs a training job" in await error(
            "deploy_to_hf", {"job_id": ENHANCE_ID, "repo_id": "alice/x"})


HUB_TOKEN = "hf_ConsentFlowSecret0123456789ab"


@pytest.fixture
def hub(app, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    from standins.hub import HubStandIn

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks LFS
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    with HubStandIn({HUB_TOKEN: "alice"}) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


class User:
    """The person behind an elicitation-capable client: answers the consent form, remembers what it saw."""

    def __init__(self, agree: bool | None) -> None:
        self.agree, self.asked = agree, []

    async def __call__(self, message, response_type, params, context):
        from fastmcp.client.elicitation import ElicitResult

        self.asked.append((message, params.requested_schema))
        if self.agree is None:
            return ElicitResult(action="decline")
        return response_type(publish=self.agree)


DEPLOY = {"job_id": WEIGHTED_ID, "repo_id": "alice/consented"}


async def test_deploy_without_a_way_to_ask_the_user_needs_confirm(app, hub) -> None:
    """Issue 16: an existing client (no elicitation, no confirm) gets a tool error saying to pass
    confirm=true after asking the user, with the terms to show; nothing reaches the Hub."""
    async with Client(app) as client:
        refused = await client.call_tool("deploy_to_hf", DEPLOY, raise_on_error=False)
        assert refused.is_error and "confirm=true" in refused.content[0].text
        assert "alice/consented" in refused.content[0].text and "private" in refused.content[0].text
        assert not [r for r in hub.requests if r["method"] != "GET"] and "alice/consented" not in hub.repos
        done = await client.call_tool("deploy_to_hf", {**DEPLOY, "confirm": True})
    consent = done.structured_content["consent"]
    assert consent["how"] == "confirm" and consent["terms"]["repo_id"] == "alice/consented"
    assert "adapter_model.safetensors" in [f["path"] for f in consent["terms"]["files"]] and "alice/consented" in hub.repos


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 (input-required rounds) and 2025-11-25 (ctx.elicit)
async def test_deploy_asks_the_user_through_elicitation(app, hub, mode: str) -> None:
    declining, agreeing = User(agree=None), User(agree=True)
    async with Client(app, elicitation_handler=declining, mode=mode) as client:
        refused = await client.call_tool("deploy_to_hf", {**DEPLOY, "confirm": True}, raise_on_error=False)
    assert refused.is_error and "declined" in refused.content[0].text and "alice/consented" not in hub.repos
    async with Client(app, elicitation_handler=User(agree=False), mode=mode) as client:
        unticked = await client.call_tool("deploy_to_hf", DEPLOY, raise_on_error=False)
    assert unticked.is_error and "did not agree" in unticked.content[0].text and "alice/consented" not in hub.repos
    async with Client(app, elicitation_handler=agreeing, mode=mode) as client:
        done = await client.call_tool("deploy_to_hf", {**DEPLOY, "private": False})
    [(message, schema)] = agreeing.asked
    assert "alice/consented" in message and "PUBLIC" in message and "adapter_model.safetensors" in message
    assert schema["properties"]["publish"]["type"] == "boolean"
    result = done.structured_content
    assert result["consent"]["how"] == "elicitation" and result["consent"]["terms"]["private"] is False
    assert hub.repos["alice/consented"].private is False
    assert HUB_TOKEN not in json.dumps(result) and HUB_TOKEN not in message
