"""The tracking group: report_to spellings, names, the start check for trackers that are not installed,
and which variables a job's worker receives (only its trackers')."""

from __future__ import annotations

import pytest

from finetune_mcp import kinds
from finetune_mcp.config import Settings, build_config
from finetune_mcp.config import tracking as T
from finetune_mcp.errors import ConfigError
from finetune_mcp.train.preflight import check_trackers


def _config(**fields):
    return build_config({"model": "m", "dataset": "d.jsonl", **fields})


@pytest.mark.parametrize(("given", "sinks"), [
    (None, ["tensorboard"]), ("none", ["tensorboard"]), ("wandb", ["tensorboard", "wandb"]),
    ("trackio, mlflow", ["tensorboard", "trackio", "mlflow"]), (["WandB", "tensorboard", "wandb"], ["tensorboard", "wandb"]),
])
def test_report_to_spellings_keep_tensorboard_on(given, sinks) -> None:
    config = _config(report_to=given)
    assert config.report_to == sinks and config.trackers == sinks[1:]


def test_granger_report_to_and_run_name_are_used_not_ignored() -> None:
    config = _config(report_to="wandb", run_name="exp-1")
    assert (config.run_name, config.ignored_fields) == ("exp-1", [])


@pytest.mark.parametrize(("fields", "message"), [
    ({"report_to": ["comet"]}, "unknown tracker 'comet'; use tensorboard, trackio, wandb, mlflow"),
    ({"project": "my project"}, "is not a tracker name"),
    ({"trackio_space_id": "nospace"}, "write it as 'user/space'"),
])
def test_bad_tracking_fields_are_refused_with_the_fix(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**fields)


def test_a_tracker_that_is_not_installed_fails_the_start_check(monkeypatch) -> None:
    monkeypatch.setitem(T.SINKS, "wandb", T.Sink("wandb", "finetune_mcp_no_such_tracker", "wandb"))
    with pytest.raises(ConfigError, match=r"report_to asks for wandb, which is not installed here; install "
                                          r"pip install 'finetune-mcp\[wandb\]'"):
        check_trackers(_config(report_to=["trackio", "wandb"]))
    check_trackers(_config(report_to=["trackio"]))  # installed: passes
    with pytest.raises(ConfigError, match="trackio_space_id is set but report_to has no 'trackio'"):
        check_trackers(_config(trackio_space_id="user/space"))


def test_a_workers_variables_are_its_trackers_only(tmp_path, tiny_model_dir) -> None:
    """The train kind's placement names the W&B key only for a job that reports to W&B (the manager hands
    named variables to the worker: `jobs.manager.JobManager._worker_env`)."""
    settings = Settings(home=tmp_path)
    place = kinds.get_kind("train").place
    plain = place(build_config({"model": str(tiny_model_dir), "dataset": "d.jsonl"}), "local", settings)
    tracked = place(build_config({"model": str(tiny_model_dir), "dataset": "d.jsonl", "report_to": ["wandb", "mlflow"]}),
                    "local", settings)
    assert not set(plain.env) & T.TRACKING_VARIABLES
    assert {"WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"} <= set(tracked.env)
    assert "TRACKIO_DIR" not in tracked.env
