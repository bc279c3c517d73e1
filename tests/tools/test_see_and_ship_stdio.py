"""The issue's "done when", end to end over stdio: a real `finetune-mcp serve`, a real MCP client, two
real tiny jobs (entropy weighting on / off) trained by workers; then a TensorBoard screenshot an agent
can show, a model card comparing the two, and a deploy the user agrees to (MCP elicitation) that lands
on the Hub stand-in — with the token never in a tool result, the server's log or the run directories."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from PIL import Image

from finetune_mcp.report.screenshot import find_chromium
from standins.finished_runs import TinyRuns, tiny_config, tiny_runs
from standins.hub import HubStandIn

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="needs Debian chromium (make browser)")]
TOKEN = "hf_StdioFlowSecret9876543210abcdef"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)  # only its model and dataset are used here


async def test_train_then_screenshot_card_and_deploy_over_stdio(runs: TinyRuns, tmp_path: Path) -> None:
    home, stderr_log = tmp_path / "home", tmp_path / "server-stderr.log"
    with HubStandIn({TOKEN: "alice"}) as hub:
        env = {
            **os.environ, "FINETUNE_MCP_HOME": str(home), "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",  # the stand-in on 127.0.0.1 speaks LFS, not Xet
            "FINETUNE_MCP_MAX_CPU_JOBS": "2", "OMP_NUM_THREADS": "1",
        }
        transport = StdioTransport(sys.executable, ["-m", "finetune_mcp.cli", "serve"], env=env,
                                   keep_alive=False, log_file=stderr_log)
        outputs: list[str] = []
        asked: list[str] = []

        async def user(message, response_type, params, context):  # the user agrees to the upload shown
            asked.append(message)
            return response_type(publish=True)

        async with Client(transport, timeout=300, elicitation_handler=user) as client:
            async def call(tool: str, args: dict):
                result = await client.call_tool(tool, args)
                outputs.append(repr(result.content) + repr(result.structured_content))
                return result

            ids = {}
            for entropy in (True, False):
                overrides = {k: v for k, v in tiny_config(runs.model, runs.dataset, entropy=entropy).items()
                             if k not in ("model", "dataset", "enable_entropy_weighting")}
                started = await call("start_finetune", {"model": str(runs.model), "dataset": str(runs.dataset),
                                                        "entropy_weighting": entropy, "target": "local",
                                                        "config_overrides": overrides})
                ids[entropy] = started.structured_content["job_id"]
            for job_id in ids.values():
                state = None
                for _ in range(5):
                    state = (await call("wait_for_job", {"job_id": job_id, "timeout_s": 120})).structured_content
                    if state["state"] in ("succeeded", "failed", "cancelled"):
                        break
                assert state["state"] == "succeeded", state

            weighted, plain = ids[True], ids[False]
            shot = await call("tensorboard_screenshot", {"job_id": weighted, "compare_with": [plain]})
            card = await call("generate_model_card", {"job_id": weighted, "compare_with": plain})
            deployed = await call("deploy_to_hf", {"job_id": weighted, "repo_id": "alice/tiny-entropy-ab"})

    image = shot.content[0]
    assert image.mime_type == "image/png" and shot.structured_content["renderer"] == "tensorboard"
    assert Image.open(io.BytesIO(base64.b64decode(image.data))).size[0] >= 1200
    assert shot.structured_content["runs"] == [weighted, plain]

    markdown = card.structured_content["markdown"]
    assert f"## Comparison with `{plain}`" in markdown and "## Entropy weighting" in markdown

    result = deployed.structured_content
    assert len(asked) == 1 and "alice/tiny-entropy-ab" in asked[0] and "private" in asked[0]
    assert result["consent"]["how"] == "elicitation"
    repo = hub.repos["alice/tiny-entropy-ab"]
    assert repo.private and result["private"] is True and result["commit_oid"] == repo.commits[-1]["oid"]
    run_dir = Path(card.structured_content["path"]).parent.parent
    assert repo.files["adapter_model.safetensors"] == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert repo.files["README.md"] == (run_dir / "card" / "README.md").read_bytes()
    assert "'alice/tiny-entropy-ab'" in repo.files["README.md"].decode()  # snippets point at the repo

    # the token: in no tool output, not in the server's log, not in any file the server or workers wrote
    assert not any(TOKEN in text for text in outputs)
    assert TOKEN not in stderr_log.read_text()
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
