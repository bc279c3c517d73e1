"""From generations to result.json, get_job's compact view, the metrics and the model card's table
(pure: hand-made generations and `Job` rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.errors import JobError
from finetune_mcp.jobs.store import Job, JobState, new_job_id
from finetune_mcp.model.generate import Generation
from finetune_mcp.report.samples_section import samples_section
from finetune_mcp.sample.results import compact_view, latest_sample_of, metrics_of, read_result, without_tokens
from finetune_mcp.sample.spec import build_sample_spec
from finetune_mcp.sample.workflow import build_result
from finetune_mcp.tools.sample import _job_model

TIMING = {"backend": "hf", "device": "cpu", "load_s": 0.5, "batches": 1, "prompts": 2, "generated_tokens": 4,
          "seconds": 0.1, "ttft_s": 0.02, "tokens_per_s": 40.0}


def gen(tokens: list[str], entropies: list[float]) -> Generation:
    return Generation(text="".join(tokens), token_ids=list(range(len(tokens))), tokens=tokens,
                      special=[None] * (len(tokens) - 1) + ["<|im_end|>"], entropies=entropies,
                      alternatives=[[(t, 0.6)] for t in tokens], finish_reason="stop", prompt_tokens=5)


@pytest.fixture
def result():
    spec = build_sample_spec({
        "model": "base", "source_job": "ft-000000000001", "high_entropy_threshold": 2.0,
        "threshold_source": "the run's", "models": [
            {"label": "tuned", "model": "base", "adapter": "/runs/x/adapter", "weights": "adapter"},
            {"label": "base", "model": "base", "weights": "base"}],
        "prompts": [{"messages": [{"role": "user", "content": "what color is the sky?"}], "reference": "blue", "row": 0},
                    {"messages": [{"role": "user", "content": "say | pipe"}], "reference": "pipe", "row": 1}]})
    generations = {"tuned": [gen(["Blue", "."], [0.5, 0.1]), gen(["pipe", ""], [2.5, 3.0])],
                   "base": [gen(["red", ""], [4.0, 0.1]), gen(["x|y", ""], [5.0, 5.0])]}
    return build_result(spec, "ft-00000000aaaa", spec.prompts, generations, {"tuned": TIMING, "base": TIMING}, 1.5)


def test_the_result_matches_marks_and_sums_up_each_model(result) -> None:
    tuned, base = result.models
    assert (tuned.normalized_match_rate, tuned.exact_match_rate, base.normalized_match_rate) == (1.0, 0.5, 0.0)
    assert tuned.high_entropy_share == 0.5 and base.high_entropy_share == 0.75
    assert tuned.mean_entropy == pytest.approx((0.5 + 0.1 + 2.5 + 3.0) / 4)
    first = result.samples[0].outputs["tuned"]
    assert (first.answer, first.exact_match, first.normalized_match, first.marked) == ("Blue.", False, True, "Blue.")
    second = result.samples[1].outputs["tuned"]
    assert second.marked == "⟦pipe<|im_end|>⟧" and second.spans[0].alternatives[0].token == "pipe"
    assert result.threshold == 2.0 and result.threshold_source == "the run's"
    assert metrics_of(result) == {
        "sample/tuned/exact_match_rate": 0.5, "sample/tuned/normalized_match_rate": 1.0,
        "sample/tuned/mean_entropy": pytest.approx(1.525), "sample/tuned/high_entropy_share": 0.5,
        "sample/tuned/tokens_per_s": 40.0, "sample/tuned/ttft_s": 0.02,
        "sample/base/exact_match_rate": 0.0, "sample/base/normalized_match_rate": 0.0,
        "sample/base/mean_entropy": pytest.approx(3.525), "sample/base/high_entropy_share": 0.75,
        "sample/base/tokens_per_s": 40.0, "sample/base/ttft_s": 0.02}
    assert all(not o.tokens for row in without_tokens(result).samples for o in row.outputs.values())


def test_the_card_table_shows_base_and_tuned_with_cells_made_safe(result) -> None:
    section = samples_section(result.model_dump(mode="json"))
    assert "| Prompt | Reference | Base | Fine-tuned |" in section
    assert "| what color is the sky? | blue | ✗ ⟦red⟧ | ✓ Blue. |" in section
    assert "say \\| pipe" in section and "x\\|y" in section  # a | in an answer does not break the table
    assert "base 0/2, tuned 2/2" in section and "above 2 nats (the run's)" in section
    without_base = result.model_copy(update={"models": result.models[:1]})
    assert samples_section(without_base.model_dump(mode="json")) is None and samples_section(None) is None


def test_get_job_shows_a_compact_view_and_the_card_finds_the_newest_sample_of_a_run(tmp_path: Path, result) -> None:
    config = {"kind": "sample", "source_job": "ft-000000000001", "model": "base", "dataset": "",
              "models": [{"label": "tuned"}, {"label": "base"}]}
    jobs: list[Job] = []  # newest first, as JobManager.list gives them

    def add(state: JobState, at: float, **changes) -> Job:
        job_id = new_job_id()
        run_dir = tmp_path / job_id
        run_dir.mkdir()
        (run_dir / "result.json").write_text(result.model_dump_json())
        jobs.insert(0, Job(id=job_id, state=state, target="local", backend="local", device="cpu", slot="cpu",
                           placement={"backend": "local"}, config={**config, **changes}, run_dir=str(run_dir),
                           created_at=at, updated_at=at))
        return jobs[0]

    older = add(JobState.SUCCEEDED, 1.0)
    add(JobState.FAILED, 2.0)
    add(JobState.SUCCEEDED, 3.0, models=[{"label": "tuned"}])  # no base: no table
    add(JobState.SUCCEEDED, 4.0, source_job="ft-000000000002")
    assert latest_sample_of(jobs, "ft-000000000001").id == older.id
    newest = add(JobState.SUCCEEDED, 5.0)
    assert latest_sample_of(jobs, "ft-000000000001").id == newest.id
    assert latest_sample_of(jobs, "ft-00000000dead") is None

    view = compact_view(newest)
    assert view["models"][0] == {"label": "tuned", "exact_match_rate": 0.5, "normalized_match_rate": 1.0,
                                 "mean_entropy": pytest.approx(1.525), "high_entropy_share": 0.5,
                                 "tokens_per_s": 40.0, "ttft_s": 0.02}
    assert view["samples"][1]["outputs"]["base"] == {"answer": "x|y", "normalized_match": False,
                                                     "marked": "⟦x|y<|im_end|>⟧", "mean_entropy": 5.0}
    assert f"get_samples('{newest.id}')" in view["more"]
    Path(newest.run_dir, "result.json").write_text("{broken")
    assert compact_view(newest) is None  # a damaged file never breaks get_job
    with pytest.raises(JobError, match="missing or unreadable"):
        read_result(newest.run_dir)


def test_a_job_without_a_merged_model_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base"}))
    job = Job(id="ft-00000000beef", state=JobState.SUCCEEDED, target="local", backend="local", device="cpu",
              slot="cpu", placement={}, config={"model": "base"}, run_dir=str(tmp_path), created_at=0, updated_at=0)
    with pytest.raises(JobError, match=r"no merged model .* save_merged=true, or deploy_to_hf\(merge=true\)"):
        _job_model(job, "merged")
    tuned = _job_model(job, "adapter")
    assert (tuned.model, tuned.adapter, tuned.weights) == ("base", str(tmp_path / "adapter"), "adapter")
