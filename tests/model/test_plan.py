"""`plan_load`: one decision of backend, dtype, device and 4-bit for every purpose, and jobs that read one
run (sample, evaluate) asking it with the same fields, so they load the run's model alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_mcp.errors import ModelError
from finetune_mcp.evaluation.job import EvaluationSpec
from finetune_mcp.jobs.store import Job, JobState
from finetune_mcp.model import plan as plan_module
from finetune_mcp.model.plan import LOAD_FIELDS, LoadPlan, LoadRequest, plan_load
from finetune_mcp.sample.spec import build_sample_spec
from finetune_mcp.tools.evaluate import evaluation_data
from finetune_mcp.tools.training import trained_load_fields


@pytest.fixture
def gpu_with_unsloth(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as a bf16 GPU with Unsloth installed (nothing is loaded: only the choice is made)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(plan_module, "unsloth_installed", lambda: True)


def _qlora_job(tmp_path: Path) -> Job:
    config = {"model": "owner/base", "dataset": str(tmp_path / "d.jsonl"), "method": "sft", "backend": "auto",
              "load_in_4bit": True, "max_seq_length": 512}
    return Job(id="ft-00000000cafe", state=JobState.SUCCEEDED, target="local", backend="local", device="cuda",
               slot="gpu0", placement={}, config=config, run_dir=str(tmp_path), created_at=0, updated_at=0)


def _sample_and_evaluate_specs(job: Job) -> tuple:
    adapter = str(Path(job.run_dir) / "adapter")
    sample = build_sample_spec({"model": "owner/base", "prompts": [{"messages": [{"role": "user", "content": "hi"}]}],
                                "models": [{"label": "tuned", "model": "owner/base", "adapter": adapter,
                                            "weights": "adapter"}], **trained_load_fields(job)})
    evaluate = EvaluationSpec.model_validate(evaluation_data(job.id, None, None, None, "auto",
                                                                   {**job.config, **trained_load_fields(job)}, adapter))
    return sample, evaluate


def test_a_sample_job_and_an_evaluate_job_of_one_run_load_it_alike(tmp_path: Path, gpu_with_unsloth: None) -> None:
    sample, evaluate = _sample_and_evaluate_specs(_qlora_job(tmp_path))
    assert {k: getattr(evaluate, k) for k in LOAD_FIELDS} == {k: getattr(sample, k) for k in LOAD_FIELDS} == {
        "backend": "auto", "load_in_4bit": True, "max_seq_length": 512}
    assert plan_load(evaluate) == plan_load(sample) == LoadPlan("inference", "unsloth", "bfloat16", "cuda", True, 512)
    # and as the run's training loaded its base, only trainable
    training = plan_load(LoadRequest("auto", True, 512), "train")
    assert (training.backend, training.dtype, training.load_in_4bit, training.trainable) == (
        "unsloth", "bfloat16", True, True)


def test_on_the_cpu_every_model_loads_in_float32_with_transformers() -> None:
    assert plan_load(LoadRequest()) == LoadPlan("inference", "hf", "float32", "cpu", False, 2048)
    assert plan_load(LoadRequest(backend="auto", max_seq_length=96), "train").trainable
    with pytest.raises(ModelError, match="load_in_4bit needs a CUDA GPU"):
        plan_load(LoadRequest(load_in_4bit=True))
    with pytest.raises(ModelError, match="backend='unsloth' needs a CUDA GPU"):
        plan_load(LoadRequest(backend="unsloth"))


def test_the_reference_and_the_merge_are_float32_transformers_whatever_the_run_used(gpu_with_unsloth: None) -> None:
    qlora = LoadRequest(backend="unsloth", load_in_4bit=True, max_seq_length=256)
    assert plan_load(qlora, "reference") == LoadPlan("reference", "hf", "float32", "cuda", False, 256)
    # Unsloth's merged save for a run it trained; a transformers run merges exactly, on the CPU
    assert plan_load(qlora, "merge") == LoadPlan("merge", "unsloth", "bfloat16", "cuda", True, 256)
    assert plan_load(LoadRequest(backend="hf"), "merge") == LoadPlan("merge", "hf", "float32", "cpu", False, 2048)


def test_backend_hf_is_kept_on_a_gpu_and_a_gpu_without_bf16_gets_float16(
        gpu_with_unsloth: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan_load(LoadRequest(backend="hf")).backend == "hf"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert plan_load(LoadRequest(backend="hf")).dtype == "float16"


def test_a_run_that_auto_trained_with_transformers_is_read_with_transformers(tmp_path: Path, gpu_with_unsloth: None) -> None:
    """backend="auto" on a GPU with Unsloth may still train with transformers (the step plan, small models):
    the sample and evaluate jobs of that run load it with transformers too, from its result.json."""
    job = _qlora_job(tmp_path)
    (tmp_path / "result.json").write_text('{"status": "succeeded", "backend": "hf"}')
    sample, evaluate = _sample_and_evaluate_specs(job)
    assert sample.backend == evaluate.backend == "hf"
    assert plan_load(sample).backend == plan_load(evaluate).backend == "hf"
