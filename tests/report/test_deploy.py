"""Deploy with the real `huggingface_hub` client against the Hub stand-in (tests/standins/hub.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from safetensors import safe_open

from finetune_mcp.errors import DeployError, JobError
from finetune_mcp.report.deploy import deploy_run
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import TinyRuns, copy_run, tiny_runs
from standins.hub import HubStandIn

pytestmark = pytest.mark.slow
TOKEN = "hf_StandInSecretToken0123456789"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    # Xet uploads need Xet's CAS service, which the stand-in does not serve; LFS is what it checks.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    # tests/conftest.py sets HF_HUB_OFFLINE so nothing reaches the real Hub; this one talks to 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    with HubStandIn({TOKEN: "alice", "hf_BobsToken": "bob"}) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _assert_secret_nowhere(run: RunDirectory, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in _files_under(run.root):
        assert TOKEN.encode() not in path.read_bytes(), path


def test_adapter_card_and_metrics_arrive_byte_for_byte_in_one_private_commit(
    runs: TinyRuns, hub: HubStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = copy_run(runs.weighted, tmp_path)
    result = deploy_run(run, "alice/tiny-entropy", token=TOKEN, compare_with=runs.plain)

    repo = hub.repos["alice/tiny-entropy"]
    assert repo.private and result.private is True
    assert len(repo.commits) == 1 and repo.commits[0]["oid"] == result.commit_oid
    assert result.url == f"{hub.url}/alice/tiny-entropy"
    expected = {
        **{p.name: p for p in run.adapter.iterdir() if p.name != "README.md"},
        "README.md": run.card / "README.md",
        **{f"plots/{p.name}": p for p in (run.card / "plots").iterdir()},
        "training/result.json": run.result, "training/events.jsonl": run.events,
        "training/entropy_eval.json": run.entropy / "eval.json",
    }
    assert set(repo.files) == set(expected) == set(result.files)
    for name, local in expected.items():
        assert repo.files[name] == local.read_bytes(), name
    # the adapter weights went through the LFS batch API, sha256-checked
    weights = (run.adapter / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() in hub.lfs_objects
    card = ModelCard(repo.files["README.md"].decode())
    assert "plots/comparison.png" in card.text and "'alice/tiny-entropy'" in card.text
    record = json.loads((run.root / "deployments.json").read_text())
    assert record[-1]["commit_oid"] == result.commit_oid
    _assert_secret_nowhere(run, repr(result), json.dumps(result.to_dict()), caplog.text)


def test_public_repo_and_a_second_deploy_to_the_same_repo(runs: TinyRuns, hub: HubStandIn, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(runs.plain, tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the token from the environment
    first = deploy_run(run, "tiny-plain", private=False)  # a bare name goes under the token's user
    second = deploy_run(run, "alice/tiny-plain", private=False)
    repo = hub.repos["alice/tiny-plain"]
    assert first.repo_id == "alice/tiny-plain" and not repo.private and first.private is False
    assert [c["oid"] for c in repo.commits] == [first.commit_oid, second.commit_oid]


def test_errors_say_what_to_fix_and_nothing_is_committed(runs: TinyRuns, hub: HubStandIn, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    run = copy_run(runs.weighted, tmp_path)
    with pytest.raises(DeployError, match="no Hugging Face token: set HF_TOKEN"):
        deploy_run(run, "alice/x")
    with pytest.raises(DeployError, match="invalid repo id 'alice/not ok!'"):
        deploy_run(run, "alice/not ok!", token=TOKEN)
    with pytest.raises(DeployError, match=r"refused the token \(401"):
        deploy_run(run, "alice/x", token="hf_wrong")

    hub.add_repo("bob/taken", private=False)
    with pytest.raises(DeployError, match=r"may not write to bob/taken \(403.*nothing was committed") as denied:
        deploy_run(run, "bob/taken", token=TOKEN)
    assert hub.repos["bob/taken"].commits == []

    hub.fail("commit", 500)
    with pytest.raises(DeployError, match=r"failed with 500.*repo was created but nothing was committed") as broken:
        deploy_run(run, "alice/flaky", token=TOKEN)
    assert hub.repos["alice/flaky"].commits == [] and hub.repos["alice/flaky"].files == {}

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DeployError, match="unset HF_HUB_OFFLINE"):
        deploy_run(run, "alice/x", token=TOKEN)
    unfinished = RunDirectory(tmp_path / "ft-00000000dead").create()
    with pytest.raises(JobError, match="has not finished"):
        deploy_run(unfinished, "alice/x", token=TOKEN)
    _assert_secret_nowhere(run, str(denied.value), str(broken.value))


def test_network_failure(runs: TinyRuns, hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DeployError, match=r"cannot reach the Hub at .*nothing was committed.*HF_ENDPOINT") as err:
        deploy_run(copy_run(runs.weighted, tmp_path), "alice/x", token=TOKEN)
    assert TOKEN not in str(err.value)


def test_merge_uploads_a_merged_16bit_model(runs: TinyRuns, hub: HubStandIn, tmp_path: Path) -> None:
    run = copy_run(runs.weighted, tmp_path)
    result = deploy_run(run, "alice/tiny-merged", token=TOKEN, merge=True)
    repo = hub.repos["alice/tiny-merged"]
    assert result.merged and "config.json" in repo.files and "adapter_config.json" not in repo.files
    weights = [name for name in repo.files if name.endswith(".safetensors")]
    assert weights and all(repo.files[n] == (run.merged / n).read_bytes() for n in weights)
    with safe_open(str(run.merged / weights[0]), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    assert dtypes == {"BF16"} and json.loads((run.merged / "config.json").read_text())["dtype"] == "bfloat16"
    # the merged model equals base + LoRA delta: logits match the adapter on top of the base
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    merged = AutoModelForCausalLM.from_pretrained(str(run.merged), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(runs.model)), str(run.adapter))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=0.05, rtol=0.02)
