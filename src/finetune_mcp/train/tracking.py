"""The trackers of a training run, set up in the worker: what `TrainingArguments` gets (`report_to`,
`run_name`, `project`, `trackio_space_id`) and where each tracker writes when the operator set nothing.

transformers' own integrations (TrackioCallback, WandbCallback, MLflowCallback) do the logging: they
are called on the same `Trainer.log` as the project's TensorBoard and events callbacks, after the
trainer has added its entropy scalars, so every sink sees the same numbers under the same step.
TensorBoard itself stays the project's callback (`train.callbacks`), never transformers' second one.

Local defaults, in the run directory so a RunPod job brings them home with its artifacts:
  trackio  TRACKIO_DIR=<run>/tracking/trackio (a SQLite store per project; no Space)
  wandb    WANDB_DIR=<run>/tracking, WANDB_MODE=offline when no WANDB_API_KEY reached the worker
  mlflow   MLFLOW_TRACKING_URI=file:<run>/tracking/mlruns (MLflow 3's file store, kept on with
           MLFLOW_ALLOW_FILE_STORE=true: the sqlite store needs the full `mlflow` package), the
           experiment named after the project
What the operator set (TRACKIO_DIR, WANDB_MODE, MLFLOW_TRACKING_URI, ...) wins. `tracking/trackers.json`
records what was used and how to open each dashboard (`runs.artifacts.RunArtifacts.trackers`, get_job).
"""

from __future__ import annotations

import os
from typing import Any

from finetune_mcp.config.tracking import DEFAULT_PROJECT, SINKS, TrackingConfig
from finetune_mcp.runs.artifacts import TRACKERS_RECORD, tracking_folder
from finetune_mcp.runs.rundir import RunDirectory


def run_name(config: TrackingConfig, run: RunDirectory) -> str:
    """The given name, else the job id (the run directory's name, or the worker's FINETUNE_MCP_JOB_ID
    on a pod); an experiment's run: `<experiment's name or id>-<arm>-s<seed>`."""
    job_id = os.environ.get("FINETUNE_MCP_JOB_ID") or run.root.name
    experiment = run.root.parent.parent
    if run.root.parent.name == "runs" and (experiment / "spec.json").is_file():  # <experiment>/runs/<arm>-s<seed>
        prefix = config.run_name or (job_id if job_id != run.root.name else experiment.name)
        return f"{prefix}-{run.root.name}"
    return config.run_name or job_id


def tracker_arguments(config: TrackingConfig, run: RunDirectory) -> dict[str, Any]:
    """The `TrainingArguments` fields of the run's trackers, with each tracker's environment set first
    (trackio reads TRACKIO_DIR when it is imported, which the Trainer does on construction)."""
    trackers = config.trackers
    if not trackers:
        return {"report_to": "none"}
    project = config.project or DEFAULT_PROJECT
    folder = tracking_folder(run)
    record: dict[str, Any] = {"project": project, "run_name": run_name(config, run), "trackers": {}}
    if "trackio" in trackers:
        if not config.trackio_space_id:
            os.environ.setdefault("TRACKIO_DIR", str(folder / "trackio"))
        store = os.environ.get("TRACKIO_DIR")
        record["trackers"]["trackio"] = {
            "space_id": config.trackio_space_id, "dir": store,
            "dashboard": (f"https://huggingface.co/spaces/{config.trackio_space_id}" if config.trackio_space_id
                          else f"TRACKIO_DIR={store} trackio show --project {project}")}
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_DIR", str(folder))
        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_PROJECT"] = project
        mode = os.environ.get("WANDB_MODE", "online")
        record["trackers"]["wandb"] = {
            "mode": mode, "dir": os.environ["WANDB_DIR"],
            "dashboard": (f"wandb sync {os.environ['WANDB_DIR']}/wandb/offline-run-* (uploads the offline run; "
                          "needs WANDB_API_KEY)") if mode == "offline" else "the run's URL below"}
    if "mlflow" in trackers:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "mlruns").as_uri())
        os.environ["MLFLOW_EXPERIMENT_NAME"] = project
        uri = os.environ["MLFLOW_TRACKING_URI"]
        if uri.startswith("file:"):  # MLflow 3 keeps its file store working only when asked to
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        record["trackers"]["mlflow"] = {
            "tracking_uri": uri, "experiment": project,
            "dashboard": (f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}" if uri.startswith("file:")
                          else uri)}
    for name, entry in record["trackers"].items():  # which credentials the worker had: names, never values
        entry["credentials"] = [v for v in SINKS[name].secrets if os.environ.get(v)]
    run.write_json(folder / TRACKERS_RECORD, record)
    return {"report_to": trackers, "run_name": record["run_name"], "project": project,
            "trackio_space_id": config.trackio_space_id}


def close_trackers(trainer: Any, run: RunDirectory) -> None:
    """After `trainer.train()`: the integrations have ended their runs (Trackio finished, MLflow's run
    ended) but would open new ones for the final evaluation's logs, so they are detached here; the W&B
    run is finished once its URL (online) is in trackers.json. The final evaluation still reaches
    events.jsonl, TensorBoard and result.json."""
    import sys

    from transformers.integrations import MLflowCallback, TrackioCallback, WandbCallback

    for callback in (TrackioCallback, WandbCallback, MLflowCallback):
        trainer.remove_callback(callback)
    wandb = sys.modules.get("wandb")
    active = getattr(wandb, "run", None) if wandb is not None else None
    if active is None:
        return
    path = tracking_folder(run) / TRACKERS_RECORD
    url = getattr(active, "url", None)
    if url and path.is_file():
        record = run.read_json(path)
        record["trackers"].setdefault("wandb", {})["url"] = url
        run.write_json(path, record)
    wandb.finish()
