"""The worker's environment is an allow-list: a real worker process (the scripted worker, launched by
the real LocalBackend through the JobManager) receives the variables a worker needs and the ones its
placement names, and none of the server's other secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from finetune_mcp import kinds
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import JobState
from finetune_mcp.jobs.worker_env import is_base_variable, looks_secret, worker_environment

from .conftest import config

SERVER_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "OPENAI_API_KEY": "sk-openai-0123456789",
    "RUNPOD_API_KEY": "rpa_0123456789", "FINETUNE_MCP_TOKEN": "mcp-token-0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_old_name_0123456789", "DATABASE_URL": "postgres://u:p@db/x",
    "HF_TOKEN_PATH": "/somewhere/token", "NCCL_SOCKET_KEY": "nccl-secret",
}


async def run_env_job(make_manager, monkeypatch: pytest.MonkeyPatch, placement: Placement, omp: str | None = "1",
                      **manager_options: object) -> dict[str, str]:
    """The environment a worker saw; `omp`: the server's OMP_NUM_THREADS (None: unset)."""
    for name, value in {**SERVER_SECRETS, "TEACHER_KEY": "sk-teacher-0123456789",
                        "FINETUNE_MCP_TEACHER_KEYS": "TEACHER_KEY=http://127.0.0.1:9/v1",
                        "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    manager = make_manager("env", placer=lambda c, t, s: placement, **manager_options)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        job = await kinds.start_job(manager, "train", config(), roots=None)
        job = await manager.wait(job.id, 30)
        tg.cancel_scope.cancel()
    manager.close()  # the next manager on this home supervises
    assert job.state is JobState.SUCCEEDED, job.error
    return json.loads((Path(job.run_dir) / "worker-env.json").read_text())


async def test_a_worker_gets_only_what_it_needs(make_manager, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    env = await run_env_job(make_manager, monkeypatch, Placement("local", "cpu", None, "cpu", env=("TEACHER_KEY",)))
    assert env["PATH"] and env["HOME"] and env["FINETUNE_MCP_HOME"] == str(home)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert env["TEACHER_KEY"] == "sk-teacher-0123456789"  # named by the placement (an enhancement's key)
    assert env["FINETUNE_MCP_TEACHER_KEYS"]  # the worker re-checks its key's endpoint with it
    leaked = sorted(set(SERVER_SECRETS) & set(env))
    assert leaked == [], f"the worker received {leaked}"


async def test_a_training_worker_does_not_get_a_teacher_key(make_manager, monkeypatch: pytest.MonkeyPatch) -> None:
    env = await run_env_job(make_manager, monkeypatch, Placement("local", "cpu", None, "cpu"))
    assert "TEACHER_KEY" not in env and "OPENAI_API_KEY" not in env


async def test_cpu_slots_share_the_cores(make_manager, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CPU slots: each worker gets half the cores as OpenMP threads (torch would start one per core in
    both); one slot, or a value the server's environment sets, is left alone."""
    cpu = Placement("local", "cpu", None, "cpu")
    shared = await run_env_job(make_manager, monkeypatch, cpu, omp=None, max_cpu_jobs=2)
    alone = await run_env_job(make_manager, monkeypatch, cpu, omp=None, max_cpu_jobs=1)
    chosen = await run_env_job(make_manager, monkeypatch, cpu, omp="3", max_cpu_jobs=2)
    assert shared["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert "OMP_NUM_THREADS" not in alone and chosen["OMP_NUM_THREADS"] == "3"


def test_the_allow_list_rules() -> None:
    assert looks_secret("HF_TOKEN") and looks_secret("FINETUNE_MCP_WORKER_TOKEN") and looks_secret("MY_API_KEY")
    assert looks_secret("HF_TOKEN_PATH") and looks_secret("DB_PASSWORD") and looks_secret("X_SECRETS")
    assert not looks_secret("TOKENIZERS_PARALLELISM") and not looks_secret("FINETUNE_MCP_TEACHER_KEYS")
    assert is_base_variable("PYTHONPATH") and is_base_variable("HF_HOME") and is_base_variable("LC_ALL")
    assert not is_base_variable("HF_TOKEN") and not is_base_variable("AWS_ACCESS_KEY_ID")
    assert not is_base_variable("FINETUNE_MCP_TOKEN") and not is_base_variable("GITHUB_TOKEN")
    built = worker_environment({"PATH": "/bin", "AWS_ACCESS_KEY_ID": "x"}, {"HF_TOKEN": "hf_y"})
    assert built == {"PATH": "/bin", "HF_TOKEN": "hf_y"}
