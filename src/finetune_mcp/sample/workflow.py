"""`run_sampling(spec, run_dir)`: the worker body of a `sample_model` job.

Load each group of models once (see `loading`), generate every prompt with each model of the group
(`generate`; an exported GGUF through llama.cpp, `gguf.generate_gguf`), then mark the high-entropy spans on one threshold for all models and match each
answer with its reference (`marking`). Writes result.json (the `SampleResult` schema), progress
events while it runs (step = prompts answered, summed over the models), an `eval` event with the
per-model metrics get_job shows, and the `end` event.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from finetune_mcp.errors import DatasetError
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions, worker_session
from finetune_mcp.sample.results import (
    Alternative,
    ModelOutput,
    ModelSummary,
    SampleResult,
    SampleRow,
    SpanInfo,
    TokenInfo,
    metrics_of,
)
from finetune_mcp.sample.spec import SampledModel, SamplePrompt, SampleSpec

log = logging.getLogger("finetune_mcp.sample")


def run_sampling(spec: SampleSpec, run_dir: str | Path) -> dict[str, Any]:
    """Generate, mark, match; returns the result (also in result.json)."""
    with worker_session(RunDirectory(Path(run_dir)), spec, "sampling") as run:
        return _sample(spec, run)


def _sample(spec: SampleSpec, run: RunDirectory) -> dict[str, Any]:
    from finetune_mcp.model.plan import plan_load

    started = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = plan_load(spec)
    if plan.backend == "unsloth":
        import unsloth  # noqa: F401  (patches transformers; must precede its import)
    import transformers

    from finetune_mcp.model.generate import GenerationStats
    from finetune_mcp.sample.loading import free, group_models, load_group

    transformers.utils.logging.disable_progress_bar()
    prompts = _prompts(spec)
    total = len(prompts) * len(spec.models)
    run.write_event("start", total_steps=total, kind="sample")
    inputs = [p.generation_input() for p in prompts]
    generations: dict[str, list[Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    done = 0
    for group in group_models(spec.models):
        loaded = load_group(group, spec, plan)
        for entry in group.entries:
            stats = GenerationStats()
            base_done = done

            def progress(answered: int, base_done: int = base_done) -> None:
                run.write_event("progress", step=base_done + answered, total_steps=total,
                                eta_s=_eta(started, base_done + answered, total))

            generations[entry.label] = _answer(loaded, entry, inputs, spec, stats, progress)
            done += len(prompts)
            summaries[entry.label] = {"backend": loaded.backend, "device": loaded.device,
                                      "load_s": round(loaded.load_s, 2), **stats.summary()}
            log.info("%s: %d answers, %s tokens/s, first token after %s s", entry.label, len(prompts),
                     summaries[entry.label]["tokens_per_s"], summaries[entry.label]["ttft_s"])
        free(loaded)  # no other reference to the weights is left: the next group has the memory
    result = build_result(spec, run.root.name, prompts, generations, summaries, time.time() - started)
    data = result.model_dump(mode="json")
    data["versions"] = library_versions()
    run.write_json(run.result, data)
    metrics = metrics_of(result)
    run.write_event("eval", step=total, metrics=metrics, phase="sample")
    run.write_event("end", status="succeeded", step=total, total_steps=total, metrics=metrics)
    log.info("done in %.1fs: %s", result.runtime_s, ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return data


def _answer(loaded: Any, entry: SampledModel, inputs: list[Any], spec: SampleSpec, stats: Any,
            progress: Any) -> list[Any]:
    """`entry`'s answers to every prompt, with the group's weights set up for it (in a function of its
    own, so no reference to the model outlives the call)."""
    from finetune_mcp.model.generate import check_prompt_lengths, generate, warm_up

    check_prompt_lengths(loaded.tokenizers[entry.label], inputs, spec.max_seq_length)
    if entry.is_gguf:
        from finetune_mcp.sample.gguf import generate_gguf

        return generate_gguf(entry.model, loaded.tokenizers[entry.label], inputs, spec.settings, stats=stats,
                             on_batch=progress, llm=loaded.model)
    with loaded.active(entry) as model:
        warm_up(model, loaded.tokenizers[entry.label], inputs, spec.settings, stats)
        return generate(model, loaded.tokenizers[entry.label], inputs, spec.settings, stats=stats, on_batch=progress)


def _prompts(spec: SampleSpec) -> list[SamplePrompt]:
    """The spec's prompts (the server resolved local rows into them), else the rows of a Hub dataset."""
    if spec.prompts:
        return list(spec.prompts)
    from finetune_mcp.sample.prompts import row_prompts

    if spec.rows is None:
        raise DatasetError("the sample job has neither prompts nor rows; start it again with prompts")
    return row_prompts(spec.rows)


def build_result(spec: SampleSpec, job_id: str, prompts: list[SamplePrompt], generations: dict[str, list[Any]],
                 summaries: dict[str, dict[str, Any]], runtime_s: float) -> SampleResult:
    """Mark, match and summarise the generations (pure: the tests call it on real generations)."""
    from finetune_mcp.sample.marking import answer_of, choose_threshold, high_entropy_spans, marked_text, matches

    pooled = [h for gens in generations.values() for g in gens for h in g.entropies]
    threshold, source = choose_threshold(spec.high_entropy_threshold, spec.threshold_source, pooled,
                                         spec.high_entropy_percentile)
    rows = []
    for index, prompt in enumerate(prompts):
        outputs = {}
        for entry in spec.models:
            g = generations[entry.label][index]
            spans = high_entropy_spans(g, threshold)
            answer = answer_of(g.text)
            exact, normalized = matches(answer, prompt.reference)
            outputs[entry.label] = ModelOutput(
                text=g.text, answer=answer, exact_match=exact, normalized_match=normalized,
                finish_reason=g.finish_reason, num_tokens=len(g.token_ids), mean_entropy=_round(g.mean_entropy),
                max_entropy=_round(g.max_entropy), high_entropy_tokens=sum(s.end_token - s.start_token for s in spans),
                marked=marked_text(g, spans), spans=[SpanInfo.model_validate(s.as_dict()) for s in spans],
                tokens=[TokenInfo(text=t, entropy=h, special=sp, alternatives=[Alternative(token=a, p=p) for a, p in alt])
                        for t, h, sp, alt in zip(g.tokens, g.entropies, g.special, g.alternatives, strict=True)])
        rows.append(SampleRow(index=index, prompt=prompt.shown(),
                              messages=[m.model_dump() for m in prompt.messages] if prompt.messages else None,
                              reference=prompt.reference, row=prompt.row, outputs=outputs))
    models = [_summary(entry, rows, summaries[entry.label]) for entry in spec.models]
    return SampleResult(job_id=job_id, source_job=spec.source_job, models=models,
                        settings=spec.settings.model_dump(), threshold=_round(threshold), threshold_source=source,
                        num_prompts=len(prompts), samples=rows, runtime_s=round(runtime_s, 2))


def _summary(entry: SampledModel, rows: list[SampleRow], timing: dict[str, Any]) -> ModelSummary:
    outputs = [row.outputs[entry.label] for row in rows]
    judged = [o for o in outputs if o.exact_match is not None]
    tokens = sum(o.num_tokens for o in outputs)
    entropy_sum = sum((o.mean_entropy or 0.0) * o.num_tokens for o in outputs)
    return ModelSummary(
        label=entry.label, model=entry.model, adapter=entry.adapter, weights=entry.weights,
        source_job=entry.source_job, backend=timing["backend"], device=timing["device"], load_s=timing["load_s"],
        ttft_s=timing["ttft_s"], tokens_per_s=timing["tokens_per_s"], warmup_s=timing.get("warmup_s"),
        generated_tokens=tokens,
        answers_with_reference=len(judged),
        exact_match_rate=sum(bool(o.exact_match) for o in judged) / len(judged) if judged else None,
        normalized_match_rate=sum(bool(o.normalized_match) for o in judged) / len(judged) if judged else None,
        mean_entropy=_round(entropy_sum / tokens) if tokens else None,
        high_entropy_share=round(sum(o.high_entropy_tokens for o in outputs) / tokens, 4) if tokens else None,
    )


def _round(value: float | None) -> float | None:
    return round(value, 5) if value is not None else None


def _eta(started: float, done: int, total: int) -> float | None:
    return round((time.time() - started) / done * (total - done), 1) if done else None
