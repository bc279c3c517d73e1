"""`finetune-mcp train` end to end on the tiny offline model, as a user runs it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finetune_mcp.cli import app
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.testing import write_dataset

runner = CliRunner()


def _train(*args: str):
    return runner.invoke(app, ["train", *args], catch_exceptions=False)


def _scalar_tags(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["--entropy-weight", "--no-entropy-weight"])
def test_train_both_modes_loss_falls_tags_written_adapter_generates(tiny_model_dir, tmp_path, weighting):
    data = write_dataset(tmp_path / "train.jsonl", "alpaca", n=200)
    run_dir = tmp_path / "run"
    result = _train("--model", str(tiny_model_dir), "--dataset", str(data), weighting, "--max-steps", "30",
                    "--lr", "1e-2", "--batch-size", "16", "--grad-accum", "1", "--max-seq-length", "64",
                    "--run-dir", str(run_dir))
    assert result.exit_code == 0, result.output
    run = RunDirectory(run_dir)
    for path in (run.spec, run.events, run.log, run.result, run.adapter / "adapter_config.json",
                 run.entropy / "epoch_1.json", run.entropy / "eval.json"):
        assert path.exists(), path

    progress = [e for e in run.iter_events("progress")]
    first, last = progress[0]["metrics"], progress[-1]["metrics"]
    assert last[M.CE_LOSS] < first[M.CE_LOSS] - 0.5  # it learns
    assert last[M.ENTROPY_MEAN] < first[M.ENTROPY_MEAN]
    assert progress[-1]["total_steps"] == 30 and progress[-1]["eta_s"] is not None
    if weighting == "--entropy-weight":
        assert last[M.WEIGHT_MEAN] > 1.0
    else:
        assert last[M.WEIGHT_MEAN] == 1.0 and last[M.LOSS] == pytest.approx(last[M.CE_LOSS], rel=1e-3)
    # what f(H) makes of the loss is logged in both arms, optimised only with weighting on
    assert last[M.CE_LOSS] < last[M.WEIGHTED_LOSS] <= 2 * last[M.CE_LOSS]

    acc = _scalar_tags(run.tensorboard)
    tags = set(acc.Tags()["scalars"])
    for tag in (M.LOSS, M.CE_LOSS, M.WEIGHTED_LOSS, M.ENTROPY_MEAN, M.HIGH_ENTROPY_SHARE, M.WEIGHT_MEAN,
                M.LEARNING_RATE, M.GRAD_NORM, M.EVAL_LOSS, M.EVAL_ENTROPY_MEAN):
        assert tag in tags, tag
    assert M.ENTROPY_HISTOGRAM in acc.Tags()["histograms"]

    result_json = json.loads(run.result.read_text())
    assert result_json["entropy_weighting"] is (weighting == "--entropy-weight")
    assert result_json["backend"] == "hf" and result_json["device"] == "cpu"
    spec = json.loads(run.spec.read_text())
    assert spec["enable_entropy_weighting"] is (weighting == "--entropy-weight")

    from finetune_mcp.model.generate import generate
    from finetune_mcp.model.generation_settings import GenerationSettings
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import LoadRequest, plan_load

    loaded = load_model(spec["model"], plan_load(LoadRequest(backend="hf")), adapters={"default": str(run.adapter)},
                        tokenizer=str(run.adapter))
    [reply] = generate(loaded.model, loaded.tokenizer, ["what color is the sky?"], GenerationSettings(max_new_tokens=4))
    assert reply.token_ids and isinstance(reply.text, str)


@pytest.mark.slow
def test_train_reads_every_dataset_format(tiny_model_dir, tmp_path):
    suffix = {"csv": ".csv", "parquet": ".parquet", "json": ".json", "arangodb": ""}
    for fmt in ("messages", "sharegpt", "prompt_completion", "text", "arangodb", "csv", "parquet", "json"):
        data = write_dataset(tmp_path / fmt / f"data{suffix.get(fmt, '.jsonl')}", fmt, n=24)
        run_dir = tmp_path / f"run-{fmt}"
        result = _train("--model", str(tiny_model_dir), "--dataset", str(data), "--max-steps", "1",
                        "--batch-size", "4", "--max-seq-length", "48", "--run-dir", str(run_dir))
        assert result.exit_code == 0, (fmt, result.output)
        assert json.loads((run_dir / "result.json").read_text())["status"] == "succeeded"


def test_bad_input_is_a_clear_error_with_exit_code_2(tiny_model_dir, tmp_path):
    result = _train("--model", str(tiny_model_dir), "--dataset", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "nope.jsonl" in result.output
    result = _train("--model", str(tiny_model_dir), "--dataset", "x.jsonl", "--lr", "-1")
    assert result.exit_code == 2 and "learning_rate" in result.output
    result = _train("--dataset", "x.jsonl")
    assert result.exit_code == 2 and "--model" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    result = _train("--model", str(tiny_model_dir), "--dataset", str(bad), "--run-dir", str(tmp_path / "r"))
    assert result.exit_code == 2 and "line 2" in result.output and "output" in result.output
