"""The `enhance_dataset` tool: student–teacher dataset enhancement driven by entropy, as a job.

The job runs like training (queued, running, cancellable, re-attached after a server restart; get_job,
list_jobs, wait_for_job and cancel_job work on it) and writes `<run_dir>/enhance/enhanced.jsonl`,
which `start_finetune(dataset=...)` trains on, each example weighted by its `weight`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import Field

from finetune_mcp import kinds
from finetune_mcp.errors import JobError
from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.roots import allowed_roots
from finetune_mcp.tools.training import JobView, job_view


class EnhanceStartResult(JobView):
    output: str = Field(description="Where the enhanced dataset will be: pass it to start_finetune(dataset=...).")
    summary_path: str = Field(description="summary.json once the job ends: convergence, hints, entropy, weights.")
    judge: str = Field(description="What decides right or wrong: reference:<mode> or the judge model.")
    weight_formula: str


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
async def enhance_dataset(
    dataset: Annotated[str, Field(description="Local JSONL/JSON/CSV/Parquet file or folder (or a Hugging Face "
                                  "dataset id) of conversations; each example's last assistant reply is the "
                                  "reference answer.", min_length=1, max_length=1000)],
    teacher: Annotated[str, Field(description="Teacher model served by an OpenAI-compatible endpoint (e.g. "
                                  "'gpt-4o-mini', a vLLM model name), or 'hf:<model id or folder>' to run a local "
                                  "Hugging Face model.", min_length=1, max_length=500)],
    model: Annotated[str, Field(description="The student: the base model you will fine-tune (Hugging Face id "
                                "or local folder). Its own answers and uncertainty drive the hints.",
                                min_length=1, max_length=1000)],
    ctx: Context,
    judge: Annotated[str | None, Field(description="None or 'reference' (default: check answers against the "
                                       "dataset's, normalised), 'reference:exact', 'reference:regex', or a judge "
                                       "model name on the teacher's endpoint (scores 0-10).", max_length=500)] = None,
    max_iterations: Annotated[int, Field(description="Rounds per example (1 = no hints).", ge=1, le=20)] = 3,
    max_examples: Annotated[int | None, Field(description="Enhance a seeded random subset of this many.",
                                              ge=1, le=100_000_000)] = None,
    teacher_base_url: Annotated[str | None, Field(description="The endpoint's base URL, e.g. "
                                                  "'http://127.0.0.1:8000/v1' (default: OpenAI's).",
                                                  max_length=1000)] = None,
    teacher_api_key_env: Annotated[str | None, Field(
        description="NAME of the environment variable (of the server) holding the endpoint's key, never the "
        "key itself; default OPENAI_API_KEY; '' for an endpoint without a key. The key is sent only to a base "
        "URL the operator bound it to (FINETUNE_MCP_TEACHER_KEYS; well-known providers' keys to their own "
        "APIs).", max_length=128)] = None,
    hint_rule: Annotated[Literal["wrong", "entropy", "wrong_or_entropy"], Field(
        description="When the teacher gives a hint: the answer is wrong, the student was uncertain (a span of "
        "high-entropy tokens), or either.")] = "wrong_or_entropy",
    target: Annotated[Literal["auto", "local"], Field(description="Runs on this machine: a local GPU, "
                                                      "else the CPU (small models).")] = "auto",
    resume_from: Annotated[str | None, Field(description="Job id of an earlier enhance_dataset job: its finished "
                                             "examples are reused, only the rest is done.", max_length=64)] = None,
    config_overrides: Annotated[dict[str, Any] | None, Field(
        description="Any other StudentTeacherConfig field, e.g. {\"entropy_threshold\": 2.0, "
        "\"student_max_new_tokens\": 512, \"batch_size\": 8, \"budget_max_calls\": 2000, \"thinking_format\": "
        "\"<think>{thinking}</think>{answer}\", \"weight\": {\"entropy_scale\": 2}}.")] = None,
    manager: JobManager = Depends(get_manager),
) -> EnhanceStartResult:
    """Before fine-tuning, let the student answer each question in up to `max_iterations` rounds, with
    hints from a teacher model where it is wrong or unsure (high token entropy); writes an enhanced
    chat dataset (reasoning + answer, a per-example `weight`) as a background job.

    Follow it with wait_for_job / get_job, then train on `output`. Example: enhance_dataset(
    dataset="data/qa.jsonl", teacher="gpt-4o-mini", model="unsloth/Qwen3-4B", max_examples=200)
    → {"job_id": "ft-5c0ffee12345", "state": "queued", "output": ".../enhance/enhanced.jsonl", ...}.
    """
    from finetune_mcp.enhance.config import build_enhance_config
    from finetune_mcp.enhance.outputs import ENHANCE_DIR, weight_formula

    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    data: dict[str, Any] = dict(config_overrides or {})
    endpoint = dict(data.pop("teacher", None) or {})
    endpoint["model"] = teacher
    if teacher_base_url is not None:
        endpoint["base_url"] = teacher_base_url
    if teacher_api_key_env is not None:
        endpoint["api_key_env"] = teacher_api_key_env or None
    data.update(model=model, dataset=dataset, teacher=endpoint, max_iterations=max_iterations,
                hint_rule=hint_rule)
    if judge is not None:
        data["judge"] = judge
    if max_examples is not None:
        data["max_examples"] = max_examples
    if resume_from is not None:
        earlier = manager.get(resume_from)
        if kinds.kind_of(earlier).name != "enhance":
            raise JobError(f"{resume_from} is not an enhance_dataset job; pass the id of one (see list_jobs)",
                           job_id=resume_from)
        data["resume_from"] = str(Path(earlier.run_dir) / ENHANCE_DIR / "progress.jsonl")
    config = build_enhance_config(data)
    job = await kinds.start_job(manager, "enhance", config, target, roots=roots)
    out = Path(job.run_dir) / ENHANCE_DIR
    return EnhanceStartResult(**job_view(manager, job).model_dump(), output=str(out / "enhanced.jsonl"),
                              summary_path=str(out / "summary.json"), judge=config.judge_name,
                              weight_formula=weight_formula(config.weight))


TOOLS = (enhance_dataset,)
