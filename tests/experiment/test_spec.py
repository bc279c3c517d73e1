"""The experiment spec: named and explicit arms, seeds, what each run's config is, and errors that say the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finetune_mcp.errors import ConfigError
from finetune_mcp.experiment.spec import BUILTIN_WEIGHT_FNS, build_experiment_spec

BASE = {"model": "some/model", "dataset": "data.jsonl", "max_steps": 5}


def test_the_default_is_standard_against_entropy_over_three_seeds_from_seed():
    spec = build_experiment_spec({**BASE, "seed": 10})
    assert [a.name for a in spec.arms] == ["standard", "entropy"] and spec.baseline_arm == "standard"
    assert spec.seeds == [10, 11, 12]
    assert [(seed, arm.name) for seed, arm in spec.plan][:3] == [(10, "standard"), (10, "entropy"), (11, "standard")]


def test_each_run_config_is_the_shared_settings_plus_the_arms_loss_the_seed_and_one_split():
    spec = build_experiment_spec({**BASE, "learning_rate": 1e-3, "entropy": {"high_entropy_percentile": 80},
                                  "arms": ["standard", {"name": "lin2", "enable_entropy_weighting": True,
                                                        "entropy": {"scale": 2.0}}], "seeds": [1, 2]})
    standard, lin2 = (spec.run_config(arm, 2) for arm in spec.arms)
    assert (standard.enable_entropy_weighting, lin2.enable_entropy_weighting) == (False, True)
    assert lin2.entropy.scale == 2.0 and lin2.entropy.function == "linear"
    assert lin2.entropy.high_entropy_percentile == 80  # shared entropy settings are inherited
    assert standard.seed == lin2.seed == 2 and standard.learning_rate == lin2.learning_rate == 1e-3
    assert standard.data_split_seed == lin2.data_split_seed == spec.seed  # the same held-out rows for every seed
    assert spec.arms[1].describe() == "entropy-weighted CE, w = linear (scale 2.0)"


def test_retain_rows_are_read_whole_and_never_trained_on():
    spec = build_experiment_spec({**BASE, "retain_dataset": "retain.jsonl", "primary_metric": "retain_ce_rise",
                                  "validation_split": 0.2, "max_examples": 8})
    retain, run = spec.retain_config(), spec.run_config(spec.arms[0], spec.seeds[0])
    assert (retain.dataset, retain.validation_split, retain.max_examples) == ("retain.jsonl", 0.0, None)
    assert run.dataset == "data.jsonl" and "retain_dataset" not in run.model_dump()
    assert build_experiment_spec(BASE).retain_config() is None


def test_every_loss_variant_the_kernels_implement_is_an_arm_name():
    from finetune_mcp.kernels import weights

    assert BUILTIN_WEIGHT_FNS == weights.BUILTIN_WEIGHT_FNS
    spec = build_experiment_spec({**BASE, "arms": ["standard", *weights.BUILTIN_WEIGHT_FNS]})
    assert [a.entropy.get("function") for a in spec.arms] == [None, *weights.BUILTIN_WEIGHT_FNS]
    assert all(a.enable_entropy_weighting for a in spec.arms[1:])
    top = spec.run_config(spec.arms[-1], spec.seeds[0])
    assert (top.entropy.function, top.entropy.quantile) == ("top_entropy", 0.8)


def test_a_spec_is_checked_without_importing_torch():
    code = ("import sys; from finetune_mcp.experiment.spec import build_experiment_spec as b; "
            "b({'model': 'm', 'dataset': 'd', 'arms': ['standard', 'dft']}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


@pytest.mark.parametrize(("change", "message"), [
    ({"arms": ["standard", "dtf"]}, "unknown arm 'dtf': a named arm is 'standard' (plain cross-entropy)"),
    ({"arms": ["standard", {"name": "x", "enable_entropy_weighting": True, "entropy": {"function": "nope"}}]},
     "function 'nope' is not a built-in weight function"),
    ({"arms": ["standard", {"name": "x", "entropy": {"function": "relu"}}]},
     "enable_entropy_weighting is false; set it to true"),
    ({"arms": ["standard", {"name": "x", "enable_entropy_weighting": True, "entropy": {"scael": 2}}]},
     "unknown entropy field(s) scael"),
    ({"arms": ["standard", "standard"]}, "arm names must differ"),
    ({"arms": ["standard"]}, "arms: List should have at least 2 items"),
    ({"arms": ["standard", {"name": "a b"}]}, "use 1-40 letters, digits"),
    ({"enable_entropy_weighting": True}, "loss settings belong to its arms"),
    ({"baseline": "nope"}, "baseline 'nope' is not one of the arms (standard, entropy)"),
    ({"seeds": 0}, "seeds must be a count from 1 to 50"),
    ({"seeds": [1, 1]}, "seeds must differ"),
    ({"num_gpus": 2}, "use num_gpus=1"),
    ({"primary_metric": "mrr@10"}, "use one of eval_ce, perplexity"),
    ({"method": "rerank", "retain_dataset": "retain.jsonl"},
     "retain_dataset: the forgetting check compares held-out CE, which method='rerank' is not scored by"),
    ({"primary_metric": "retain_ce_rise"}, "primary_metric 'retain_ce_rise' is measured on a retain_dataset; give one"),
])
def test_a_bad_spec_is_refused_with_the_fix(change, message):
    with pytest.raises(ConfigError) as err:
        build_experiment_spec({**BASE, **change})
    assert str(err.value).startswith("invalid experiment: ") and message in str(err.value)
