"""`finetune-mcp demo`, the README's first command, end to end through the CLI: entropy weighting
off vs on over 3 seeds, with the spread, the paired interval and the verdict."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finetune_mcp.cli import app

RUNS = ["standard-s3407", "entropy-s3407", "standard-s3408", "entropy-s3408", "standard-s3409", "entropy-s3409"]


@pytest.mark.slow
def test_demo_runs_three_seeds_of_each_arm_and_reports_what_they_support(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["demo", "--tiny"])
    assert result.exit_code == 0, result.output
    [experiment] = list((tmp_path / "runs").iterdir())
    table = json.loads((experiment / "experiment" / "table.json").read_text())
    base = json.loads((experiment / "experiment" / "base.json").read_text())
    assert (table["status"], table["runs_finished"], [r["name"] for r in table["runs"]]) == ("succeeded", 6, RUNS)
    assert table["heldout"]["rows"] == table["heldout"]["generated"] == 60
    for arm in ("standard", "entropy"):
        match = table["summary"]["normalized_match"][arm]
        assert match["n"] == 3 and match["std"] is not None
        assert match["mean"] >= base["normalized_match"] + 0.3  # it learned the held-out paraphrases
    primary = next(c for c in table["comparisons"] if c["metric"] == "normalized_match")
    assert primary["n"] == 3 and primary["min_p_value"] == 0.25 and primary["supported"] == "none"  # 3 seeds can't
    assert table["verdict"] in " ".join(result.output.split())
    assert "untrained base" in result.output and "tensorboard --logdir_spec" in result.output
    for name in RUNS:
        run = experiment / "runs" / name
        assert (run / "adapter" / "adapter_model.safetensors").exists()
        metrics = json.loads((run / "result.json").read_text())["metrics"]
        assert (metrics["train/entropy_weight_mean"] > 1.0) == name.startswith("entropy")
    assert (experiment / "experiment" / "plot.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_real_demo_shows_base_and_tuned_answers_with_their_exact_match(tmp_path, monkeypatch, smollm2_dir):
    from finetune_mcp.testing.real_model import default_cache_home, share_import

    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    share_import(default_cache_home(), tmp_path)  # the session's import, not a second conversion
    result = CliRunner().invoke(app, ["demo", "--real", "--steps", "2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 GGUF, weights dequantised" in text
    assert "exact match on the 12 held-out questions (5 shown): base 0% →" in text  # the base answers in sentences
    [run] = list((tmp_path / "runs").iterdir())
    scored = json.loads((run / "demo.json").read_text())
    assert scored["base"]["exact_match"] == 0.0 and len(scored["answers"]) == 5
    assert (run / "adapter" / "adapter_model.safetensors").exists()
