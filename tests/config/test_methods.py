"""The training-method registry: every entry is complete and consistent with the layers that use
it, `task` stays an alias of `method`, and the questions other layers ask have the answers they
had when they branched on the name."""

from __future__ import annotations

import typing

import pytest

from finetune_mcp.config import DataConfig, build_config
from finetune_mcp.config.data import DatasetFormat
from finetune_mcp.config.methods import (
    METHODS,
    MemoryExtras,
    get_method,
    method_for_format,
    method_for_metrics,
    method_of,
)
from finetune_mcp.errors import ConfigError


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_complete(name: str) -> None:
    from finetune_mcp.experiment.metrics import by_name
    from finetune_mcp.train.methods import HOOKS, implementation

    method = METHODS[name]
    assert set(method.formats) <= set(typing.get_args(DatasetFormat)) - {"auto"}
    assert method.implementation.startswith(f"finetune_mcp.train.{name}.")  # its own folder under train/
    module = implementation(name)
    assert all(callable(getattr(module, hook)) for hook in HOOKS)
    assert method.primary(False) in method.experiment_metrics(False)
    assert method.primary(True) in method.experiment_metrics(True)
    for metric in method.experiment_metrics(True):
        by_name(metric)  # every held-out metric has a label and a direction
    assert all(method.accepts_metric(m) for m in method.default_eval_metrics)


def test_every_format_points_at_a_method_that_takes_it() -> None:
    # preference pairs are shared (dpo, orpo, kto all train on them); the hint names the first
    for fmt in {fmt for method in METHODS.values() for fmt in method.formats}:
        assert fmt in method_for_format(fmt).formats
    assert method_for_format("triples").name == "rerank" and method_for_format("alpaca").name == "sft"
    assert method_for_format("preference").name == "dpo" and method_for_format("unpaired_preference").name == "kto"
    assert method_for_format("prompt_only").name == "grpo"


def test_task_is_the_older_name_of_method() -> None:
    config = build_config({"model": "m", "dataset": "d", "task": "rerank"})
    assert config.method == "rerank" and config.task == "rerank"
    assert config.model_dump()["method"] == "rerank"
    assert DataConfig(dataset="d").method == "sft"
    assert config.accepted_formats == ("ranking", "triples", "graded")
    with pytest.raises(ConfigError, match="unknown training method 'ppo'; use one of sft, rerank, dpo, kto, orpo, grpo"):
        build_config({"model": "m", "dataset": "d", "method": "ppo"})


def test_stored_specs_name_their_method_either_way() -> None:
    assert method_of({"task": "rerank"}).name == "rerank"
    assert method_of({"method": "rerank"}).name == "rerank"
    assert method_of({}).name == "sft"  # specs from before methods had names
    with pytest.raises(ConfigError, match="unknown training method"):
        get_method("nope")


def test_the_answers_the_old_branches_gave() -> None:
    sft, rerank = METHODS["sft"], METHODS["rerank"]
    assert (sft.pipeline_tag, rerank.pipeline_tag) == ("text-generation", "text-ranking")
    assert sft.generates and not rerank.generates
    assert (sft.loss_head_rows, rerank.loss_head_rows) == (None, 2)
    assert sft.primary(True) == "normalized_match" and sft.primary(False) == "eval_ce"
    assert rerank.primary(True) == "mrr@10"
    assert method_for_metrics(["loss", "entropy"]).name == "sft"
    assert method_for_metrics(["mrr@7", "map"]).name == "rerank"
    assert method_for_metrics(None).name == "rerank"  # evaluate_model without a job or metrics: rankings


def test_memory_extras_grow_the_estimate() -> None:
    from finetune_mcp.jobs.vram import ModelInfo, estimate_memory, shape_from_config

    shape = shape_from_config({"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 8,
                               "intermediate_size": 3072, "vocab_size": 32000, "num_attention_heads": 16,
                               "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True})
    info = ModelInfo(name="m", shape=shape, source="local folder")
    plain = estimate_memory(info)
    assert estimate_memory(info, extras=MemoryExtras()) == plain  # SFT and the reranker: as before
    pairs = estimate_memory(info, extras=MemoryExtras(sequences_per_row=2, reference_copy=True, generations=4))
    assert pairs.breakdown_gb["weights"] == pytest.approx(2 * plain.breakdown_gb["weights"], rel=1e-2)
    assert pairs.breakdown_gb["activations"] > plain.breakdown_gb["activations"]
    assert pairs.breakdown_gb["generation_kv_cache"] > 0 and pairs.total_gb > plain.total_gb


def test_the_placement_estimate_counts_what_each_method_adds() -> None:
    """What `jobs.router.place_job` passes (`config.memory_extras`: the descriptor's, refined by the
    method's settings block) grows the estimate by the reference pass and the generations."""
    from finetune_mcp.jobs.vram import ModelInfo, estimate_memory, shape_from_config

    shape = shape_from_config({"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 8,
                               "intermediate_size": 3072, "vocab_size": 32000, "num_attention_heads": 16,
                               "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True})
    info = ModelInfo(name="m", shape=shape, source="local folder")
    base = {"model": "m", "dataset": "d", "per_device_train_batch_size": 4, "max_seq_length": 1024}
    grpo = {"rewards": [{"function": "exact"}], "num_generations": 4}

    def estimate(**fields):
        config = build_config({**base, **fields})
        return estimate_memory(info, max_seq_length=config.max_seq_length, batch_size=4, extras=config.memory_extras)

    sft, dpo, orpo = estimate(), estimate(method="dpo"), estimate(method="orpo")
    one, four = (estimate(method="grpo", grpo=grpo, gradient_accumulation_steps=n) for n in (1, 4))
    assert "reference_forward" in dpo.breakdown_gb and "reference_forward" not in orpo.breakdown_gb  # ORPO has none
    assert any("reference model" in a for a in dpo.assumptions)
    assert dpo.breakdown_gb["activations"] > sft.breakdown_gb["activations"]  # two sequences a pair
    assert dpo.total_gb > orpo.total_gb > sft.total_gb
    # GRPO generates a whole generation batch (gradient_accumulation_steps micro-batches) before training
    assert four.breakdown_gb["generation_kv_cache"] == pytest.approx(4 * one.breakdown_gb["generation_kv_cache"],
                                                                     rel=1e-2)
    assert "generation_kv_cache" not in sft.breakdown_gb and four.total_gb > one.total_gb > sft.total_gb
