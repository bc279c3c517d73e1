"""`deploy_to_hf`: publish a succeeded job to the Hugging Face Hub. Nothing else in the product calls
it: an agent reaches it only when the user asks (the `finetune-deploy` prompt leads there), and the
tool itself asks the user before anything is uploaded (`tools.consent`: an elicitation form with
the repo id, visibility and files, or `confirm=true` from a client that cannot show one)."""

from __future__ import annotations

import functools
from typing import Annotated

import anyio
from fastmcp import Context
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field, SecretStr

from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.report.deploy import deploy_run, plan_deploy, validate_repo_id
from finetune_mcp.tools import get_manager
from finetune_mcp.tools.card import succeeded_run
from finetune_mcp.tools.consent import ConsentRecord, ask_consent

JobId = Annotated[str, Field(description="Job id, e.g. 'ft-3f9a0c1b2d4e'.", max_length=64)]


class DeployResult(BaseModel):
    job_id: str
    repo_id: str
    url: str = Field(description="The model's page on the Hub.")
    commit_oid: str = Field(description="The one commit that holds everything uploaded.")
    commit_url: str
    private: bool | None = Field(description="Visibility as the Hub reports it after the commit.")
    merged: bool = Field(description="True: a merged 16-bit model; False: the LoRA adapter.")
    files: list[str] = Field(description="Paths in the repo.")
    bytes_uploaded: int
    consent: ConsentRecord | None = Field(None, description="What the user agreed to before the upload, and how.")


class DeployConsent(BaseModel):
    """The form the user answers before an upload (the terms are in its message)."""

    publish: bool = Field(title="Publish", description="Upload these files to this Hugging Face repo now?")


@tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False,
                                      openWorldHint=True))
async def deploy_to_hf(
    job_id: JobId,
    repo_id: Annotated[str, Field(
        description="Target repo 'owner/name' (or 'name' for the token's own account); created if missing.",
        min_length=1, max_length=200)],
    ctx: Context,
    private: Annotated[bool, Field(description="Create the repo private (an existing repo keeps its "
                                               "visibility).")] = True,
    merge: Annotated[bool, Field(description="Upload the adapter merged into its base as a 16-bit model "
                                             "instead of the LoRA adapter (much larger).")] = False,
    include_gguf: Annotated[bool, Field(description="Also upload the job's verified GGUF files and Ollama "
                                                    "Modelfiles (made by export_model), in the same commit; "
                                                    "the card gets a 'Use with llama.cpp / Ollama' section."
                                        )] = False,
    token: Annotated[SecretStr | None, Field(description="Hugging Face write token; default HF_TOKEN from "
                                                         "the server's environment. Never echoed.")] = None,
    confirm: Annotated[bool, Field(description="Only for clients that cannot show the user a form (no MCP "
                                   "elicitation): true once you showed the user the repo id, visibility and "
                                   "files and they agreed. Clients with elicitation ask the user directly.")] = False,
    manager: JobManager = Depends(get_manager),
) -> DeployResult:
    """Upload a succeeded job to the Hugging Face Hub — ONLY when the user explicitly asks to
    publish. The server asks the user to confirm the repo id, visibility and files (MCP
    elicitation); a client that cannot show that form gets an error listing the terms and must pass
    confirm=true after the user agreed. One commit holds the adapter (or merged model), the model
    card with its plots and the training metrics; if anything fails, nothing is committed.
    Example: deploy_to_hf("ft-3f9a0c1b2d4e", "alice/qwen3-4b-arangodb-qa") →
    {"url": "https://huggingface.co/alice/qwen3-4b-arangodb-qa", "commit_oid": "3f2c…", "private": true}."""
    validate_repo_id(repo_id)
    run = succeeded_run(manager, job_id, "a deployment")
    secret = token.get_secret_value() if token is not None else None
    plan = await anyio.to_thread.run_sync(functools.partial(
        plan_deploy, run, repo_id, token=secret, private=private, merge=merge, include_gguf=include_gguf))
    agreed = await ask_consent(ctx, action=f"deploying {job_id} to {repo_id}", summary=plan.summary(),
                               terms=plan.terms(), form=DeployConsent, agree_field="publish", confirm=confirm)
    if isinstance(agreed, InputRequiredResult):
        return agreed  # type: ignore[return-value]  # 2026-07-28: the client asks the user, then calls again
    result = await anyio.to_thread.run_sync(functools.partial(
        deploy_run, run, repo_id, token=secret, private=private, merge=merge, include_gguf=include_gguf))
    return DeployResult(job_id=job_id, **result.to_dict(), consent=agreed[0])


TOOLS = (deploy_to_hf,)
