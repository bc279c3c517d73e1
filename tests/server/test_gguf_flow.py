"""A GGUF file as `model` through the real server over stdio: bad files refused at the door, in a second,
with what to do, and nothing created (no job, no run directory, no cache entry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError

from finetune_mcp.testing.real_model import smollm2_gguf
from model.conftest import write_gguf


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "models"
    folder.mkdir()
    truncated = folder / "cut.gguf"
    with smollm2_gguf().open("rb") as src:
        truncated.write_bytes(src.read(5_000_000))
    not_gguf = folder / "weights.gguf"
    not_gguf.write_bytes(b"\x00" * 4096)
    two = folder / "two"
    two.mkdir()
    write_gguf(two / "a.gguf", "llama")
    write_gguf(two / "b.gguf", "llama")
    return {"truncated": truncated, "not_gguf": not_gguf, "bert": write_gguf(folder / "bert.gguf", "bert"),
            "two": two}


CASES = {
    "truncated": r"cut\.gguf is truncated \(5,000,000 bytes, its tensors need [\d,]+\); copy or download the file again",
    "not_gguf": r"weights\.gguf is not a GGUF file \(it does not start with the GGUF header\)",
    "bert": r"transformers cannot load the GGUF architecture 'bert' .*give the model's original Hugging Face folder",
    "two": r"holds 2 GGUF files \(a\.gguf, b\.gguf\); name the one to use",
}


async def test_bad_gguf_files_are_refused_by_every_tool_that_takes_a_model(server_home, bad_files, dataset: Path):
    server = server_home()
    async with server.client() as client:
        for case, message in CASES.items():
            model = str(bad_files[case])
            calls = {
                "start_finetune": {"model": model, "dataset": str(dataset), "target": "local"},
                "preview_training": {"model": model, "dataset": str(dataset)},
                "start_experiment": {"model": model, "dataset": str(dataset), "seeds": 1},
                "sample_model": {"model": model, "prompts": ["hi"]},
                "evaluate_model": {"model": model, "dataset": str(dataset)},
            }
            for tool, arguments in calls.items():
                with pytest.raises(ToolError, match=message):
                    await client.call_tool(tool, arguments)
        assert (await client.call_tool("list_jobs", {})).structured_content["jobs"] == []
    assert not (server.home / "models").exists()


async def test_a_gguf_outside_the_allowed_roots_is_refused_before_it_is_read(server_home, tmp_path: Path,
                                                                              dataset: Path):
    server = server_home(FINETUNE_MCP_ROOTS=str(dataset.parent))  # the data's folder, not the model's
    outside = write_gguf(tmp_path / "elsewhere.gguf", "llama")
    async with server.client(roots=[dataset.parent.as_uri()]) as client:
        with pytest.raises(ToolError, match=r"elsewhere\.gguf is outside the folders this server may use"):
            await client.call_tool("start_finetune", {"model": str(outside), "dataset": str(dataset),
                                                      "target": "local"})
