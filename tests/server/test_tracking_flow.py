"""Trackers through the real server over stdio (the offline tiny model trained on the CPU by a real
worker): report_to=["trackio"] leaves loss, entropy and learning rate in Trackio's local store, read back
with Trackio's own reader; W&B (offline) and MLflow (a local file store) get the same numbers; get_job says
how to open each dashboard; the W&B key and MLflow's token reach the worker that asked for them and no
file, log or result."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune_mcp.testing.local_server import job_ended

pytestmark = pytest.mark.slow

TRAIN = {"target": "local", "max_steps": 4, "entropy_weighting": True, "config_overrides": {
    "max_examples": 16, "max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
    "validation_split": 0.25, "save_steps": 1000, "logging_steps": 1}}
WANDB_KEY = "wandb_TESTKEYdoNotLeak0123456789abcdef0123"
MLFLOW_TOKEN = "mlflow_TESTTOKENdoNotLeak0123456789"




def trackio_logs(store: str, project: str, run: str) -> list[dict[str, Any]]:
    """The run's rows as Trackio's own reader returns them (TRACKIO_DIR is read when trackio is imported)."""
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps(SQLiteStorage.get_logs(sys.argv[1], sys.argv[2]), default=str))")
    out = subprocess.run([sys.executable, "-c", code, project, run], env={"TRACKIO_DIR": store, "PATH": "/usr/bin"},
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wandb_history(path: Path) -> Iterator[dict[str, Any]]:
    """The history rows of an offline W&B run's transaction log (run-<id>.wandb: LevelDB's log format,
    32 KiB blocks of chunks with a 7-byte header, each record a `wandb_internal_pb2.Record`), which an
    offline run writes instead of wandb-summary.json."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4) and pending:  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                yield {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}


async def test_trackio_local_store_holds_the_runs_metrics(server_home, tiny_model: Path, dataset: Path) -> None:
    server = server_home()
    async with server.client() as client:
        started = await client.call_tool("start_finetune", {"model": str(tiny_model), "dataset": str(dataset),
                                                            "report_to": ["trackio"], "project": "tracking-e2e",
                                                            **TRAIN})
        job = await job_ended(client, started.structured_content["job_id"], 600)
    assert job["state"] == "succeeded", job["error"]
    tracking = job["tracking"]
    store = str(Path(job["run_dir"]) / "tracking" / "trackio")
    assert tracking["project"] == "tracking-e2e" and tracking["run_name"] == job["job_id"]
    assert tracking["trackers"]["trackio"]["dashboard"] == f"TRACKIO_DIR={store} trackio show --project tracking-e2e"
    assert tracking["tensorboard"].startswith(f"tensorboard --logdir {job['run_dir']}/tensorboard")

    logs = trackio_logs(store, "tracking-e2e", job["job_id"])
    steps = {row["train/global_step"]: row for row in logs if "train/loss" in row}  # Trackio's own step counts rows
    assert sorted(steps) == [1, 2, 3, 4], logs
    assert any("eval/loss" in row for row in logs)  # the evaluation during training too
    events = [json.loads(line) for line in (Path(job["run_dir"]) / "events.jsonl").read_text().splitlines()]
    progress = {e["step"]: e["metrics"] for e in events if e["type"] == "progress"}
    for step, row in steps.items():  # the same numbers as events.jsonl / TensorBoard, step for step
        assert row["train/loss"] == pytest.approx(progress[step]["train/loss"])
        assert row["train/entropy_mean"] == pytest.approx(progress[step]["train/entropy_mean"])
        assert row["train/learning_rate"] == pytest.approx(progress[step]["train/learning_rate"])
        assert row["train/entropy_weight_mean"] > 0  # a method metric of the entropy-weighted loss


async def test_wandb_offline_and_mlflow_file_store_keep_their_secrets(server_home, tiny_model: Path, dataset: Path,
                                                                      tmp_path: Path, monkeypatch) -> None:
    mlruns = tmp_path / "mlruns"
    server = server_home(WANDB_API_KEY=WANDB_KEY, WANDB_MODE="offline", MLFLOW_TRACKING_URI=mlruns.as_uri(),
                         MLFLOW_TRACKING_TOKEN=MLFLOW_TOKEN)
    outputs = []
    async with server.client() as client:
        plain = await job_ended(client, (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), **TRAIN})).structured_content["job_id"])
        started = await client.call_tool("start_finetune", {"model": str(tiny_model), "dataset": str(dataset),
                                                            "report_to": ["wandb", "mlflow"], "run_name": "wb-ml",
                                                            **TRAIN})
        job = await job_ended(client, started.structured_content["job_id"], 600)
        log = await client.read_resource(f"job://{job['job_id']}/log")
        outputs += [started.structured_content, job, plain, log[0].text]
    assert job["state"] == "succeeded", job["error"]
    assert plain["state"] == "succeeded" and plain["tracking"] == {
        "tensorboard": f"tensorboard --logdir {plain['run_dir']}/tensorboard (or tensorboard_screenshot)"}
    trackers = job["tracking"]["trackers"]
    assert trackers["wandb"]["mode"] == "offline" and "wandb sync" in trackers["wandb"]["dashboard"]
    assert trackers["mlflow"]["tracking_uri"] == mlruns.as_uri()

    [log_file] = list((Path(job["run_dir"]) / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = [row for row in wandb_history(log_file) if "train/loss" in row]
    assert [row["train/global_step"] for row in rows] == [1, 2, 3, 4]
    assert all(row["train/entropy_mean"] > 0 and "train/learning_rate" in row for row in rows)

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # this reader's, as the worker sets its own

    mlflow = MlflowClient(tracking_uri=mlruns.as_uri())
    [experiment] = [e for e in mlflow.search_experiments() if e.name == "finetune-mcp"]
    [run] = mlflow.search_runs([experiment.experiment_id])
    assert run.info.run_name == "wb-ml"
    losses = mlflow.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert {"entropy_mean", "learning_rate"} <= set(run.data.metrics)

    for secret in (WANDB_KEY, MLFLOW_TOKEN):
        assert secret not in json.dumps(outputs, default=str)
        leaked = [p for p in [*server.root.rglob("*"), *mlruns.rglob("*")]
                  if p.is_file() and secret.encode() in p.read_bytes()]
        assert leaked == []
