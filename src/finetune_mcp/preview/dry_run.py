"""`preview_training(config, target)`: what `start_finetune` would do with the same arguments, without
doing it. Reads the model's config and tokenizer (no weights), reads the data, writes nothing.

Every step is the code the job runs: the start checks (`check_start`), the loader
(`load_examples`: formats, filters, subset, split), the tokenisation (`ExampleEncoder`, the
per-row step of training), the placer (`place_job`). So the preview fails with the same error as
`start_finetune` on bad input, and shows the mask the trainer will use.
"""

from __future__ import annotations

from pathlib import Path

from finetune_mcp.config import EnhancedTrainingConfig, Settings
from finetune_mcp.data.chat_tokens import ExampleEncoder
from finetune_mcp.data.loader import load_examples, resolve_dataset_source
from finetune_mcp.errors import ConfigError
from finetune_mcp.jobs.manager import TARGETS
from finetune_mcp.jobs.records import check_run_dir
from finetune_mcp.model.imports import hf_folder
from finetune_mcp.model.loading import load_tokenizer
from finetune_mcp.preview.checks import run_checks, warn
from finetune_mcp.preview.estimate import estimate_run, place
from finetune_mcp.preview.examples import encode_rows, end_token_ids, render_example, sample_indices
from finetune_mcp.preview.lengths import length_report
from finetune_mcp.preview.pairs import pairs_preview
from finetune_mcp.preview.prompts import prompts_preview
from finetune_mcp.preview.report import DataReport, PreviewReport, duration
from finetune_mcp.preview.rerank import rerank_preview
from finetune_mcp.train.preflight import check_start

# the dry run of each row shape a method's descriptor names (`TrainingMethod.row_shape`) other than
# "sequences" (tokenised chat / prompt-completion / text rows, rendered below with their label mask)
ROW_PREVIEWS = {"query_groups": rerank_preview, "pairs": pairs_preview, "prompts": prompts_preview}
DEFAULT_EXAMPLES = 3
DEFAULT_SAMPLE = 2000  # rows tokenised for the statistics; a larger split is sampled (seeded)
SHOWN_SETTINGS = (
    "method", "dataset_format", "max_examples", "validation_split", "max_seq_length", "assistant_only_loss",
    "lora_r", "lora_alpha", "lora_dropout", "use_rslora", "target_modules", "load_in_4bit", "num_train_epochs",
    "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_ratio", "warmup_steps", "enable_entropy_weighting", "num_gpus", "seed",
)
FORMAT_REASONS = {
    "messages": "the rows have a 'messages' list of role/content turns",
    "arangodb": "the rows have 'messages' and a 'metadata' object (an ArangoDB Q&A export)",
    "sharegpt": "the rows have a 'conversations' list of from/value turns (ShareGPT)",
    "alpaca": "the rows have 'instruction' and 'output' (alpaca)",
    "prompt_completion": "the rows have 'prompt' and 'completion'",
    "text": "the rows have a 'text' string (plain language modelling: every token is trained)",
    "ranking": "the rows have 'query', 'positive(s)' and 'negatives' (ranking groups)",
    "triples": "the rows have 'query', 'positive' and 'negative' strings (triples)",
    "graded": "the rows have 'query' and 'docs' with relevance grades",
    "preference": "the rows have 'prompt', 'chosen' and 'rejected' (preference pairs)",
    "implicit_preference": "the rows have 'chosen' and 'rejected' sharing the prompt as their prefix",
    "unpaired_preference": "the rows have 'prompt', 'completion' and a true/false 'label' (KTO)",
    "prompt_only": "the rows have a 'prompt' and no reply (the model writes the completions; other columns go "
                   "to the rewards)",
    "mixed": "the folder's files are in different formats (each file is detected on its own)",
}


def preview_training(config: EnhancedTrainingConfig, target: str = "auto", *, settings: Settings | None = None,
                     examples: int = DEFAULT_EXAMPLES, sample_size: int = DEFAULT_SAMPLE) -> PreviewReport:
    """The dry run. Raises the FinetuneError `start_finetune` would raise for the same input."""
    settings = settings or Settings.from_env()
    if target not in TARGETS:
        raise ConfigError(f"must be one of {', '.join(TARGETS)} (got {target!r})", field="target")
    if config.run_dir:
        check_run_dir(Path(config.run_dir).expanduser().resolve())
    config = check_start(config, settings)
    source = resolve_dataset_source(config.dataset)
    data = load_examples(config)
    tokenizer = load_tokenizer(hf_folder(config.model, settings.home))  # a GGUF is imported once, here
    where = place(config, target, settings)
    chat = None
    shaped = ROW_PREVIEWS.get(config.training_method.row_shape)  # rows other than tokenised sequences
    if shaped is not None:
        shown, lengths, val_tokens_per_row = shaped(config, tokenizer, data.train, examples, where.devices)
        dropped, end_of_turn = 0, None
    else:
        conversational = any("messages" in row for row in (*data.train, *data.validation))
        encoder = ExampleEncoder(tokenizer, config.assistant_only_loss, conversational=conversational)
        chat = encoder.chat if conversational else None
        end_of_turn = chat.turn_end if chat else tokenizer.eos_token
        rows = encode_rows(encoder, data.train, sample_indices(len(data.train), sample_size, config.seed))
        lengths, dropped = length_report(rows, len(data.train), config, where.devices)
        ends = end_token_ids(tokenizer, end_of_turn)
        shown = [render_example(tokenizer, row, config.max_seq_length, ends)
                 for row in encode_rows(encoder, data.train, list(range(min(examples, len(data.train)))))]
        val_rows = encode_rows(encoder, data.validation, sample_indices(len(data.validation), 200, config.seed))
        val_tokens_per_row = (round(sum(min(len(r.ids), config.max_seq_length) for r in val_rows) / len(val_rows))
                              if val_rows else 0)
    estimate = estimate_run(config, where, tokens_per_step=lengths.padded_tokens_per_step,
                            total_steps=lengths.total_steps, eval_tokens=val_tokens_per_row * len(data.validation),
                            evaluations=_evaluations(config, lengths.total_steps, lengths.steps_per_epoch,
                                                     bool(data.validation)))
    model_dir = Path(config.model) if Path(config.model).is_dir() else None
    warnings = run_checks(config, data.train, data.validation, lengths, shown, chat, dropped, model_dir, tokenizer)
    warnings += [warn("method_start_check", message, "see the message; start_finetune returns the same warning")
                 for message in config.start_warnings]
    report = PreviewReport(
        model=config.model, gguf_source=config.gguf_source, dataset=config.dataset, task=config.method,
        chat_template=bool(getattr(tokenizer, "chat_template", None)), end_of_turn=end_of_turn,
        data=DataReport(
            source=data.source, kind=source.kind, format=data.format, format_reason=_format_reason(config, data.format),
            files=data.files, rows_read=data.rows_read, removed_by_filter=data.removed_by_filter,
            rows_kept=data.rows_kept, train_rows=len(data.train), validation_rows=len(data.validation),
            dropped_rows=dropped,
        ),
        examples=shown, lengths=lengths, estimate=estimate, warnings=warnings,
        settings={name: getattr(config, name) for name in SHOWN_SETTINGS}, hint="",
    )
    report.hint = _hint(report)
    return report


def _evaluations(config: EnhancedTrainingConfig, total: int, per_epoch: int, has_validation: bool) -> int:
    """Evaluations the trainer runs: every eval_steps (else at each epoch's end), plus the final one."""
    if not has_validation:
        return 0
    during = total // config.eval_steps if config.eval_steps else total // per_epoch
    return during + 1


def _format_reason(config: EnhancedTrainingConfig, fmt: str) -> str:
    if config.dataset_format != "auto":
        return f"dataset_format={config.dataset_format!r} was given"
    return FORMAT_REASONS.get(fmt, f"detected from the first row's keys ({fmt})")


def _hint(report: PreviewReport) -> str:
    if report.estimate.refused:
        return f"start_finetune would refuse this run: {report.estimate.refused}"
    where = report.estimate.gpu or report.estimate.device or "?"
    time = (f", ~{duration(report.estimate.total_seconds)}" if report.estimate.total_seconds is not None else "")
    cost = f", ~${report.estimate.cost_usd:.2f}" if report.estimate.cost_usd is not None else ""
    todo = (f"address the {len(report.warnings)} warning(s) (each says its fix), then " if report.warnings else "")
    return (f"show the user a rendered example (trained tokens in [[...]]) and the estimate ({report.lengths.total_steps}"
            f" steps on {where}{time}{cost}); {todo}call start_finetune with the same arguments to train")
