from __future__ import annotations

import json

import pytest

from finetune_mcp.config import EnhancedTrainingConfig, Settings, build_config
from finetune_mcp.errors import ConfigError


def test_defaults_and_required_fields():
    config = build_config({"model": "m", "dataset": "d.jsonl"})
    assert config.enable_entropy_weighting is False
    assert config.entropy.function == "linear"
    assert config.resolved_optim == "adamw_torch_fused"
    with pytest.raises(ConfigError, match="dataset: Field required"):
        build_config({"model": "m"})


def test_granger_field_names_are_accepted_and_unused_ones_reported():
    granger = {
        "model_name": "unsloth/Phi-3.5-mini-instruct", "dataset_path": "qa_output", "max_samples": 100,
        "lora_r": 32, "lora_alpha": 64, "random_state": 7, "output_dir": "./outputs",
        "use_gradient_checkpointing": "unsloth", "neftune_noise_alpha": 5, "fp16": False, "dataset_source": "arangodb",
        "load_in_4bit": True,
    }
    config = build_config(granger)
    assert (config.model, config.dataset, config.max_examples) == ("unsloth/Phi-3.5-mini-instruct", "qa_output", 100)
    assert (config.lora_r, config.seed, config.run_dir) == (32, 7, "./outputs")
    assert config.gradient_checkpointing is True
    assert config.resolved_optim == "adamw_8bit"
    assert config.ignored_fields == ["dataset_source", "fp16", "neftune_noise_alpha"]


def test_bad_values_name_the_field_the_rule_and_the_value():
    with pytest.raises(ConfigError) as err:
        build_config({"model": "m", "dataset": "d", "learning_rate": -1, "lora_r": 0, "validation_split": 0.9})
    message = str(err.value)
    assert "learning_rate: Input should be greater than 0 (got -1)" in message
    assert "lora_r: Input should be greater than or equal to 1 (got 0)" in message
    assert "validation_split: Input should be less than or equal to 0.5 (got 0.9)" in message


def test_unknown_field_is_an_error_that_says_check_the_spelling():
    with pytest.raises(ConfigError, match="lora_rank: unknown field; check the spelling"):
        build_config({"model": "m", "dataset": "d", "lora_rank": 8})


@pytest.mark.parametrize("fn", ["linear", "relu", "exponential", "sigmoid", "my_pkg.weights:fn", "my_pkg.weights.fn"])
def test_entropy_weight_functions(fn):
    assert build_config({"model": "m", "dataset": "d", "entropy_weight_fn": fn}).entropy.function == fn


def test_bad_entropy_function_and_clip_order():
    with pytest.raises(ConfigError, match="neither a built-in weight function"):
        build_config({"model": "m", "dataset": "d", "entropy_weight_fn": "cubic-ish"})
    with pytest.raises(ConfigError, match=r"min_weight .* must not exceed max_weight"):
        build_config({"model": "m", "dataset": "d", "entropy": {"min_weight": 3, "max_weight": 2}})


def test_from_yaml_and_json_with_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model_name: m\ndataset_path: d.jsonl\nlora_r: 8\nentropy:\n  function: relu\n")
    config = EnhancedTrainingConfig.from_file(yaml_file, max_steps=5, lora_r=None)
    assert (config.lora_r, config.max_steps, config.entropy.function) == (8, 5, "relu")
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"model": "m", "dataset": "d", "enable_entropy_weighting": True}))
    assert EnhancedTrainingConfig.from_file(json_file).enable_entropy_weighting is True


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        EnhancedTrainingConfig.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid json"):
        EnhancedTrainingConfig.from_file(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        EnhancedTrainingConfig.from_file(listed)


def test_settings_keep_secrets_out_of_repr(monkeypatch, tmp_path):
    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_secret_value")
    settings = Settings.from_env()
    assert settings.db_path == tmp_path / "jobs.db"
    assert "hf_secret_value" not in repr(settings) and "rp_secret_value" not in repr(settings)
