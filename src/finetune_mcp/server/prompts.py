"""Prompts `finetune` and `finetune-deploy`: Claude Code shows them as /finetune slash commands.

They hand the agent a plan that uses this server's tools in order, with the decisions it must make
with the user (model, dataset, entropy weighting, where to run) and one firm rule: nothing is
uploaded unless the user asked for it in so many words.
"""

from __future__ import annotations

from fastmcp import FastMCP

FINETUNE = """\
Fine-tune a language model with the finetune-mcp tools.

Requested: model = {model}; dataset = {dataset}; entropy weighting = {entropy_weighting}; target = {target}.
{goal_line}
1. Settle the inputs with the user. Model: a Hugging Face id (e.g. unsloth/Qwen3-4B) or a local
   folder with config.json. Dataset: a local JSONL/JSON/CSV/Parquet file or folder (alpaca,
   messages, sharegpt, prompt/completion, text or ArangoDB Q&A rows), or a hub dataset id. Ask
   only for what is missing; do not invent paths.
2. Where it runs: call detect_gpus(model=...) if unsure. target="auto" picks a local GPU, else
   RunPod (needs RUNPOD_API_KEY), else the CPU for tiny runs. Suggest load_in_4bit=True for models
   above ~3B on GPUs under 24 GB.
3. Entropy weighting (entropy_weighting=true) up-weights tokens where the model is uncertain;
   suggest it for reasoning-heavy or Q&A data, and say it is optional. For a quick trial, set
   max_steps (e.g. 50) or max_examples. If the user wants to know whether it helps on their data,
   start_experiment(model, dataset, arms=["standard", "entropy"], seeds=3, max_steps=...) trains
   both over several seeds and get_experiment says what the seeds support ("cannot tell" is an
   honest answer at 3 seeds; do not present one run as evidence).
4. Look before you train: call preview_training with exactly the arguments you will give
   start_finetune (it loads no weights and writes nothing). Show the user one rendered example
   as it comes back (the [[...]] spans are the tokens that are learned; the end-of-turn token
   must be inside them), the row counts, the token lengths and truncation, the placement and the
   time (and cost on RunPod) with its basis, and every warning with its fix. Apply the fixes the
   user agrees to and preview again; an error here is the one start_finetune would give.
5. With the user's go-ahead: start_finetune(...) with the same arguments. If it returns an error,
   read it: it says what to fix; fix and retry.
6. Follow the job with wait_for_job(job_id, timeout_s=120) (it reports progress) or get_job.
   Tell the user step/total, loss and ETA now and then, not on every poll.
7. When it succeeded: get_entropy_metrics(job_id) and summarise loss (weighted vs unweighted),
   mean entropy and the high-entropy tokens; offer tensorboard_screenshot and generate_model_card.
   If it failed: quote the error and the log lines it carries, propose a fix.
8. Do NOT call deploy_to_hf unless the user explicitly asks to publish (then use /finetune-deploy).
"""

FINETUNE_DEPLOY = """\
Publish a finished fine-tuning job to the Hugging Face Hub with the finetune-mcp tools.

Requested: job = {job_id}; repository = {repo_id}; private = {private}; merge = {merge}.

1. The user asked to publish; still confirm the exact repo id and visibility before uploading.
   If no job id was given, list_jobs(state="succeeded") and ask which one.
2. get_job(job_id) must say succeeded. If not, stop and say why.
3. generate_model_card(job_id) so the repository gets a README with the run's metrics and plots;
   show the user the card's summary.
4. deploy_to_hf(job_id, repo_id, private={private}, merge={merge}). The server asks the user to
   agree to the repo, visibility and files; if your client cannot show that form, the tool says so
   and lists the terms: show them to the user and call again with confirm=true only if they agree.
   It needs HF_TOKEN in the server's environment; if it reports a missing or read-only token, tell
   the user how to set one.
5. Report the URL it returns. Never claim an upload that the tool did not confirm.
"""


def register(mcp: FastMCP) -> None:
    @mcp.prompt(name="finetune", description="Plan and run a fine-tuning job: choose model, dataset, "
                "entropy weighting, preview it (dry run), start it, follow it, read its metrics. Never deploys on its own.")
    def finetune(
        model: str = "", dataset: str = "", entropy_weighting: str = "", target: str = "auto", goal: str = ""
    ) -> str:
        return FINETUNE.format(
            model=model or "(ask the user)", dataset=dataset or "(ask the user)",
            entropy_weighting=entropy_weighting or "(decide with the user)", target=target or "auto",
            goal_line=f"Goal: {goal}\n" if goal else "",
        )

    @mcp.prompt(name="finetune-deploy", description="Publish a succeeded job's adapter (or merged model) "
                "to the Hugging Face Hub, with a model card. Only when the user asked to publish.")
    def finetune_deploy(job_id: str = "", repo_id: str = "", private: str = "true", merge: str = "false") -> str:
        return FINETUNE_DEPLOY.format(
            job_id=job_id or "(ask the user)", repo_id=repo_id or "(ask the user)",
            private=private or "true", merge=merge or "false",
        )
