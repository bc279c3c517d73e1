"""The `preview_training` tool: start_finetune's dry run. Same arguments, no job, nothing written.

The work runs in a child process (`preview.child`), since reading the model's tokenizer imports
transformers and torch, which the server never does.
"""

from __future__ import annotations

from typing import Annotated

from fastmcp import Context
from fastmcp.tools import tool
from mcp_types import InputRequiredResult, ToolAnnotations
from pydantic import Field

from finetune_mcp import kinds
from finetune_mcp.preview.child import preview_in_child
from finetune_mcp.preview.report import PreviewReport
from finetune_mcp.tools.roots import allowed_roots
from finetune_mcp.tools.training import (
    AccumulationArg,
    BatchSizeArg,
    DatasetArg,
    EntropyArg,
    EpochsArg,
    FourBitArg,
    LearningRateArg,
    LoraRankArg,
    MaxExamplesArg,
    MaxStepsArg,
    MethodArg,
    ModelArg,
    NumGpusArg,
    OverridesArg,
    ProjectArg,
    ReportToArg,
    RunNameArg,
    SeqLengthArg,
    TargetArg,
    TaskArg,
    WeightFnArg,
    chosen_method,
    training_config,
)


@tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=True))
async def preview_training(
    model: ModelArg,
    dataset: DatasetArg,
    ctx: Context,
    entropy_weighting: EntropyArg = False,
    target: TargetArg = "auto",
    max_steps: MaxStepsArg = None,
    num_train_epochs: EpochsArg = None,
    max_examples: MaxExamplesArg = None,
    learning_rate: LearningRateArg = None,
    lora_r: LoraRankArg = None,
    per_device_train_batch_size: BatchSizeArg = None,
    gradient_accumulation_steps: AccumulationArg = None,
    max_seq_length: SeqLengthArg = None,
    load_in_4bit: FourBitArg = None,
    method: MethodArg = None,
    task: TaskArg = None,
    entropy_weight_fn: WeightFnArg = None,
    num_gpus: NumGpusArg = None,
    report_to: ReportToArg = None,
    project: ProjectArg = None,
    run_name: RunNameArg = None,
    config_overrides: OverridesArg = None,
    examples: Annotated[int, Field(description="How many training examples to render (the first rows of the "
                                   "shuffled split).", ge=0, le=20)] = 3,
) -> PreviewReport:
    """Dry run of start_finetune with the same arguments: no job, no weights loaded, nothing written.
    Call it before start_finetune and show the user an example and the estimate.

    Answers the detected dataset format and why, row counts after filters/subset/split, examples
    rendered through the model's own chat template with the trained tokens in [[...]] (the
    end-of-turn token inside), token-length statistics and truncation, steps per epoch, the memory
    estimate and placement the job would get (local GPU / CPU / RunPod with the GPU type), time
    (and RunPod cost) with the basis of the estimate, and warnings, each with its fix. Bad input
    fails with the error start_finetune would give.
    Example: preview_training(model="unsloth/Qwen3-4B", dataset="data/qa.jsonl", max_steps=60) →
    {"data": {"format": "messages", "train_rows": 900, ...}, "examples": [{"text": "<|im_start|>user\\n...
    <|im_start|>assistant\\n[[Paris.<|im_end|>]]\\n", ...}], "estimate": {"gpu": "RTX 4090", ...},
    "warnings": [...]}.
    """
    config = training_config(
        model, dataset, entropy_weighting, config_overrides, max_steps=max_steps,
        num_train_epochs=num_train_epochs, max_examples=max_examples, learning_rate=learning_rate, lora_r=lora_r,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit, entropy_weight_fn=entropy_weight_fn, num_gpus=num_gpus,
        method=chosen_method(method, task), report_to=report_to, project=project, run_name=run_name,
    )
    roots = await allowed_roots(ctx)
    if isinstance(roots, InputRequiredResult):
        return roots  # type: ignore[return-value]  # 2026-07-28: the client sends its roots, then calls again
    roots.check(kinds.get_kind("train").paths(config))  # the paths start_finetune would check
    return await preview_in_child(config, target, examples)


TOOLS = (preview_training,)
