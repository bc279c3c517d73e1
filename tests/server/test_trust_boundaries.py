"""Trust boundaries through the real server over stdio: a function named by path runs only from a
module the operator allowed (FINETUNE_MCP_USER_FUNCTIONS), and what can be checked at start is,
with a plain message: a missing module, 4-bit on the CPU, a resume path that is no checkpoint, a
typed parameter out of range, a read-only home."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from finetune_mcp.jobs.router import detect_local_gpus
from finetune_mcp.jobs.store import JobStore

from .conftest import TEE

TINY = {"max_examples": 16, "max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
EXPERIMENT = {"max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
              "max_examples": 16, "validation_split": 0.25, "max_new_tokens": 4, "save_steps": 100_000}


def nothing_created(server) -> None:
    """No run directory and no job row: a refused start leaves nothing behind."""
    runs = server.home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    if (server.home / "jobs.db").exists():
        store = server.store()
        try:
            assert store.list(limit=100) == []
        finally:
            store.close()


async def refused(client: Client, tool: str, args: dict) -> str:
    result = await client.call_tool(tool, args, raise_on_error=False)
    assert result.is_error, result
    return result.content[0].text


async def test_a_function_from_a_module_not_allowed_is_refused_at_start(server_home, tiny_model: Path,
                                                                        dataset: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "sneaky_weights.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n\ndef fn(entropy, log_vocab):\n    return entropy\n")
    server = server_home(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    base = {"model": str(tiny_model), "dataset": str(dataset), "target": "local", "max_steps": 2,
            "config_overrides": TINY}
    async with server.client() as client:
        train = await refused(client, "start_finetune", {**base, "entropy_weighting": True,
                                                         "entropy_weight_fn": "os:system"})
        via_overrides = await refused(client, "start_finetune", {**base, "config_overrides": {
            **TINY, "enable_entropy_weighting": True, "entropy": {"function": "sneaky_weights:fn"}}})
        arms = await refused(client, "start_experiment", {
            "model": str(tiny_model), "dataset": str(dataset), "seeds": 1, "target": "local", "max_steps": 2,
            "config_overrides": EXPERIMENT,
            "arms": ["standard", {"name": "d", "enable_entropy_weighting": True, "entropy": {"function": "os:system"}}]})
        preview = await refused(client, "preview_training", {**base, "entropy_weighting": True,
                                                             "entropy_weight_fn": "os:system"})
    for message in (train, arms, preview):
        assert "'os:system' is not allowed" in message, message
        assert "set FINETUNE_MCP_USER_FUNCTIONS=os in the server's environment" in message, message
    assert "arm 'd'" in arms
    assert "FINETUNE_MCP_USER_FUNCTIONS=sneaky_weights" in via_overrides
    assert not marker.exists(), "the refused module was imported"
    nothing_created(server)


@pytest.mark.slow
async def test_an_allowed_user_function_trains(server_home, tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    (tmp_path / "consent_weights.py").write_text(textwrap.dedent(f"""
        def doubled(entropy, log_vocab):
            with open({str(calls)!r}, "a") as handle:
                handle.write("called\\n")
            return 2.0 + 0.0 * entropy
    """))
    server = server_home(FINETUNE_MCP_USER_FUNCTIONS="consent_weights",
                         PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    async with server.client() as client:
        started = (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), "entropy_weighting": True, "max_steps": 2,
            "entropy_weight_fn": "consent_weights:doubled", "target": "local", "config_overrides": TINY,
        })).structured_content
        done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 150})
                ).structured_content
    assert done["state"] == "succeeded", done["error"]
    assert calls.exists() and calls.read_text().count("called") >= 2  # the worker called it each step


async def test_what_fails_in_the_worker_fails_at_start_instead(server_home, tiny_model: Path, dataset: Path,
                                                              tmp_path: Path) -> None:
    server = server_home(FINETUNE_MCP_USER_FUNCTIONS="no_such_weights_module,json")
    base = {"model": str(tiny_model), "dataset": str(dataset), "target": "local", "max_steps": 2,
            "config_overrides": TINY}
    (tmp_path / "folder").mkdir()
    async with server.client() as client:
        missing = await refused(client, "start_finetune", {**base, "entropy_weighting": True,
                                                           "entropy_weight_fn": "no_such_weights_module:fn"})
        typo = await refused(client, "start_finetune", {**base, "entropy_weighting": True,
                                                        "entropy_weight_fn": "json:dumbs"})
        resume = await refused(client, "start_finetune", {**base, "config_overrides": {
            **TINY, "resume_from_checkpoint": str(tmp_path / "folder")}})
        resume_outside = await refused(client, "start_finetune", {**base, "config_overrides": {
            **TINY, "resume_from_checkpoint": "/etc"}})
        resume_gone = await refused(client, "start_finetune", {**base, "config_overrides": {
            **TINY, "resume_from_checkpoint": str(tmp_path / "gone")}})
        four_bit = None
        if not detect_local_gpus():
            four_bit = await refused(client, "start_finetune", {**base, "load_in_4bit": True})
        negative = await refused(client, "start_finetune", {**base, "max_steps": -3})
        word = await refused(client, "start_finetune", {**base, "learning_rate": "fast"})
    assert "no module 'no_such_weights_module'" in missing and "PYTHONPATH" in missing
    assert "'json' " in typo and "defines no 'dumbs'" in typo
    assert f"resume_from_checkpoint: '{tmp_path / 'folder'}' is not a training checkpoint (no trainer_state.json" in resume
    assert "resume_from_checkpoint: /etc is outside the folders this server may use" in resume_outside
    assert "does not exist" in resume_gone
    if four_bit is not None:
        assert "load_in_4bit=True needs a CUDA GPU" in four_bit and "drop load_in_4bit" in four_bit
        assert "target='runpod'" in four_bit
    assert negative == "start_finetune: max_steps must be greater than or equal to 1 (got -3)"
    assert word.startswith("start_finetune: learning_rate must be a valid number") and "(got 'fast')" in word
    for message in (negative, word):
        assert "pydantic" not in message and "\n" not in message
    nothing_created(server)


def _without_write_rights() -> list[str] | None:
    """A command prefix under which this process's files are not writable by the server: none needed
    for an ordinary user (chmod is enough); for root, setpriv without the capabilities that bypass
    file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search"] if setpriv else None


async def test_a_read_only_home_says_which_path_and_what_to_do(server_home, tiny_model: Path, dataset: Path) -> None:
    prefix = _without_write_rights()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    server = server_home()
    server.home.mkdir(parents=True)
    JobStore(server.home / "jobs.db").close()
    for path in (server.home / "jobs.db", server.home):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        transport = StdioTransport(
            sys.executable, [str(TEE), str(server.stdout_copy), "--", *prefix, sys.executable, "-m",
                             "finetune_mcp.cli", "serve"],
            env=server.env, keep_alive=False, log_file=server.stderr_log)
        async with Client(transport, timeout=120) as client:
            message = await refused(client, "start_finetune", {
                "model": str(tiny_model), "dataset": str(dataset), "target": "local", "max_steps": 2,
                "config_overrides": TINY})
            listing = await refused(client, "list_jobs", {})
    finally:
        server.home.chmod(0o755)
        (server.home / "jobs.db").chmod(0o644)
    for text in (message, listing):
        assert f"cannot write the job database {server.home / 'jobs.db'}" in text, text
        assert "set FINETUNE_MCP_HOME to a writable folder" in text and "check the permissions" in text
        assert "attempt to write a readonly database" not in text.split("(")[0]
