"""The dry run (`preview_training`): what a fine-tuning job would train on, how, where and for how
long, before any weights are loaded or anything is written.

    dry_run.py     the orchestration: start checks, loader, tokenizer, placer, in the job's order
    examples.py    rows through the training tokenisation; examples shown with [[trained]] spans
    lengths.py     token lengths, truncation, steps per epoch (the Trainer's arithmetic)
    rerank.py      the same for method="rerank" (reranker prompts, yes/no decisions)
    estimate.py    memory, placement, time and cost (the job manager's placer, RunPod's prices)
    throughput.py  seconds per step from the measured table `throughput.json`
    checks.py      the warnings, each with its fix
    report.py      the typed report (the MCP tool's output schema)

The MCP tool runs it in a child process (`finetune-mcp preview --json`), so the server never
imports transformers or torch.
"""

from finetune_mcp.preview.report import PreviewReport

__all__ = ["PreviewReport"]
