"""`finetune-mcp train/preview --method ...` with the preference / RL methods, as a user runs them:
the option takes every registered method (its help lists them), a YAML config carries the
method's settings block, and an unknown method is refused with the list."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from finetune_mcp.cli import app
from finetune_mcp.config.methods import METHOD_NAMES
from finetune_mcp.runs.rundir import RunDirectory

runner = CliRunner()


def _pairs(path, n: int = 12):
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"prompt": f"{a}+{b}=", "chosen": f" {a + b}", "rejected": f" {a + b + 1}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_help_lists_every_method() -> None:
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert all(name in result.output for name in METHOD_NAMES)


def test_unknown_method_is_refused_with_the_list(tmp_path) -> None:
    result = runner.invoke(app, ["preview", "--model", "m", "--dataset", str(_pairs(tmp_path / "p.jsonl")),
                                 "--method", "ppo"])
    assert result.exit_code != 0
    assert "unknown training method 'ppo'" in result.output and "grpo" in result.output


def test_preview_method_dpo_renders_pairs(tiny_model_dir, tmp_path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl")
    result = runner.invoke(app, ["preview", "--model", str(tiny_model_dir), "--dataset", str(data), "--method", "dpo",
                                 "--max-steps", "2", "--examples", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])["report"]
    assert report["task"] == "dpo" and [ex["side"] for ex in report["examples"]] == ["chosen", "rejected"]


@pytest.mark.slow
def test_train_method_orpo_with_a_yaml_settings_block(tiny_model_dir, tmp_path) -> None:
    config = tmp_path / "orpo.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndataset: {_pairs(tmp_path / 'pairs.jsonl')}\norpo:\n  beta: 0.2\n"
                      "logging_steps: 1\nvalidation_split: 0.25\n")
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--method", "orpo", "--max-steps", "2",
                                 "--batch-size", "4", "--grad-accum", "1", "--max-seq-length", "32",
                                 "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outcome = json.loads(RunDirectory(run_dir).result.read_text())
    spec = json.loads(RunDirectory(run_dir).spec.read_text())
    assert outcome["method"] == "orpo" and spec["orpo"]["beta"] == 0.2 and outcome["global_step"] == 2
    assert "train/log_odds_ratio" in outcome["metrics"]
