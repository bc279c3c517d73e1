"""Teacher/judge keys go only to the endpoints the operator bound them to (`enhance.keys`): the rule
itself, and the worker's own check, which holds even for a spec.json that never passed the server's
start check (the real worker process against the loopback OpenAI-compatible stand-in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_mcp.enhance.config import build_enhance_config
from finetune_mcp.enhance.keys import KEYS_ENV, check_key_binding, key_bindings
from finetune_mcp.errors import ConfigError
from standins.openai_compat import OpenAICompatStandIn

HF_SECRET = "hf_KEYBINDINGdoNotLeak0123456789"


def refused(key_env: str, url: str, **env: str) -> str:
    with pytest.raises(ConfigError) as err:
        check_key_binding(key_env, url, f"t at {url}", env)
    return str(err.value)


def test_project_secrets_are_never_teacher_keys() -> None:
    for name in ("HF_TOKEN", "RUNPOD_API_KEY", "FINETUNE_MCP_TOKEN", "HUGGING_FACE_HUB_TOKEN", "FINETUNE_MCP_HOME"):
        message = refused(name, "http://127.0.0.1:8000/v1", **{KEYS_ENV: f"{name}=http://127.0.0.1:8000/v1"})
        assert "finetune-mcp's own secrets" in message and "variable of its own" in message
    with pytest.raises(ConfigError, match="own secrets"):  # not even the operator can bind one
        key_bindings({KEYS_ENV: "HF_TOKEN=https://evil.example/v1"})


def test_a_key_goes_only_to_its_bound_endpoint() -> None:
    check_key_binding("OPENAI_API_KEY", "https://api.openai.com/v1", "gpt at openai", {})
    check_key_binding("OPENAI_API_KEY", "https://API.openai.com:443/v1/", "gpt at openai", {})
    assert "may only be sent to https://api.openai.com/v1" in refused("OPENAI_API_KEY", "https://evil.example/v1")
    for lookalike in ("https://api.openai.com.evil.example/v1", "https://api.openai.com:8443/v1",
                      "https://api.openai.com/v10", "http://api.openai.com/v1"):
        refused("OPENAI_API_KEY", lookalike)
    message = refused("PATH", "https://evil.example/v1")
    assert "not a teacher key the operator allowed" in message and f"{KEYS_ENV}='PATH=https://evil.example/v1'" in message
    bound = {KEYS_ENV: "TEACHER_KEY=http://127.0.0.1:8000/v1, TEACHER_KEY=https://llm.example.com/openai"}
    check_key_binding("TEACHER_KEY", "http://127.0.0.1:8000/v1", "t", bound)
    check_key_binding("TEACHER_KEY", "https://llm.example.com/openai/v1", "t", bound)
    assert "may only be sent to" in refused("TEACHER_KEY", "http://127.0.0.1:8001/v1", **bound)
    check_key_binding(None, "http://127.0.0.1:8000/v1", "no key", {})  # no key: loopback or https


def test_keys_travel_only_over_https_or_loopback() -> None:
    assert "only over https" in refused("TEACHER_KEY", "http://10.0.0.5:8000/v1",
                                         **{KEYS_ENV: "TEACHER_KEY=https://10.0.0.5:8000/v1"})
    with pytest.raises(ConfigError, match="unencrypted"):
        key_bindings({KEYS_ENV: "TEACHER_KEY=http://10.0.0.5:8000/v1"})
    for bad in ("TEACHER_KEY", "TEACHER_KEY=ftp://x", "=https://x", "TEACHER_KEY=https://u:p@x/v1"):
        with pytest.raises(ConfigError, match=KEYS_ENV):
            key_bindings({KEYS_ENV: bad})
    check_key_binding("LOCAL", "http://localhost:8000/v1", "t", {KEYS_ENV: "LOCAL=http://localhost:8000/v1"})
    check_key_binding("LOCAL", "http://[::1]:8000/v1", "t", {KEYS_ENV: "LOCAL=http://[::1]:8000/v1"})


@pytest.mark.slow
def test_the_worker_refuses_an_unbound_key_in_a_hand_written_spec(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Defence in depth: a spec.json that names HF_TOKEN as the teacher's key, run by the real worker
    with HF_TOKEN set, fails before any request is sent."""
    key_env = "HF_TOKEN"
    from finetune_mcp.testing import write_dataset

    with OpenAICompatStandIn(tiny_model_dir) as teacher:
        config = build_enhance_config({
            "model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "qa.jsonl", "messages", n=2)),
            "judge": "reference:regex", "student_max_new_tokens": 4,
            "teacher": {"model": "tiny-teacher", "base_url": teacher.url, "api_key_env": key_env}})
        run = tmp_path / "run"
        run.mkdir()
        (run / "spec.json").write_text(config.model_dump_json())
        env = {**os.environ, key_env: HF_SECRET, KEYS_ENV: ""}
        done = subprocess.run([sys.executable, "-m", "finetune_mcp.cli", "worker", "run", str(run / "spec.json")],
                              cwd=run, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stdout + done.stderr
        assert teacher.requests == []  # nothing reached the endpoint, with or without the secret
    errors = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "error" and key_env in e["message"] for e in errors)
    assert HF_SECRET not in (run / "events.jsonl").read_text() + done.stdout + done.stderr
