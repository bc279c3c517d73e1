"""deploy_to_hf(include_gguf=True): the GGUF and its Modelfile in the same single commit as the adapter,
and the card's "Use with llama.cpp / Ollama" section; the real huggingface_hub client against the Hub
stand-in (tests/standins/hub.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_mcp.errors import DeployError
from finetune_mcp.export.spec import ExportSpec
from finetune_mcp.export.workflow import run_export
from finetune_mcp.report.card import render_model_card
from finetune_mcp.report.deploy import deploy_run
from standins.finished_runs import TinyRuns, copy_run
from standins.hub import HubStandIn

pytestmark = pytest.mark.slow
TOKEN = "hf_GgufStandInToken0123456789"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks LFS
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    with HubStandIn({TOKEN: "alice"}) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


def test_the_gguf_and_modelfile_land_in_the_same_commit_with_the_card_section(runs: TinyRuns, hub: HubStandIn,
                                                                               tmp_path: Path) -> None:
    run = copy_run(runs.plain, tmp_path)
    exported = run_export(ExportSpec(source_job=run.root.name, source_run_dir=str(run.root), quantization="q8_0"),
                          tmp_path / "export-job")
    local_card = render_model_card(run)
    assert "## Use with llama.cpp / Ollama" in local_card and exported["gguf"] in local_card

    plain = deploy_run(run, "alice/tiny-adapter-only", token=TOKEN)
    assert not any(f.endswith((".gguf", ".Modelfile")) for f in plain.files)
    assert "llama.cpp / Ollama" not in hub.repos["alice/tiny-adapter-only"].files["README.md"].decode()

    result = deploy_run(run, "alice/tiny-gguf", token=TOKEN, include_gguf=True)
    repo = hub.repos["alice/tiny-gguf"]
    assert len(repo.commits) == 1 and repo.commits[0]["oid"] == result.commit_oid
    gguf, modelfile = Path(exported["gguf"]), Path(exported["modelfile"])
    assert repo.files["tiny-model-q8_0.gguf"] == gguf.read_bytes()
    assert repo.files["tiny-model-q8_0.Modelfile"] == modelfile.read_bytes()
    assert "adapter_model.safetensors" in repo.files  # the adapter too, in that one commit
    card = repo.files["README.md"].decode()
    assert "## Use with llama.cpp / Ollama" in card
    assert "hf download alice/tiny-gguf tiny-model-q8_0.gguf tiny-model-q8_0.Modelfile" in card
    assert "llama-server -hf alice/tiny-gguf:Q8_0 --jinja" in card
    assert str(tmp_path) not in card  # no local paths in a Hub card
    v = exported["verification"]
    assert f"| `tiny-model-q8_0.gguf` | {exported['size_bytes'] / 1e6:.1f} MB | {v['greedy_identical']}/{v['prompts']} |" in card


def test_include_gguf_without_an_export_says_how_to_make_one(runs: TinyRuns, hub: HubStandIn, tmp_path: Path) -> None:
    run = copy_run(runs.plain, tmp_path)
    with pytest.raises(DeployError, match="no GGUF export to include; run export_model"):
        deploy_run(run, "alice/nothing", token=TOKEN, include_gguf=True)
    assert "alice/nothing" not in hub.repos
