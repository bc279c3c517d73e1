"""An experiment of 2 arms × 2 seeds on the offline tiny model, in this process: every run is a full
run directory, all scored on the same held-out rows, progress over all runs, the table with
intervals, the report, the plot, the card section and one chart of every run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.config import Settings
from finetune_mcp.experiment.spec import build_experiment_spec
from finetune_mcp.experiment.start import check_experiment_start
from finetune_mcp.experiment.workflow import experiment_paths, experiment_runs, run_experiment
from finetune_mcp.runs.rundir import RunDirectory

pytestmark = pytest.mark.slow

STEPS = 3
SMALL = {"max_steps": STEPS, "max_seq_length": 64, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
         "validation_split": 0.25, "max_new_tokens": 4, "logging_steps": 1, "save_steps": 1000}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir) -> RunDirectory:
    from finetune_mcp.testing import write_dataset

    root = tmp_path_factory.mktemp("experiment")
    data = write_dataset(root / "train.jsonl", "messages", n=32)
    spec = build_experiment_spec({"model": str(tiny_model_dir), "dataset": str(data), "seeds": 2, **SMALL})
    spec = check_experiment_start(spec, Settings(home=root / "home"))
    run_experiment(spec, root / "exp")
    return RunDirectory(root / "exp")


def test_every_arm_and_seed_is_a_full_run_scored_on_the_same_rows(finished: RunDirectory) -> None:
    table = json.loads(experiment_paths(finished)["table"].read_text())
    assert (table["status"], table["runs_total"], table["runs_finished"]) == ("succeeded", 4, 4)
    assert [r["name"] for r in table["runs"]] == ["standard-s3407", "entropy-s3407", "standard-s3408", "entropy-s3408"]
    fingerprints = set()
    for record in table["runs"]:
        run = RunDirectory(Path(record["run_dir"]))
        assert (run.adapter / "adapter_model.safetensors").is_file() and any(run.tensorboard.iterdir())
        result = json.loads(run.result.read_text())
        assert result["global_step"] == STEPS and result["entropy_weighting"] == (record["arm"] == "entropy")
        # the held-out rows are scored once, by the experiment: the run's Trainer does not evaluate them too,
        # and it trains on the same 24 rows it would with a validation split of its own
        assert not (run.entropy / "eval.json").exists(), "an experiment run evaluated its validation split"
        log = (run.root / "train.log").read_text()
        assert "24 train, 8 validation examples" in log and "the validation split is not evaluated" in log
        heldout = json.loads((run.root / "heldout.json").read_text())
        assert heldout["metrics"] == record["metrics"] and heldout["seed"] == record["seed"]
        fingerprints.add(heldout["heldout"]["fingerprint"])
        assert set(record["metrics"]) == {"eval_ce", "perplexity", "token_accuracy", "entropy", "exact_match",
                                          "normalized_match"}
        assert record["metrics"]["perplexity"] > 1 and 0 <= record["metrics"]["token_accuracy"] <= 1
        assert record["timing"]["overhead_s"] == pytest.approx(record["timing"]["wall_s"] - record["timing"]["train_steps_s"],
                                                                abs=1e-2)
    assert len(fingerprints) == 1 and table["heldout"]["rows"] == 8 and table["heldout"]["generated"] == 8
    reused = [r["timing"]["model_reused"] for r in table["runs"]]
    assert reused == [False, True, True, True]  # the base model is loaded once


def test_the_table_has_each_arms_spread_and_a_paired_interval(finished: RunDirectory) -> None:
    table = json.loads(experiment_paths(finished)["table"].read_text())
    ce = table["summary"]["eval_ce"]
    assert ce["standard"]["n"] == ce["entropy"]["n"] == 2 and ce["standard"]["std"] is not None
    assert set(ce["entropy"]["values"]) == {"3407", "3408"}
    primary = next(c for c in table["comparisons"] if c["metric"] == table["primary_metric"])
    assert table["primary_metric"] == "normalized_match" and primary["n"] == 2
    assert primary["ci_low"] <= primary["mean_difference"] <= primary["ci_high"]
    assert primary["min_p_value"] == 0.5 and primary["supported"] == "none"  # 2 seeds never support a difference
    assert table["verdict"] == primary["verdict"] and table["recommendation"]["arm"] is None
    assert table["recommendation"]["reason"].startswith("cannot tell at 2 seeds")
    ce_diff = next(c for c in table["comparisons"] if c["metric"] == "eval_ce")
    assert ce_diff["differences"] == pytest.approx(
        {s: ce["entropy"]["values"][s] - ce["standard"]["values"][s] for s in ("3407", "3408")})


def test_progress_counts_the_steps_of_every_run(finished: RunDirectory) -> None:
    events = list(finished.iter_events())
    progress = [e for e in events if e["type"] == "progress"]
    assert events[0]["type"] == "start" and events[0]["total_steps"] == 4 * STEPS
    assert [e["step"] for e in progress] == list(range(1, 4 * STEPS + 1))
    assert {e["run"] for e in progress} == {"standard-s3407", "entropy-s3407", "standard-s3408", "entropy-s3408"}
    assert all(e["total_steps"] == 4 * STEPS for e in progress)
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    result = json.loads(finished.result.read_text())
    assert result["kind"] == "experiment" and result["runs_finished"] == 4


def test_the_report_plot_card_section_and_one_chart_of_every_run(finished: RunDirectory) -> None:
    from finetune_mcp.report.card import write_model_card
    from finetune_mcp.report.screenshot import take_screenshot

    paths = experiment_paths(finished)
    report = paths["report"].read_text()
    assert "n = 2 paired seeds" in report and "## `entropy` against `standard`, paired by seed" in report
    assert "(kept, LoRA reset)" in report and paths["plot"].stat().st_size > 10_000
    card, _ = write_model_card(RunDirectory(finished.runs / "entropy-s3408"))
    text = card.read_text()
    assert "## Part of an experiment" in text and "This run is arm `entropy`" in text and "seed 3408" in text
    runs = experiment_runs(finished)
    assert [r.root.name for r in runs] == ["standard-s3407", "entropy-s3407", "standard-s3408", "entropy-s3408"]
    shot = take_screenshot(runs, server=None, fallback=True, out_dir=finished.root / "screenshots")
    assert shot.runs == [r.root.name for r in runs] and shot.path.parent == finished.root / "screenshots"
