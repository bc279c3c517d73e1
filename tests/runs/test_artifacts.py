"""The run-artifacts reader: a run's adapter, merged model, exports and checkpoints, and the errors that
say what is missing, on run directories laid out as the trainer and export_model lay them out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.errors import JobError
from finetune_mcp.runs.artifacts import RunArtifacts, export_tokenizer, parse_checkpoint_ref
from finetune_mcp.runs.rundir import RunDirectory

JOB = "ft-0123456789ab"


def _checkpoint(run: RunDirectory, step: int, losses: list[tuple[str, float]]) -> Path:
    folder = run.checkpoints / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    history = [{"step": i + 1, key: value} for i, (key, value) in enumerate(losses)]
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 4,
                                                           "log_history": history}))
    return folder


@pytest.fixture
def run(tmp_path: Path) -> RunDirectory:
    run = RunDirectory(tmp_path / JOB).create()
    _checkpoint(run, 10, [("loss", 2.5), ("loss", 2.0)])
    _checkpoint(run, 2, [("loss", 3.0)])
    _checkpoint(run, 6, [("loss", 2.4), ("eval_loss", 2.6), ("loss", 2.2)])
    (run.checkpoints / "checkpoint-x").mkdir()  # not a step: ignored
    (run.checkpoints / "transfer.json").write_text("{}")
    return run


def test_checkpoints_are_listed_by_step_with_their_last_losses(run: RunDirectory) -> None:
    kept = RunArtifacts(run).checkpoints()
    assert [c.step for c in kept] == [2, 6, 10]
    assert (kept[1].train_loss, kept[1].eval_loss, kept[1].epoch) == (2.2, 2.6, 1.5)
    assert (kept[2].train_loss, kept[2].eval_loss) == (2.0, None)
    assert kept[0].time is not None and kept[0].to_dict()["path"] == str(run.checkpoints / "checkpoint-2")


def test_a_checkpoint_by_step_or_latest_and_the_errors_that_list_what_there_is(run: RunDirectory) -> None:
    artifacts = RunArtifacts(run, JOB)
    assert artifacts.checkpoint("latest").step == 10 and artifacts.checkpoint(6).step == 6
    assert artifacts.checkpoint("6").step == 6 and artifacts.adapter(2) == run.checkpoints / "checkpoint-2"
    with pytest.raises(JobError, match=f"job {JOB} has no checkpoint at step 7; it keeps steps 2, 6, 10"):
        artifacts.checkpoint(7)
    with pytest.raises(JobError, match="'best' is not a step number or 'latest'"):
        artifacts.checkpoint("best")
    with pytest.raises(JobError, match=r"kept no checkpoints .* save_steps=N"):
        RunArtifacts(RunDirectory(run.root.parent / "empty")).checkpoint("latest")


def test_an_unreadable_trainer_state_leaves_a_checkpoint_without_losses(run: RunDirectory) -> None:
    (run.checkpoints / "checkpoint-2" / "trainer_state.json").write_text("{torn")
    first = RunArtifacts(run).checkpoints()[0]
    assert (first.step, first.train_loss, first.eval_loss, first.time) == (2, None, None, None)


def test_adapter_merged_and_their_fixes(run: RunDirectory) -> None:
    artifacts = RunArtifacts(run, JOB)
    with pytest.raises(JobError, match=r"left no LoRA adapter .* list_jobs"):
        artifacts.adapter()
    with pytest.raises(JobError, match=r"no merged model .* save_merged=true"):
        artifacts.merged()
    run.adapter.mkdir()
    (run.adapter / "adapter_config.json").write_text("{}")
    run.merged.mkdir()
    (run.merged / "config.json").write_text("{}")
    assert artifacts.adapter() == run.adapter and artifacts.merged() == run.merged
    assert artifacts.merged_folder() == run.merged and artifacts.merged_folder(6) == run.root / "merged-step6"


def test_gguf_exports_of_the_final_adapter_and_of_a_checkpoint(run: RunDirectory) -> None:
    artifacts = RunArtifacts(run, JOB)
    with pytest.raises(JobError, match="no exported GGUF yet; run export_model"):
        artifacts.gguf()
    run.export.mkdir()
    files = {name: run.export / f"{name}.gguf" for name in ("old", "new", "ckpt", "gone")}
    for name in ("old", "new", "ckpt"):
        files[name].write_text("gguf")
    run.write_json(run.exports_record, [
        {"gguf": str(files["old"]), "quantization": "f16", "time": 1},
        {"gguf": str(files["new"]), "quantization": "q8_0", "time": 2},
        {"gguf": str(files["ckpt"]), "quantization": "q8_0", "checkpoint": 6, "time": 3},
        {"gguf": str(files["gone"]), "quantization": "q8_0", "time": 4}])
    assert artifacts.gguf()["gguf"] == str(files["new"]) and artifacts.gguf("F16")["gguf"] == str(files["old"])
    assert artifacts.gguf(checkpoint=6)["gguf"] == str(files["ckpt"])
    with pytest.raises(JobError, match=r"no q4_k_m export \(it has: f16, q8_0\)"):
        artifacts.gguf("q4_k_m")
    with pytest.raises(JobError, match="no exported GGUF of its checkpoint at step 2"):
        artifacts.gguf(checkpoint=2)


def test_a_pods_transfer_record_is_read_with_a_note(run: RunDirectory) -> None:
    record = {"limit_bytes": 2 * 2**20, "brought_back": [{"step": 10, "bytes": 1}], "left_on_pod": [{"step": 6}]}
    run.write_json(run.checkpoints / "transfer.json", record)
    transfer = RunArtifacts(run).checkpoint_transfer()
    assert transfer is not None and transfer["brought_back"] == [{"step": 10, "bytes": 1}]
    assert "1 checkpoint(s) over the 2.0 MB limit stayed on the pod" in transfer["note"]
    assert RunArtifacts(RunDirectory(run.root.parent / "local")).checkpoint_transfer() is None


@pytest.mark.parametrize(("value", "parsed"), [
    ("ft-0123456789ab:40", ("ft-0123456789ab", 40)), ("ft-0123456789ab:latest", ("ft-0123456789ab", "latest")),
    ("ft-0123456789ab", ("ft-0123456789ab", "latest")), ("/runs/ft-0123456789ab/checkpoints/checkpoint-4", None),
    ("ft-0123456789ab:-1", None), ("ft-0123:4", None)])
def test_checkpoint_references(value: str, parsed: tuple | None) -> None:
    assert parse_checkpoint_ref(value) == parsed


def test_an_exported_files_tokenizer_is_its_runs(run: RunDirectory, tmp_path: Path) -> None:
    gguf = run.export / "m-q8_0.gguf"
    run.export.mkdir()
    gguf.write_text("gguf")
    assert export_tokenizer(gguf) is None
    run.merged.mkdir()
    (run.merged / "tokenizer_config.json").write_text("{}")
    assert export_tokenizer(gguf) == run.merged
    run.adapter.mkdir()
    (run.adapter / "tokenizer_config.json").write_text("{}")
    assert export_tokenizer(gguf) == run.adapter  # the training tokenizer first
    loose = tmp_path / "loose" / "x.gguf"
    loose.parent.mkdir()
    (loose.parent / "tokenizer_config.json").write_text("{}")
    assert export_tokenizer(loose) == loose.parent


def test_the_backend_training_really_used_comes_from_the_result(run: RunDirectory) -> None:
    artifacts = RunArtifacts(run, JOB)
    assert artifacts.trained_backend() is None  # no result yet: the reader falls back to the config
    run.write_json(run.result, {"status": "succeeded", "backend": "hf"})  # backend="auto" chose transformers
    assert artifacts.trained_backend() == "hf"
    run.write_json(run.result, {"status": "succeeded", "backend": "something else"})
    assert artifacts.trained_backend() is None
