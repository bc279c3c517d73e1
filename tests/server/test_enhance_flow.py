"""enhance_dataset through the real server over stdio (real MCP client, real workers): a bad teacher
key name is refused before any job exists; an enhancement job runs to success, its output trains in a
start_finetune job, and the model card tells how the data was made; a server killed mid-enhancement
finds the job again and cancel_job stops it, keeping what finished. The teacher is the loopback
OpenAI-compatible stand-in (the tiny model over real HTTP), reached by the workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio
import pytest

from finetune_mcp.jobs.backends.local import process_group_alive
from finetune_mcp.testing import synthetic_examples
from standins.openai_compat import OpenAICompatStandIn

from .conftest import SECRET

pytestmark = pytest.mark.slow

KEY = "sk-test-mcpTEACHER-0123456789abcdef"
TRAIN = {"max_examples": 6, "max_seq_length": 128, "per_device_train_batch_size": 2,
         "gradient_accumulation_steps": 1, "validation_split": 0}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    from finetune_mcp.testing import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("teacher-model"))
    with OpenAICompatStandIn(model, api_key=KEY) as server:
        yield server


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    """Six questions; every other one has `answer_regex: .*` (any answer passes), the rest need the real answer."""
    rows = [{"messages": [{"role": "user", "content": ex["question"]}, {"role": "assistant", "content": ex["answer"]}],
             "metadata": {"answer_regex": ".*"} if i % 2 == 0 else {"task": ex["task"]}}
            for i, ex in enumerate(synthetic_examples(6, seed=5))]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def enhance_args(tiny_model: Path, qa: Path, teacher: OpenAICompatStandIn, **overrides) -> dict:
    args = {
        "dataset": str(qa), "teacher": "tiny-teacher", "model": str(tiny_model), "judge": "reference:regex",
        "max_iterations": 2, "hint_rule": "wrong", "teacher_base_url": teacher.url, "teacher_api_key_env": "TEACHER_KEY",
        "config_overrides": {"student_max_new_tokens": 8, "batch_size": 3, "retry_backoff_s": 0.01,
                             "teacher": {"max_tokens": 8}},
    }
    args.update(overrides)
    return args


async def test_enhance_then_train_on_the_output(server_home, tiny_model: Path, qa: Path, teacher) -> None:
    teacher.reset()
    server = server_home(TEACHER_KEY=KEY,
                         FINETUNE_MCP_TEACHER_KEYS=f"TEACHER_KEY={teacher.url},NO_SUCH_KEY_VAR={teacher.url}")
    async with server.client() as client:
        refused = await client.call_tool("enhance_dataset", enhance_args(
            tiny_model, qa, teacher, teacher_api_key_env="NO_SUCH_KEY_VAR"), raise_on_error=False)
        assert refused.is_error and "NO_SUCH_KEY_VAR" in refused.content[0].text and "is not set" in refused.content[0].text
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0

        started = (await client.call_tool("enhance_dataset", enhance_args(tiny_model, qa, teacher))).structured_content
        assert (started["kind"], started["state"], started["device"]) == ("enhance", "queued", "cpu")
        assert started["judge"] == "reference:regex" and "H₁ / log V" in started["weight_formula"]
        done = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 150})).structured_content
        assert done["state"] == "succeeded", done["error"]
        assert (done["step"], done["total_steps"]) == (6, 6)
        assert done["metrics"]["enhance/convergence_rate"] == 0.5 and done["metrics"]["enhance/hints_given"] == 3
        assert f"dataset='{started['output']}'" in done["hint"]
        listed = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
        assert [j["kind"] for j in listed] == ["enhance"]
        spec = json.loads((await client.read_resource(f"job://{started['job_id']}/spec"))[0].text)
        assert spec["kind"] == "enhance" and spec["teacher"]["api_key_env"] == "TEACHER_KEY"

        rows = [json.loads(line) for line in Path(started["output"]).read_text().splitlines()]
        assert len(rows) == 6 and sorted(r["weight"] == 0 for r in rows) == [False] * 3 + [True] * 3
        trained = (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": started["output"], "max_steps": 3, "target": "local",
            "config_overrides": TRAIN})).structured_content
        assert trained["kind"] == "train"
        finished = (await client.call_tool("wait_for_job", {"job_id": trained["job_id"], "timeout_s": 150})
                    ).structured_content
        assert finished["state"] == "succeeded", finished["error"]
        events = [json.loads(line) for line in Path(finished["run_dir"], "events.jsonl").read_text().splitlines()]
        losses = [e["metrics"]["train/loss"] for e in events if e["type"] == "progress"]
        assert len(losses) == 3 and max(losses) > 0  # a batch of weight-0 rows alone may log 0
        card = (await client.call_tool("generate_model_card", {"job_id": trained["job_id"]})).structured_content
    markdown = card["markdown"]
    assert "## Student–teacher dataset enhancement" in markdown and "`tiny-teacher at http://127.0.0.1" in markdown
    assert "3 example(s) had weight 0 and did not contribute to the loss" in markdown
    assert "| Converged (a round needed no hint) | 3 (50 %) |" in markdown
    assert len(teacher.requests) == 3 and all(r["authorized"] for r in teacher.requests)
    for path in server.home.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log", ".md", ".db"):
            text = path.read_text(errors="replace")
            assert KEY not in text and SECRET not in text, path
    assert KEY not in json.dumps(server.stdout_messages())


async def test_a_key_goes_only_where_the_operator_bound_it(server_home, tiny_model: Path, qa: Path, teacher) -> None:
    """Issue 16, finding 1: naming HF_TOKEN (or OPENAI_API_KEY, or PATH) as the teacher's key for a URL
    the caller picked is refused at start, with the fix; no job, no request reaches the URL."""
    teacher.reset()
    server = server_home(TEACHER_KEY=KEY, OPENAI_API_KEY="sk-openai-doNotLeak-0123456789",
                         FINETUNE_MCP_TEACHER_KEYS=f"TEACHER_KEY={teacher.url}")
    async with server.client() as client:
        async def refusal(**overrides) -> str:
            result = await client.call_tool("enhance_dataset", enhance_args(tiny_model, qa, teacher, **overrides),
                                            raise_on_error=False)
            assert result.is_error, overrides
            return result.content[0].text

        assert "finetune-mcp's own secrets" in await refusal(teacher_api_key_env="HF_TOKEN")
        assert "own secrets" in await refusal(teacher_api_key_env="RUNPOD_API_KEY")
        assert "may only be sent to https://api.openai.com/v1" in await refusal(teacher_api_key_env="OPENAI_API_KEY")
        assert "FINETUNE_MCP_TEACHER_KEYS='PATH=" in await refusal(teacher_api_key_env="PATH")
        elsewhere = await refusal(teacher_base_url="http://127.0.0.2:9/v1")  # TEACHER_KEY, but not to that URL
        assert f"may only be sent to {teacher.url}" in elsewhere
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    assert teacher.requests == []
    assert SECRET not in server.stderr_log.read_text() and SECRET not in json.dumps(server.stdout_messages())


async def test_restart_and_cancel_an_enhancement(server_home, tiny_model: Path, qa: Path, teacher) -> None:
    """A slow (then stalled) teacher keeps the job running; the server is SIGKILLed; the next server re-attaches the
    worker, and cancel_job stops it: cancelled, finished examples kept in enhanced.jsonl. The worker's
    environment holds its teacher key and none of the server's other secrets."""
    teacher.reset()
    teacher.always(delay_s=0.5)
    server = server_home(TEACHER_KEY=KEY, FINETUNE_MCP_TEACHER_KEYS=f"TEACHER_KEY={teacher.url}",
                         OPENAI_API_KEY="sk-openai-doNotLeak-0123456789", AWS_SECRET_ACCESS_KEY="aws-doNotLeak",
                         RUNPOD_API_KEY="rpa_doNotLeak")
    async with server.client() as client:
        started = (await client.call_tool("enhance_dataset", enhance_args(
            tiny_model, qa, teacher, max_iterations=4))).structured_content
        job_id = started["job_id"]
        with anyio.fail_after(90):
            while True:
                job = (await client.call_tool("get_job", {"job_id": job_id})).structured_content
                assert job["state"] in ("queued", "running"), job
                if job["step"] >= 3:  # the first batch is done: the worker really enhances
                    break
                await anyio.sleep(0.3)
        teacher.always(delay_s=20.0)  # from now on the teacher stalls, so the job is still mid-way at cancel
        assert job["hint"].startswith("enhancing the dataset")
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{job['worker']['pid']}/environ").read_text().split("\0") if "=" in item)
        assert environ["TEACHER_KEY"] == KEY and environ["FINETUNE_MCP_TEACHER_KEYS"]
        assert not {"OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "RUNPOD_API_KEY"} & set(environ)
        os.kill(_server_pid(job["worker"]["pid"]), signal.SIGKILL)

    async with server.client() as client:
        with anyio.fail_after(30):
            while (job := (await client.call_tool("get_job", {"job_id": job_id})).structured_content)["state"] != "running":
                await anyio.sleep(0.3)
        assert process_group_alive(job["worker"]["pgid"])  # re-attached, still enhancing
        cancelled = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
    teacher.reset()
    assert cancelled["state"] == "cancelled" and cancelled["kind"] == "enhance"
    assert not process_group_alive(job["worker"]["pgid"])
    out = Path(started["output"]).parent
    summary = json.loads((out / "summary.json").read_text())  # written as the worker stopped
    rows = (out / "enhanced.jsonl").read_text().splitlines()
    assert 3 <= summary["enhanced_examples"] == len(rows) < 6


def _server_pid(worker_pid: int) -> int:
    """The worker's parent is the server process (the stdio tee's child)."""
    return int(Path(f"/proc/{worker_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_dot_segments_cannot_carry_a_bound_key_elsewhere(server_home, tiny_model: Path, qa: Path,
                                                               teacher) -> None:
    """Issue 26 bug 8: a key bound to `…/v1` went to `…/v1/../../evil` (arrived as /evil/chat/completions),
    `%2e%2e` too; and a keyless endpoint reached any host: now only https or loopback, a plain base URL."""
    teacher.reset()
    server = server_home(TEACHER_KEY=KEY, FINETUNE_MCP_TEACHER_KEYS=f"TEACHER_KEY={teacher.url}")
    async with server.client() as client:
        async def refusal(**overrides) -> str:
            result = await client.call_tool("enhance_dataset", enhance_args(tiny_model, qa, teacher, **overrides),
                                            raise_on_error=False)
            assert result.is_error, overrides
            return result.content[0].text

        for escape in (f"{teacher.url}/../../evil", f"{teacher.url}/%2e%2e/%2E%2E/evil", f"{teacher.url}/./x/.."):
            assert "'..' path segments" in await refusal(teacher_base_url=escape), escape
        keyless = await refusal(teacher_base_url="http://10.0.0.5:9/v1", teacher_api_key_env="")
        assert "only over https or on this machine" in keyless
        assert "query or fragment" in await refusal(teacher_base_url=f"{teacher.url}?x=1", teacher_api_key_env="")
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    assert teacher.requests == []
