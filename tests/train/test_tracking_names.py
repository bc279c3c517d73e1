"""Run names in the trackers: the given one, else the job id; an experiment's run names its arm and seed."""

from __future__ import annotations

from pathlib import Path

from finetune_mcp.config import build_config
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.train.tracking import run_name, tracker_arguments


def test_run_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FINETUNE_MCP_JOB_ID", raising=False)
    config = build_config({"model": "m", "dataset": "d.jsonl"})
    job = RunDirectory(tmp_path / "home" / "runs" / "ft-0123456789ab").create()
    assert run_name(config, job) == "ft-0123456789ab"
    experiment = RunDirectory(tmp_path / "home" / "runs" / "ft-aaaaaaaaaaaa").create()
    experiment.write_json(experiment.spec, {"kind": "experiment"})
    arm = RunDirectory(experiment.runs / "entropy-s1").create()
    assert run_name(config, arm) == "ft-aaaaaaaaaaaa-entropy-s1"
    monkeypatch.setenv("FINETUNE_MCP_JOB_ID", "ft-aaaaaaaaaaaa")  # the experiment's worker
    assert run_name(config, arm) == "ft-aaaaaaaaaaaa-entropy-s1"
    assert run_name(config.model_copy(update={"run_name": "mine"}), arm) == "mine-entropy-s1"
    assert run_name(config.model_copy(update={"run_name": "mine"}), job) == "mine"


def test_tensorboard_alone_reports_to_no_integration(tmp_path: Path) -> None:
    config = build_config({"model": "m", "dataset": "d.jsonl", "report_to": "none"})
    run = RunDirectory(tmp_path / "run").create()
    assert tracker_arguments(config, run) == {"report_to": "none"}
    assert not (run.root / "tracking").exists()
