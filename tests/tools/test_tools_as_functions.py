"""Tools are module-level functions: a test (or a reader) imports one and calls it with the job
manager passed in, no server and no client; the server lists exactly the functions the modules name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from finetune_mcp.config import Settings
from finetune_mcp.errors import JobError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.jobs.store import Job, JobState
from finetune_mcp.server.app import TOOL_MODULES
from finetune_mcp.tools.training import cancel_job, get_job, list_jobs

CONTRACT = Path(__file__).parents[1] / "server" / "tool_contract.json"


@pytest.fixture
def manager(tmp_path: Path):
    manager = JobManager(Settings(home=tmp_path / "home"))
    now = time.time()
    manager.store.insert(Job(id="ft-0123456789ab", state=JobState.QUEUED, target="local", backend="local",
                             device="cpu", slot="cpu", placement={"backend": "local", "device": "cpu", "reason": "the test placed it"},
                             config={"model": "m", "dataset": "d.jsonl"},
                             run_dir=str(tmp_path / "run"), created_at=now, updated_at=now))
    yield manager
    manager.close()


async def test_job_tools_are_called_as_functions_with_the_manager_injected(manager: JobManager) -> None:
    listed = await list_jobs(manager=manager)
    assert listed.count == 1 and listed.jobs[0].job_id == "ft-0123456789ab"
    assert listed.jobs[0].state == "queued" and listed.jobs[0].model == "m"
    view = await get_job("ft-0123456789ab", manager=manager)
    assert view.dataset == "d.jsonl" and view.placement_reason == "the test placed it"
    cancelled = await cancel_job("ft-0123456789ab", manager=manager)
    assert cancelled.state == "cancelled"
    assert (await list_jobs(state="queued", manager=manager)).count == 0
    with pytest.raises(JobError, match="ft-ffffffffffff"):
        await get_job("ft-ffffffffffff", manager=manager)


def test_every_tool_module_names_its_tools_once() -> None:
    names = [fn.__name__ for module in TOOL_MODULES for fn in module.TOOLS]
    assert names == list(json.loads(CONTRACT.read_text(encoding="utf-8")))  # the server lists them in this order
    for module in TOOL_MODULES:
        for fn in module.TOOLS:
            assert fn.__module__ == module.__name__ and hasattr(fn, "__fastmcp__"), fn
