"""config/: the groups compose into TrainingConfig, and other kinds take only the groups they use."""

from __future__ import annotations

import pytest

from finetune_mcp.config import (
    BUILTIN_WEIGHT_FNS,
    DataConfig,
    EnhancedTrainingConfig,
    LoraConfig,
    TrainingConfig,
    build_config,
)
from finetune_mcp.errors import ConfigError


def test_weight_function_names_match_the_kernels():
    from finetune_mcp.kernels.weights import BUILTIN_WEIGHT_FNS as implemented

    assert tuple(BUILTIN_WEIGHT_FNS) == tuple(implemented)


def test_training_config_is_the_groups_and_the_granger_name():
    assert EnhancedTrainingConfig is TrainingConfig
    config = TrainingConfig(model="m", dataset_path="d.jsonl", r=8, max_samples=5)
    assert isinstance(config, DataConfig) and isinstance(config, LoraConfig)
    assert config.data == DataConfig(dataset="d.jsonl", max_examples=5)
    assert list(TrainingConfig.model_fields)[:3] == ["model", "backend", "dataset"]  # spec.json reads model first


def test_evaluation_spec_has_no_training_fields():
    from finetune_mcp.evaluation.job import EvaluationSpec

    fields = set(EvaluationSpec.model_fields)
    assert {"model", "dataset", "validation_split", "seed", "rerank_instruction"} <= fields
    assert not fields & {"lora_r", "learning_rate", "num_train_epochs", "enable_entropy_weighting"}


def test_evaluation_errors_name_the_evaluation(tmp_path):
    from finetune_mcp.evaluation.job import load_evaluation_spec

    spec = tmp_path / "spec.json"
    spec.write_text('{"kind": "evaluate", "model": "m", "dataset": "d", "lora_r": 8}')
    with pytest.raises(ConfigError, match=r"^invalid evaluation: lora_r: unknown field.*evaluate_model"):
        load_evaluation_spec(spec)


@pytest.mark.parametrize("name", ["dft", "entropy_gated", "top_entropy"])
def test_new_loss_variants_reach_the_kernel_spec(name):
    from finetune_mcp.train.sft.trainer import weight_spec

    config = TrainingConfig(model="m", dataset="d", enable_entropy_weighting=True,
                            entropy={"function": name, "quantile": 0.5, "scale": 2.0})
    spec = weight_spec(config.entropy)
    assert (spec.fn, spec.quantile, spec.scale) == (name, 0.5, 2.0)
    with pytest.raises(ConfigError, match=r"entropy.quantile: Input should be less than or equal to 1 \(got 1.5\)"):
        build_config({"model": "m", "dataset": "d", "entropy": {"function": name, "quantile": 1.5}})
