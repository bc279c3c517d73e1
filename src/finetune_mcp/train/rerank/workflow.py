"""`train_reranker`: the `rerank` method's worker body, after data and model are loaded.

Same run directory, callbacks and result.json as SFT, plus the ranking evaluation: MRR@10,
NDCG@10, Recall@5 and accuracy on the validation queries (whole query groups, held out by the
seeded split) with the model as loaded (LoRA's B = 0, so the base model) and after training. They
go to result.json (`ranking`), to events.jsonl as `eval` events (so get_job's metrics show them)
and to TensorBoard as `rank/before/<metric>` (step 0) and `rank/after/<metric>` (last step).
"""

from __future__ import annotations

import logging
from typing import Any

from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import is_main_process
from finetune_mcp.train.builder import build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.rerank.metrics import DEFAULT_METRICS, ScoredGroup, compute_metrics, rank_tag
from finetune_mcp.train.rerank.prompt import RerankPrompt, score_groups, training_rows
from finetune_mcp.train.sft.workflow import sft_parts

log = logging.getLogger("finetune_mcp.rerank")
EVAL_BATCH_SIZE = 16  # as evaluate_model's default: the same batches give the same scores


def evaluate_ranking(model: Any, prompt: RerankPrompt, groups: list[dict[str, Any]],
                     metrics=DEFAULT_METRICS, batch_size: int = 16) -> dict[str, float]:
    """The metrics of `model` on query groups (P(yes) scores, ranked per query)."""
    scores = score_groups(model, prompt, groups, batch_size=batch_size)
    return compute_metrics([ScoredGroup(s, g["relevance"]) for s, g in zip(scores, groups, strict=True)], metrics)


def train_reranker(training: TrainingRun) -> dict[str, Any]:
    from finetune_mcp.train.rerank.trainer import RerankCollator, RerankTrainer

    config, run, loaded, data = training.config, training.run, training.loaded, training.data

    tokenizer = loaded.tokenizer
    prompt = RerankPrompt(tokenizer, config.max_seq_length, config.rerank_instruction)
    listwise = config.rerank_loss == "listwise"
    train_ds = training_rows(data.train, prompt, config.rerank_loss, config.rerank_group_size, config.seed)
    eval_ds = (training_rows(data.validation, prompt, config.rerank_loss, config.rerank_group_size, config.seed)
               if data.validation else None)
    truncated = prompt.truncated  # training + validation pairs, each counted once
    if truncated:
        log.warning("%d (query, document) pairs were cut to max_seq_length=%d (the document's end)",
                    truncated, config.max_seq_length)
    log.info("rerank (%s): %d training rows from %d queries, %d validation queries", config.rerank_loss,
             len(train_ds), len(data.train), len(data.validation))
    main = is_main_process()  # under DDP, rank 0 alone scores and writes
    before = evaluate_ranking(loaded.model, prompt, data.validation, batch_size=EVAL_BATCH_SIZE) \
        if data.validation and main else {}

    built = build_trainer(training, train_ds, eval_ds, sft_parts(
        training, trainer_class=RerankTrainer,
        # rows are lists of prompts: TRL must not tokenise, truncate or pack them; our collator pads
        config_kwargs={"dataset_kwargs": {"skip_prepare_dataset": True}, "padding_free": False, "packing": False},
        data_collator=RerankCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if loaded.device != "cpu" else None),
        answer_ids=(prompt.no_id, prompt.yes_id), listwise=listwise,
    ))
    tb = built.tensorboard
    if before:
        _record(run, tb, "before", before, step=0)

    def rank_after_training(global_step: int) -> dict[str, Any]:
        after = evaluate_ranking(loaded.model, prompt, data.validation, batch_size=EVAL_BATCH_SIZE) \
            if data.validation else {}
        if after:
            _record(run, tb, "after", after, step=global_step)
            log.info("ranking on %d validation queries, before → after: %s", len(data.validation),
                     ", ".join(f"{k} {before[k]:.3f} → {v:.3f}" for k, v in after.items()))
        return {"ranking": {
            "loss": config.rerank_loss,
            "metrics": list(DEFAULT_METRICS),
            "before": before,
            "after": after,
            "num_queries": len(data.validation),
            "num_documents": sum(len(g["docs"]) for g in data.validation),
            "answer_tokens": {"no": prompt.no_id, "yes": prompt.yes_id},
            "instruction": config.rerank_instruction or prompt.default_instruction,
            "truncated_pairs": truncated,
        }}

    return fit_and_save(training, built, train_ds, eval_ds, after_training=rank_after_training)


def _record(run: RunDirectory, tb: Any, phase: str, metrics: dict[str, float], step: int) -> None:
    """One `eval` event (the job manager folds its metrics into get_job) and TensorBoard scalars."""
    tagged = {rank_tag(phase, name): value for name, value in metrics.items()}
    for tag, value in tagged.items():
        tb.writer.add_scalar(tag, value, step)
    tb.writer.flush()
    tb.final.update(tagged)
    run.write_event("eval", step=step, metrics=tagged, phase=f"rank/{phase}")
