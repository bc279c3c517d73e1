"""Reranker runs through `run_training` on the tiny model: ranking metrics before and after in
result.json, events and TensorBoard; the entropy A/B (weighting off vs on) on the answer
distribution; the card's ranking section with compare_with; `run_evaluation` reproducing the
after-training metrics, and its task metrics for chat data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.evaluation.job import EvaluationSpec, run_evaluation
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.testing.rank_datagen import TINY_INSTRUCTION, write_ranking_dataset
from finetune_mcp.train.rerank.metrics import DEFAULT_METRICS
from finetune_mcp.train.workflow import run_training

pytestmark = pytest.mark.slow

SHORT = dict(task="rerank", max_steps=12, per_device_train_batch_size=8, gradient_accumulation_steps=2,
             max_seq_length=256, validation_split=0.25, learning_rate=3e-3, logging_steps=4, save_steps=10_000,
             rerank_instruction=TINY_INSTRUCTION)


@pytest.fixture(scope="module")
def ab_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The same pointwise run with entropy weighting off and on (graded data)."""
    root = tmp_path_factory.mktemp("rerank-ab")
    data = write_ranking_dataset(root / "graded.jsonl", shape="graded", n=40)
    runs = {}
    for weighting in (False, True):
        runs[weighting] = root / f"run-{weighting}"
        run_training(build_config({"model": str(tiny_model_dir), "dataset": str(data), **SHORT,
                                   "enable_entropy_weighting": weighting}), runs[weighting])
    return runs


def test_ranking_before_and_after_everywhere(ab_runs: dict[bool, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDirectory(ab_runs[False])
    result = run.read_json(run.result)
    ranking = result["ranking"]
    assert result["task"] == "rerank" and ranking["num_queries"] == 10 and ranking["num_documents"] == 80
    assert ranking["truncated_pairs"] == 0 and ranking["instruction"] == TINY_INSTRUCTION
    assert set(ranking["before"]) == set(ranking["after"]) == set(DEFAULT_METRICS)
    assert ranking["before"] != ranking["after"]  # the adapter changed the scores
    assert all(0 <= v <= 1 for v in [*ranking["before"].values(), *ranking["after"].values()])
    evals = [e for e in run.iter_events("eval") if str(e.get("phase", "")).startswith("rank/")]
    assert [e["phase"] for e in evals] == ["rank/before", "rank/after"]
    assert evals[0]["metrics"] == {f"rank/before/{k}": v for k, v in ranking["before"].items()}
    assert evals[1]["metrics"]["rank/after/mrr@10"] == ranking["after"]["mrr@10"]
    accumulator = EventAccumulator(str(run.tensorboard))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"rank/before/mrr@10", "rank/after/ndcg@10", "rank/after/recall@5", "train/entropy_mean"} <= scalars
    [before] = accumulator.Scalars("rank/before/mrr@10")
    [after] = accumulator.Scalars("rank/after/mrr@10")
    assert (before.step, after.step) == (0, result["global_step"])
    assert after.value == pytest.approx(ranking["after"]["mrr@10"])
    assert (run.adapter / "adapter_config.json").is_file()


def test_entropy_ab_on_the_answer_distribution(ab_runs: dict[bool, Path]) -> None:
    off = RunDirectory(ab_runs[False]).read_json(RunDirectory(ab_runs[False]).result)
    on = RunDirectory(ab_runs[True]).read_json(RunDirectory(ab_runs[True]).result)
    assert off["ranking"]["before"] == on["ranking"]["before"]  # same base model, same held-out queries
    for result in (off, on):
        entropy = result["metrics"]["train/entropy_mean"]
        assert 0 < entropy <= math.log(2)  # two answers, not a vocabulary
    assert off["metrics"]["train/entropy_weight_mean"] == 1.0
    # the unweighted arm still logs what f(H) = 1 + H / log 2 would have made of its loss
    assert off["metrics"]["train/weighted_loss"] > off["metrics"]["train/ce_loss"]
    assert off["metrics"]["train/ce_loss"] == pytest.approx(off["metrics"]["train/loss"], rel=1e-5)
    assert 1.0 < on["metrics"]["train/entropy_weight_mean"] <= 2.0  # w = 1 + H / log 2
    assert on["metrics"]["train/loss"] > on["metrics"]["train/ce_loss"]
    epoch = json.loads((ab_runs[True] / "entropy" / "epoch_1.json").read_text())
    assert epoch["entropies"] and max(epoch["entropies"]) <= math.log(2) + 1e-6


def ranking_before(run_dir: Path) -> dict[str, float]:
    return RunDirectory(run_dir).read_json(RunDirectory(run_dir).result)["ranking"]["before"]


def test_card_ranking_section_with_compare_with(ab_runs: dict[bool, Path]) -> None:
    from finetune_mcp.report.card import render_model_card

    card = render_model_card(RunDirectory(ab_runs[True]), RunDirectory(ab_runs[False]))
    after = RunDirectory(ab_runs[True]).read_json(RunDirectory(ab_runs[True]).result)["ranking"]["after"]
    section = card[card.index("## Ranking evaluation"):card.index("## Intended use")]
    assert "pipeline_tag: text-ranking" in card
    assert "| Metric | Before training | After training | Change |" in section
    assert f"| MRR@10 | {ranking_before(ab_runs[True])['mrr@10']:.3f} | {after['mrr@10']:.3f} |" in section
    assert "`run-True` (weighted) | `run-False` (unweighted)" in section and "(same validation queries)" in section
    assert "<Instruct>: {instruction}" in section  # the scoring snippet carries the exact prompt


def test_evaluation_reproduces_the_after_metrics(ab_runs: dict[bool, Path], tiny_model_dir: Path,
                                                 tmp_path: Path) -> None:
    run = RunDirectory(ab_runs[False])
    spec_data = run.read_json(run.spec)
    spec = EvaluationSpec.model_validate({**{k: spec_data[k] for k in ("dataset", "validation_split", "seed",
                                                                         "max_seq_length", "method", "rerank_instruction")},
                                          "model": str(tiny_model_dir), "adapter": str(run.adapter),
                                          "split": "validation", "metrics": ["mrr@10", "ndcg@10", "map"]})
    result = run_evaluation(spec, tmp_path / "eval")
    after = run.read_json(run.result)["ranking"]["after"]
    assert result["metrics"]["mrr@10"] == pytest.approx(after["mrr@10"], abs=1e-6)
    assert result["metrics"]["ndcg@10"] == pytest.approx(after["ndcg@10"], abs=1e-6)
    assert set(result["metrics"]) == {"mrr@10", "ndcg@10", "map"} and result["num_examples"] == 10
    events = RunDirectory(tmp_path / "eval").read_events()[0]
    assert [e["type"] for e in events][-2:] == ["eval", "end"]
    assert events[-2]["metrics"]["rank/eval/map"] == result["metrics"]["map"]
    assert any(e["type"] == "progress" and e["step"] == e["total_steps"] for e in events)


def test_evaluation_of_chat_data_reports_task_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    from finetune_mcp.testing.datagen import write_dataset

    data = write_dataset(tmp_path / "chat.jsonl", "messages", n=12)
    spec = EvaluationSpec.model_validate({"model": str(tiny_model_dir), "dataset": str(data), "task": "sft",
                                          "metrics": ["loss", "perplexity", "entropy"], "max_seq_length": 128})
    result = run_evaluation(spec, tmp_path / "eval")
    values = result["metrics"]
    assert values["perplexity"] == pytest.approx(math.exp(values["loss"]))
    assert 0 < values["entropy"] <= math.log(512) and result["tokens"] > 0
    assert result["tagged_metrics"]["eval/loss"] == values["loss"]


def test_evaluation_specs_refuse_metrics_of_the_other_task(tiny_model_dir: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"\['loss'\] are not metrics of method='rerank'.*'loss' is a metric of method='sft'"):
        EvaluationSpec.model_validate({"model": "m", "dataset": "d", "task": "rerank", "metrics": ["loss"]})
    with pytest.raises(ValidationError, match=r"\['mrr@10'\] are not metrics of method='sft'.*method='rerank'"):
        EvaluationSpec.model_validate({"model": "m", "dataset": "d", "task": "sft", "metrics": ["mrr@10"]})
    with pytest.raises(ValidationError, match=r"unknown metric 'ndcg'; use .*mrr@k"):
        EvaluationSpec.model_validate({"model": "m", "dataset": "d", "task": "rerank", "metrics": ["ndcg"]})


def test_cli_train_task_rerank(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from finetune_mcp.cli import app

    data = write_ranking_dataset(tmp_path / "rank.jsonl", n=12)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--dataset", str(data), "--task",
                                      "rerank", "--max-steps", "2", "--max-seq-length", "320", "--run-dir",
                                      str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ranking = RunDirectory(run_dir).read_json(RunDirectory(run_dir).result)["ranking"]
    assert "ranking on 1 held-out queries (before → after): mrr@10" in " ".join(result.output.split())
    assert ranking["num_queries"] == 1 and ranking["truncated_pairs"] == 0
