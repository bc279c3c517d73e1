"""A full disk is named as such however the failed write reports it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from finetune_mcp.runs import disk

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 109632 vs 109520"


def test_enospc_and_its_wordings_are_a_full_disk(tmp_path: Path) -> None:
    assert disk.write_failure_message(OSError(errno.ENOSPC, "No space left on device"), tmp_path).startswith(
        f"disk full at {tmp_path}: free ")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = RuntimeError("database or disk is full")
    assert disk.is_disk_full(wrapped)


def test_torchs_short_write_is_a_full_disk_only_when_the_disk_is_full(tmp_path: Path, monkeypatch) -> None:
    short = RuntimeError(TORCH_SHORT_WRITE)
    monkeypatch.setattr(disk, "free_bytes", lambda path: 4096)
    assert disk.write_failure_message(short, tmp_path).startswith(f"disk full at {tmp_path}: free 0.00 GB")
    monkeypatch.setattr(disk, "free_bytes", lambda path: 50 * 2**30)
    assert disk.write_failure_message(short, tmp_path) is None  # a disk with room: some other fault


@pytest.mark.parametrize("text", ["CUDA out of memory", "unexpected keyword argument"])
def test_other_errors_are_not_write_failures(tmp_path: Path, monkeypatch, text: str) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
    assert disk.write_failure_message(RuntimeError(text), tmp_path) is None
