"""deploy_to_hf's trust boundaries over stdio (issue 26 bugs 3 and 4), a real client against the real
server and the Hub stand-in: the consent terms list every file that will be uploaded, GGUF included,
with sizes and the words "merged weights"; and export/exports.json is only a list of names: a record
that points outside the run's export/ folder stops the deploy before anything is uploaded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from finetune_mcp.jobs.store import Job, JobState
from finetune_mcp.runs.rundir import RunDirectory
from server.conftest import ServerHome
from standins.finished_runs import WEIGHTED_ID, TinyRuns, copy_run, tiny_runs
from standins.hub import HubStandIn

pytestmark = pytest.mark.slow  # trains the shared tiny runs once per session
TOKEN = "hf_DeployTrustSecret0123456789ab"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn({TOKEN: "alice"}) as stand_in:
        yield stand_in


@pytest.fixture
def deploy_server(server_home: Callable[..., ServerHome], hub: HubStandIn, runs: TinyRuns,
                  tmp_path: Path) -> tuple[ServerHome, RunDirectory]:
    """A server whose home holds one succeeded training job (a copy of the shared weighted run)."""
    server = server_home(HF_TOKEN=TOKEN, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
    run = copy_run(runs.weighted, server.home / "runs")
    store = server.store()
    now = time.time()
    store.insert(Job(id=WEIGHTED_ID, state=JobState.QUEUED, target="local", backend="local", device="cpu", slot="cpu",
                     placement={}, config=run.read_json(run.spec), run_dir=str(run.root), created_at=now,
                     updated_at=now))
    store.transition(WEIGHTED_ID, JobState.RUNNING)
    store.transition(WEIGHTED_ID, JobState.SUCCEEDED, reason="registered by the test")
    store.close()
    return server, run


def write_export(run: RunDirectory, gguf: Path | None = None, modelfile: Path | None = None) -> tuple[Path, Path]:
    """An export record as export_model writes it; by default with its files in export/."""
    run.export.mkdir(exist_ok=True)
    if gguf is None:
        gguf = run.export / "tiny-model-q8_0.gguf"
        gguf.write_bytes(b"GGUF" + bytes(250_000))
    if modelfile is None:
        modelfile = run.export / "tiny-model-q8_0.Modelfile"
        modelfile.write_text("FROM ./tiny-model-q8_0.gguf\n")
    entry = {"quantization": "q8_0", "gguf": str(gguf), "modelfile": str(modelfile), "size_bytes": 250_004,
             "verification": {"prompts": 2, "greedy_identical": 2}, "commands": {}, "time": time.time()}
    run.exports_record.write_text(json.dumps([entry]))
    return gguf, modelfile


class User:
    """Answers the consent form (legacy era: ctx.elicit), remembering what it was shown."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, message, response_type, params, context):
        self.asked.append(message)
        return response_type(publish=True)


async def test_consent_lists_the_gguf_and_modelfile_with_sizes_and_says_merged_weights(deploy_server,
                                                                                      hub: HubStandIn) -> None:
    """Bug 3: with include_gguf=True the user agreed to a list without the GGUF and Modelfile that were
    then uploaded (the merged full weights); the terms now hold every file, its size, and include_gguf."""
    server, run = deploy_server
    write_export(run)
    user = User()
    async with server.client(mode="legacy", elicitation_handler=user) as client:
        result = await client.call_tool("deploy_to_hf", {"job_id": WEIGHTED_ID, "repo_id": "alice/with-gguf",
                                                         "include_gguf": True})
    [message] = user.asked
    for name in ("tiny-model-q8_0.gguf (0.3 MB)", "tiny-model-q8_0.Modelfile (28 bytes)", "adapter_model.safetensors ("):
        assert name in message, message
    assert "MERGED WEIGHTS" in message
    terms = result.structured_content["consent"]["terms"]
    assert terms["include_gguf"] is True
    uploaded = set(hub.repos["alice/with-gguf"].files)
    listed = {f["path"] for f in terms["files"]}
    assert {"tiny-model-q8_0.gguf", "tiny-model-q8_0.Modelfile"} <= uploaded
    assert {p for p in uploaded if not p.startswith("plots/")} <= listed, (uploaded, listed)
    assert all(f["bytes"] is not None for f in terms["files"] if f["path"] in uploaded and f["path"] != "README.md")


async def test_a_forged_export_record_sends_nothing(deploy_server, hub: HubStandIn, tmp_path: Path) -> None:
    """Bug 4: deploy uploaded whatever export/exports.json named; a forged record sent a file outside the
    roots and /etc/hostname to the Hub. Each path must be a regular file in the run's export/."""
    server, run = deploy_server
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("NOT-FOR-THE-HUB\n")
    link = run.export / "linked.gguf"
    cases = [(outside, None), (Path("/etc/hostname"), None), (None, Path("/etc/hostname")), (link, None)]
    async with server.client() as client:
        for gguf, modelfile in cases:
            if gguf == link:
                link.parent.mkdir(exist_ok=True)
                link.symlink_to(outside)
            write_export(run, gguf, modelfile)
            result = await client.call_tool("deploy_to_hf", {"job_id": WEIGHTED_ID, "repo_id": "alice/forged",
                                                             "include_gguf": True, "confirm": True},
                                            raise_on_error=False)
            assert result.is_error, (gguf, modelfile)
            text = result.content[0].text
            assert "not a regular file in" in text and "export_model" in text, text
            assert "NOT-FOR-THE-HUB" not in text
    assert "alice/forged" not in hub.repos
    assert not [r for r in hub.requests if r[0] not in ("GET", "HEAD")]


async def test_an_invalid_consent_answer_in_the_2025_era_says_so_plainly(deploy_server, hub: HubStandIn) -> None:
    """Weak point: a 2025-11-25 client's answer that does not fit the form came back as pydantic's text."""
    server, _ = deploy_server

    async def confused_user(message, response_type, params, context):
        return {"publish": ["not", "a", "yes/no"]}

    async with server.client(mode="legacy", elicitation_handler=confused_user) as client:
        result = await client.call_tool("deploy_to_hf", {"job_id": WEIGHTED_ID, "repo_id": "alice/unclear"},
                                        raise_on_error=False)
    text = result.content[0].text
    assert result.is_error and "the answer to the consent form for deploying" in text and "nothing was done" in text, text
    assert "validation error" not in text.lower() and "alice/unclear" not in hub.repos
