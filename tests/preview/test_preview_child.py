"""The server's warm preview child (`finetune-mcp preview --serve`): one process answers many
requests, a child that died is replaced on the next call, a refusal comes back as its message,
and a stuck child is killed at the timeout."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.errors import FinetuneError
from finetune_mcp.preview import child as preview_child
from finetune_mcp.testing import write_dataset


@pytest.fixture
def warm_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path / "home"))
    process = preview_child.PreviewChild()
    monkeypatch.setattr(preview_child, "_child", process)
    yield process
    process.close()


async def test_one_child_serves_many_previews_and_a_dead_one_is_replaced(
        warm_child: preview_child.PreviewChild, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = build_config({"model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=30)),
                           "max_steps": 2})
    first = await preview_child.preview_in_child(config, "local", examples=1)
    pid = warm_child._process.pid
    second = await preview_child.preview_in_child(config, "local", examples=1)
    assert warm_child._process.pid == pid  # warm: no new interpreter for the second call
    assert first.data == second.data and first.examples[0].text == second.examples[0].text

    missing = config.model_copy(update={"dataset": str(tmp_path / "missing.jsonl")})
    with pytest.raises(FinetuneError, match="no such file or folder"):
        await preview_child.preview_in_child(missing, "local", examples=1)
    assert warm_child._process.pid == pid  # a refusal is an answer, not a crash

    os.kill(pid, signal.SIGKILL)
    warm_child._process.wait()
    third = await preview_child.preview_in_child(config, "local", examples=1)
    assert warm_child._process.pid != pid and third.data == first.data


async def test_a_stuck_child_is_killed_at_the_timeout(warm_child: preview_child.PreviewChild, tiny_model_dir: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config({"model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=30))})
    await preview_child.preview_in_child(config, "local", examples=0)  # started and warm
    os.kill(warm_child._process.pid, signal.SIGSTOP)  # alive but answering nothing
    monkeypatch.setenv("FINETUNE_MCP_PREVIEW_TIMEOUT_S", "1")
    with pytest.raises(FinetuneError, match="longer than 1 s"):
        await preview_child.preview_in_child(config, "local", examples=0)
    assert warm_child._process is None  # killed and forgotten: the next call starts a fresh one


async def test_a_hung_preview_does_not_hold_the_others(tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26 weak point: one hung preview blocked every other preview until its timeout (300 s)."""
    import time

    import anyio

    monkeypatch.setenv("FINETUNE_MCP_HOME", str(tmp_path / "home"))
    pool = preview_child.PreviewPool(2)
    monkeypatch.setattr(preview_child, "_child", pool)
    config = build_config({"model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "d.jsonl", "messages", n=30))})
    try:
        await preview_child.preview_in_child(config, "local", examples=0)  # child 0 warm
        os.kill(pool._children[0]._process.pid, signal.SIGSTOP)  # alive but answering nothing
        monkeypatch.setenv("FINETUNE_MCP_PREVIEW_TIMEOUT_S", "60")
        done: dict[str, float] = {}
        began = time.monotonic()

        async def hung() -> None:
            with pytest.raises(preview_child.PreviewFailed):  # killed below, once the other preview answered
                await preview_child.preview_in_child(config, "local", examples=0)

        async with anyio.create_task_group() as group:
            group.start_soon(hung)
            await anyio.sleep(0.2)  # the hung request holds child 0
            report = await preview_child.preview_in_child(config, "local", examples=1)
            done["other"] = time.monotonic() - began
            os.kill(pool._children[0]._process.pid, signal.SIGKILL)  # end the hung one now
        assert report.examples and done["other"] < 50
    finally:
        pool.close()
