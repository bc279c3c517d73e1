"""What a pod sends home of its checkpoints: the newest whole ones within the size limit, and a record of
what stayed behind (the tar the real pod server builds, read back as the local side extracts it)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from finetune_mcp.jobs.backends.runpod.pod_server import _add_checkpoints


def _archive(checkpoints: Path, limit: int) -> tuple[list[str], dict]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_checkpoints(tar, checkpoints, limit)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        record = json.loads(tar.extractfile("checkpoints/transfer.json").read())  # type: ignore[union-attr]
    return names, record


def test_the_newest_checkpoints_that_fit_come_whole_and_the_rest_are_named(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"w" * 600)
        (folder / "optimizer.pt").write_bytes(b"o" * 400)  # 1,000 bytes a checkpoint
    names, record = _archive(tmp_path / "checkpoints", 2_500)
    assert [n for n in names if n != "checkpoints/transfer.json"] == [
        "checkpoints/checkpoint-4/adapter_model.safetensors", "checkpoints/checkpoint-4/optimizer.pt",
        "checkpoints/checkpoint-6/adapter_model.safetensors", "checkpoints/checkpoint-6/optimizer.pt"]
    assert record == {"limit_bytes": 2_500, "brought_back": [{"step": 6, "bytes": 1000}, {"step": 4, "bytes": 1000}],
                      "left_on_pod": [{"step": 2, "bytes": 1000}]}
    names, record = _archive(tmp_path / "checkpoints", 0)  # the limit at 0: none, and the record says so
    assert names == ["checkpoints/transfer.json"] and len(record["left_on_pod"]) == 3


def test_a_run_without_checkpoints_adds_nothing(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_checkpoints(tar, tmp_path / "checkpoints", 10**9)
        assert tar.getmembers() == []
