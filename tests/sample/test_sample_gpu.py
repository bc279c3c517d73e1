"""Sampling on CUDA through Unsloth's fast generation, in real worker processes (`finetune-mcp worker
run`, where Unsloth is imported before transformers as in production): a tiny run trained with
Unsloth answers its training rows, its base answers the same with the adapter disabled as when
loaded alone, and its merged model agrees with the adapter (bf16: merging rounds the weights, so
agreement is asked on the answers, not on every logit). Run on the GPU machine: pytest -m gpu."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.sample.spec import build_sample_spec
from finetune_mcp.testing import write_dataset

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                                                  reason="needs Unsloth (and CUDA)")]
ROWS = {"split": "train", "count": 12, "validation_split": 0.25, "seed": 3407}


def worker(run_dir: Path, spec: dict) -> dict:
    run = RunDirectory(run_dir).create()
    run.write_json(run.spec, spec)
    done = subprocess.run([sys.executable, "-m", "finetune_mcp.cli", "worker", "run", str(run.spec)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-4000:] + run.tail_log(40)
    return json.loads(run.result.read_text())


def test_unsloth_samples_a_trained_run_its_base_and_its_merged_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    dataset = write_dataset(tmp_path / "qa.jsonl", "messages", n=16)
    config = build_config({"model": str(tiny_model_dir), "dataset": str(dataset), "backend": "unsloth",
                           "max_steps": 50, "learning_rate": 1e-2, "per_device_train_batch_size": 8,
                           "gradient_accumulation_steps": 1, "lora_r": 16, "lora_alpha": 16, "max_seq_length": 64,
                           "validation_split": 0.25, "save_steps": 1000, "save_merged": True})
    trained = tmp_path / "train"
    assert worker(trained, config.model_dump(mode="json"))["backend"] == "unsloth"

    def sample(name: str, models: list[dict]) -> dict:
        spec = build_sample_spec({"model": models[0]["model"], "models": models, "backend": "unsloth",
                                  "rows": {"dataset": str(dataset), **ROWS}, "settings": {"max_new_tokens": 8}})
        from finetune_mcp.sample.prompts import row_prompts

        spec = spec.model_copy(update={"prompts": row_prompts(spec.rows)})
        return worker(tmp_path / name, spec.model_dump(mode="json"))

    base_entry = {"label": "base", "model": str(tiny_model_dir), "weights": "base"}
    both = sample("both", [{"label": "tuned", "model": str(tiny_model_dir), "adapter": str(trained / "adapter"),
                            "weights": "adapter"}, base_entry])
    alone = sample("alone", [base_entry])
    merged = sample("merged", [{"label": "tuned", "model": str(trained / "merged"), "weights": "merged"}])

    tuned, base = both["models"]
    assert tuned["backend"] == base["backend"] == "unsloth" and tuned["tokens_per_s"] > 0 and tuned["ttft_s"] > 0
    assert tuned["normalized_match_rate"] >= 0.75 and base["normalized_match_rate"] == 0.0
    # the base with the adapter disabled answers as the base loaded alone
    assert [s["outputs"]["base"]["text"] for s in both["samples"]] == [s["outputs"]["base"]["text"]
                                                                      for s in alone["samples"]]
    adapter_answers = [s["outputs"]["tuned"]["answer"] for s in both["samples"]]
    merged_answers = [s["outputs"]["tuned"]["answer"] for s in merged["samples"]]
    assert sum(a == m for a, m in zip(adapter_answers, merged_answers, strict=True)) >= 11, (adapter_answers,
                                                                                            merged_answers)
