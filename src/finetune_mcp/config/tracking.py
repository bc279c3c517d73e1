"""Where a run's metrics go besides events.jsonl (`TrackingConfig`), and what each tracker needs.

TensorBoard is always on (the project's own callback writes `tensorboard/`, which the card, the
screenshots and `tensorboard_screenshot` read). Trackio, Weights & Biases and MLflow are asked for
in `report_to`; they receive the very log dicts TensorBoard does (transformers' integrations are
called on the same `Trainer.log`), so the entropy scalars and a method's own metrics reach every
sink. Each is an optional extra of the package (`pip install 'finetune-mcp[trackio]'`, ...): asking for
one that is not installed fails at start, before any job exists.

`SINKS` says, per tracker, the variables of the server's environment its worker receives, and only
when that tracker is asked for (`worker_variables`): the W&B key, MLflow's credentials and server.
They travel as the job's placement names them (`jobs.worker_env`), to a pod in the start request,
never in a spec, a log, a result or a pod's environment.

Defaults, when the operator set nothing: Trackio local (no Space) with its store in the run's
`tracking/trackio/`; W&B offline (no key) in `tracking/wandb/`; MLflow's file store in
`tracking/mlruns/`. The run name defaults to the job id (an experiment's run: `<experiment id>-<arm>-s<seed>`);
the project to `finetune-mcp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SinkName = Literal["tensorboard", "trackio", "wandb", "mlflow"]
DEFAULT_PROJECT = "finetune-mcp"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_SPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class Sink:
    """One tracker: the module that must import, the extra that installs it, the variables its worker
    receives when it is asked for (`secrets`: those among them that are credentials)."""

    name: str
    module: str
    extra: str
    variables: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


SINKS: dict[str, Sink] = {s.name: s for s in (
    Sink("tensorboard", "tensorboard", ""),
    Sink("trackio", "trackio", "trackio", ("TRACKIO_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL")),
    Sink("wandb", "wandb", "wandb", ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_DIR"),
         ("WANDB_API_KEY",)),
    Sink("mlflow", "mlflow", "mlflow", ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_INSECURE_TLS"),
         ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")),
)}
TRACKING_VARIABLES = frozenset(v for sink in SINKS.values() for v in sink.variables)
TRACKING_SECRETS = frozenset(v for sink in SINKS.values() for v in sink.secrets)


class TrackingConfig(BaseModel):
    """Experiment trackers of a training run (TensorBoard always; Trackio, W&B, MLflow when asked)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    report_to: list[SinkName] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Trackers: tensorboard (always on), trackio (local unless trackio_space_id), wandb (offline "
        "without WANDB_API_KEY), mlflow (a local file store unless MLFLOW_TRACKING_URI). Each but tensorboard is "
        "an extra: pip install 'finetune-mcp[trackio]'.")
    project: str | None = Field(None, description=f"Tracker project (W&B project, MLflow experiment, Trackio "
                                f"project); default {DEFAULT_PROJECT!r}.")
    run_name: str | None = Field(None, description="Run name in the trackers; default the job id (an experiment's "
                                 "run: <experiment id>-<arm>-s<seed>).")
    trackio_space_id: str | None = Field(None, description="A Hugging Face Space ('user/space') Trackio logs to "
                                         "(needs HF_TOKEN); default none: the local store.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _sinks(cls, value: Any) -> Any:
        """A list, one name, or 'a,b'; GRANGER's 'none' means TensorBoard alone (it is always on)."""
        if value is None:
            return ["tensorboard"]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            names = [str(v).strip().lower() for v in value if str(v).strip().lower() != "none"]
            unknown = [n for n in names if n not in SINKS]
            if unknown:
                raise ValueError(f"unknown tracker {unknown[0]!r}; use {', '.join(SINKS)}")
            return list(dict.fromkeys(["tensorboard", *names]))
        return value

    @field_validator("project", "run_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a tracker name; use letters, digits, '.', '_', '-', '/' (≤ 128)")
        return value

    @field_validator("trackio_space_id")
    @classmethod
    def _space(cls, value: str | None) -> str | None:
        if value is not None and not _SPACE.match(value):
            raise ValueError(f"{value!r} is not a Space id; write it as 'user/space'")
        return value

    @property
    def trackers(self) -> list[str]:
        """The asked sinks other than TensorBoard (what transformers' `report_to` receives)."""
        return [s for s in self.report_to if s != "tensorboard"]


def worker_variables(config: TrackingConfig) -> tuple[str, ...]:
    """The names of the server's variables a worker of this config receives: its trackers' only."""
    return tuple(v for name in config.trackers for v in SINKS[name].variables)
