"""export_model over stdio: a real `finetune-mcp serve`, a real MCP client, finished tiny runs registered
as jobs. The refusals come back as tool errors that say what to fix, before any job or folder exists;
a good request becomes an export job whose worker writes a verified GGUF into the run's export/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.store import Job, JobState, JobStore
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import TinyRuns, copy_run, tiny_runs

pytestmark = pytest.mark.slow
GOOD, FAILED, NO_ADAPTER, EVAL = "ft-00000000900d", "ft-00000000fa11", "ft-0000000000ad", "ft-00000000e7a1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def _register(store: JobStore, job_id: str, run: RunDirectory, state: JobState, kind: str | None = None) -> None:
    now = time.time()
    config = run.read_json(run.spec) | ({"kind": kind} if kind else {})
    store.insert(Job(id=job_id, state=JobState.QUEUED, target="local", backend="local", device="cpu", slot="cpu",
                     placement=Placement("local", "cpu", None, "registered by the test").to_json(), config=config, run_dir=str(run.root), created_at=now, updated_at=now))
    if state is JobState.SUCCEEDED:
        store.transition(job_id, JobState.RUNNING)
    store.transition(job_id, state, reason="registered by the test")


async def test_export_model_refuses_with_the_fix_then_exports_a_verified_gguf(server_home, runs: TinyRuns,
                                                                             tmp_path: Path) -> None:
    server = server_home()
    store = server.store()
    good = copy_run(runs.plain, tmp_path / "good")
    _register(store, GOOD, good, JobState.SUCCEEDED)
    _register(store, FAILED, copy_run(runs.plain, tmp_path / "failed"), JobState.FAILED)
    bare = copy_run(runs.plain, tmp_path / "bare")
    shutil.rmtree(bare.adapter)
    _register(store, NO_ADAPTER, bare, JobState.SUCCEEDED)
    _register(store, EVAL, copy_run(runs.plain, tmp_path / "eval"), JobState.SUCCEEDED, kind="evaluate")
    store.close()

    async with server.client() as client:
        async def refused(args: dict) -> str:
            result = await client.call_tool("export_model", args, raise_on_error=False)
            assert result.is_error, result
            return result.content[0].text

        bad_name = await refused({"job_id": GOOD, "quantization": "q4"})
        failed = await refused({"job_id": FAILED})
        no_adapter = await refused({"job_id": NO_ADAPTER, "quantization": "f16"})
        evaluation = await refused({"job_id": EVAL})
        bad_format = await refused({"job_id": GOOD, "format": "onnx"})
        assert not (server.home / "runs").exists() or not any((server.home / "runs").iterdir())  # nothing made

        started = (await client.call_tool("export_model", {"job_id": GOOD, "quantization": "q8_0"})).structured_content
        done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 280})
                ).structured_content
        listed = (await client.call_tool("list_jobs", {})).structured_content

    assert "unknown GGUF quantization 'q4'" in bad_name and "q4_k_m" in bad_name and "f16" in bad_name
    assert f"job {FAILED} is failed" in failed and "wait_for_job" in failed
    assert "left no LoRA adapter" in no_adapter and "list_jobs" in no_adapter
    assert "is an evaluate job" in evaluation and "training job" in evaluation
    assert "gguf" in bad_format

    assert started["kind"] == "export" and started["state"] == "queued" and started["device"] == "cpu"
    assert started["destination"] == str(good.export) and started["file_name"] == "tiny-model-q8_0.gguf"
    assert done["state"] == "succeeded", done["error"]
    assert done["metrics"]["export/greedy_token_agreement"] >= 0.9
    assert "export/perplexity_delta" in done["metrics"] and "include_gguf=True" in done["hint"]
    assert (good.export / "tiny-model-q8_0.gguf").is_file() and (good.export / "tiny-model-q8_0.Modelfile").is_file()
    assert done["result"]["gguf"] == str(good.export / "tiny-model-q8_0.gguf")  # the export's view in get_job
    assert done["result"]["commands"]["ollama"].endswith("ollama run tiny-model-q8_0")
    result = RunDirectory(Path(done["run_dir"])).read_json(Path(done["run_dir"]) / "result.json")
    assert result["verification"]["tokenizer_identical"] == result["verification"]["prompts"]
    assert result["gguf"] == str(good.export / "tiny-model-q8_0.gguf")
    kinds = {job["job_id"]: job["kind"] for job in listed["jobs"]}
    assert kinds[started["job_id"]] == "export"
