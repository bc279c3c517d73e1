"""Student–teacher dataset enhancement driven by entropy: `run_enhancement(config, run_dir)`.

Before fine-tuning, the model being tuned (the student) answers each training question in up to
`max_iterations` rounds. Every round records its reply, its token entropy (mean, max, the spans of
consecutive tokens above `entropy_threshold`) and the judge's verdict (the reference checker, or an
LLM judge). When the hint rule fires (a wrong answer and/or an uncertain span of at least
`min_span_tokens` tokens), a teacher model is asked for a hint aimed at those spans, and the
student retries with the hint in the conversation. The example is done when a round needs no hint
(converged) or the rounds run out.

Output, under `<run_dir>/enhance/` (the job's events.jsonl and train.log as for training):
    enhanced.jsonl   chat rows for the trainer: {"messages": [...prompt, assistant: thinking_format
                     of (thinking, answer)], "weight": w, "metadata": {...}}; the answer is the
                     student's when judged right, else the dataset's reference
    iterations.jsonl every round of every example (save_iterations)
    summary.json     examples enhanced, mean iterations, convergence rate, hints, entropy before and
                     after hints, weights, calls and tokens spent
    progress.jsonl   append-only, one finished example a line: a restarted job skips those

Batches of `batch_size` examples are generated together; their judge and teacher calls run
concurrently (anyio), bounded by `max_concurrency`, retried with backoff, capped by the budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from finetune_mcp.enhance.answer_check import (
    ReferenceChecker,
    Verdict,
    normalize_answer,
    parse_judge_score,
    split_reply,
)
from finetune_mcp.enhance.config import ExampleWeightConfig, StudentTeacherConfig
from finetune_mcp.enhance.items import Item, Messages
from finetune_mcp.enhance.outputs import (
    adopt_progress,
    append_progress,
    enhance_paths,
    progress_metrics,
    read_progress,
    summarize,
    write_outputs,
)
from finetune_mcp.enhance.teachers import (
    Budget,
    BudgetExhausted,
    ChatClient,
    TeacherError,
    check_endpoint_key,
    hint_request,
    judge_request,
    make_client,
)
from finetune_mcp.errors import DatasetError
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import worker_session
from finetune_mcp.user_functions import load_callable

log = logging.getLogger("finetune_mcp.enhance")

RULE_TRIGGERS = {"wrong": ("wrong",), "entropy": ("entropy",), "wrong_or_entropy": ("wrong", "entropy")}


@dataclass
class _Work:
    item: Item
    conversation: Messages
    rounds: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    failure: str | None = None
    fatal: bool = False  # the endpoint refused in a way no retry or later request can fix
    budget_stopped: bool = False


def load_items(config: StudentTeacherConfig) -> list[Item]:
    """The examples to enhance (seeded subset as `max_examples` asks), each with its reference."""
    from finetune_mcp.data.loader import load_examples

    data = load_examples(config.data)
    checker = ReferenceChecker(config.answer_check)
    items, seen = [], Counter()
    for index, example in enumerate(data.train):
        messages = example.get("messages")
        if messages is None and "prompt" in example:
            messages = [{"role": "user", "content": example["prompt"]},
                        {"role": "assistant", "content": example["completion"]}]
        if messages is None:
            raise DatasetError(f"example {index} is plain text: student–teacher enhancement needs questions with "
                               "answers (messages, alpaca, sharegpt or prompt/completion rows)", path=data.source)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = [dict(m) for m in messages[:last]]
        if not any(m["role"] == "user" for m in prompt):
            raise DatasetError(f"example {index} has no user turn before its last assistant reply, so there is no "
                               "question for the student; fix the row", path=data.source)
        reply = split_reply(messages[last]["content"])
        reference_reply = messages[last]["content"].split("</think>")[-1].strip() or reply.answer
        digest = hashlib.sha256(json.dumps([prompt, messages[last]["content"]], sort_keys=True).encode()).hexdigest()
        seen[digest] += 1
        metadata = dict(example.get("metadata") or {})
        checker.validate(reply.answer, metadata, where=f"example {index}")
        items.append(Item(index=index, key=f"{digest[:20]}-{seen[digest]}", prompt=prompt,
                          reference_reply=reference_reply, reference=reply.answer, metadata=metadata))
    return items


def example_weight(stats: dict[str, Any], cfg: ExampleWeightConfig) -> float:
    """The example's training weight (formula in `ExampleWeightConfig`), clipped to [min, max]."""
    if cfg.function == "quality_entropy":
        h_first = min(1.0, max(0.0, stats["entropy_first"] / stats["log_vocab"])) if stats["log_vocab"] else 0.0
        raw = stats["quality"] ** cfg.quality_power * (1.0 + cfg.entropy_scale * h_first)
    else:
        function = load_callable(cfg.function, "example weight function", builtins=("quality_entropy",))
        raw = float(function(dict(stats)))
    return round(min(cfg.max_weight, max(cfg.min_weight, raw)), 6)


def compose_thinking(rounds: list[dict[str, Any]], style: str) -> str:
    """The reasoning the enhanced example teaches: every attempt with the hint that followed it
    (iterative, GRANGER's self-correction traces), or only the last attempt (final)."""
    if style == "final":
        return rounds[-1]["reasoning"]
    parts: list[str] = []
    for record in rounds[:-1]:
        parts += [record["reasoning"]] if record["reasoning"] else []
        parts += [f"So the answer would be: {record['answer']}"] if record["answer"] else []
        parts += [f"Wait, let me reconsider. {record['hint']}"] if record.get("hint") else []
    parts += [rounds[-1]["reasoning"]] if rounds[-1]["reasoning"] else []
    return "\n\n".join(parts)


class Enhancer:
    """Runs rounds for batches of examples: the student here, judge and teacher calls concurrently."""

    def __init__(self, config: StudentTeacherConfig, student: Any, teacher: ChatClient,
                 judge: ChatClient | None) -> None:
        self.config, self.student, self.teacher, self.judge = config, student, teacher, judge
        self.checker = ReferenceChecker(config.answer_check)

    def student_prompt(self, item: Item) -> Messages:
        conversation = [dict(m) for m in item.prompt]
        extra = self.config.student_instructions.strip()
        if extra and conversation[-1]["role"] == "user":
            conversation[-1]["content"] = f"{conversation[-1]['content']}\n\n{extra}"
        elif extra:
            conversation.append({"role": "user", "content": extra})
        return conversation

    async def run_batch(self, items: list[Item]) -> list[_Work]:
        works = [_Work(item, self.student_prompt(item)) for item in items]
        for round_no in range(1, self.config.max_iterations + 1):
            active = [w for w in works if not w.done]
            if not active:
                break
            # Generation runs on this thread: a SIGTERM (cancel) interrupts it at once.
            seed = self.config.seed + 7919 * round_no + items[0].index
            attempts = self.student.generate([w.conversation for w in active], seed)
            async with anyio.create_task_group() as tg:
                for work, attempt in zip(active, attempts, strict=True):
                    tg.start_soon(self._after_attempt, work, attempt, round_no)
        return works

    async def _after_attempt(self, work: _Work, attempt: Any, round_no: int) -> None:
        cfg, item = self.config, work.item
        reply = split_reply(attempt.text)
        record: dict[str, Any] = {"round": round_no, "student": attempt.text, "reasoning": reply.reasoning,
                                  "answer": reply.answer, "entropy": attempt.profile(), "hint_requested": False}
        work.rounds.append(record)
        try:
            verdict, judge_calls, judge_tokens = await self._judge(item, reply.answer)
            record["judge"] = {"score": round(verdict.score, 4), "correct": verdict.correct,
                               "detail": verdict.detail, "calls": judge_calls, "tokens": judge_tokens}
            uncertain = [s for s in attempt.spans if s["end"] - s["start"] >= cfg.min_span_tokens]
            fired = {"wrong": not verdict.correct, "entropy": bool(uncertain)}
            record["hint_triggers"] = [t for t in RULE_TRIGGERS[cfg.hint_rule] if fired[t]]
            record["converged"] = not record["hint_triggers"]
            if record["converged"] or round_no == cfg.max_iterations:
                work.done = True
                return
            request = hint_request(item.question, attempt.text, [s["text"] for s in uncertain], verdict.correct,
                                   item.reference_reply)
            record.update(hint_requested=True, hint_request=request[-1]["content"])
            answer = await self.teacher.chat(request)
            reference = normalize_answer(item.reference)
            record.update(hint=answer.text, teacher_calls=answer.attempts, teacher_tokens=answer.tokens,
                          hint_reveals_answer=bool(reference) and f" {reference} " in f" {normalize_answer(answer.text)} ")
            retry = f"Hint: {answer.text}\n\nTry again." + (f" {cfg.student_instructions}" if cfg.student_instructions else "")
            work.conversation += [{"role": "assistant", "content": attempt.text}, {"role": "user", "content": retry}]
        except TeacherError as exc:
            record["error"] = str(exc)
            work.failure, work.fatal, work.done = str(exc), exc.fatal, True
        except BudgetExhausted as exc:
            record["error"] = str(exc)
            work.budget_stopped, work.done = True, True

    async def _judge(self, item: Item, answer: str) -> tuple[Verdict, int, int]:
        """The verdict, and the requests and tokens it took (0 for the reference checker)."""
        if self.judge is None:
            return self.checker.check(answer, item.reference, item.metadata), 0, 0
        reply = await self.judge.chat(judge_request(item.question, answer, item.reference_reply))
        score = parse_judge_score(reply.text)
        if score is None:
            verdict = Verdict(0.0, False, f"unreadable judge reply {reply.text[:80]!r} (scored 0)")
        else:
            verdict = Verdict(score, score >= self.config.pass_score, f"judge: {reply.text[:160]}")
        return verdict, reply.attempts, reply.tokens

    def finished_record(self, work: _Work, log_vocab: float) -> dict[str, Any]:
        """The progress line of a finished example: its output row, its rounds and its numbers."""
        cfg, item, rounds = self.config, work.item, work.rounds
        last = rounds[-1]
        correct = last["judge"]["correct"]
        from_student = correct and bool(last["answer"])
        answer = last["answer"] if from_student else item.reference_reply
        content = cfg.thinking_format.format(thinking=compose_thinking(rounds, cfg.thinking_style), answer=answer)
        stats = {
            "quality": last["judge"]["score"], "correct": correct, "converged": last["converged"],
            "iterations": len(rounds), "hints": sum(1 for r in rounds if "hint" in r),
            "entropy_first": rounds[0]["entropy"]["mean"], "entropy_final": last["entropy"]["mean"],
            "log_vocab": round(log_vocab, 6),
            "teacher_calls": sum(r.get("teacher_calls", 0) for r in rounds),
            "judge_calls": sum(r["judge"]["calls"] for r in rounds),
            "tokens": sum(r.get("teacher_tokens", 0) + r["judge"]["tokens"] for r in rounds),
        }
        weight = example_weight(stats, cfg.weight)
        metadata = {**item.metadata, "thinking_iterations": len(rounds), "thinking_converged": last["converged"],
                    "student_teacher": {**stats, "weight": weight, "answer_source": "student" if from_student
                                        else "reference", "example_key": item.key}}
        row = {"messages": [*item.prompt, {"role": "assistant", "content": content}], "weight": weight,
               "metadata": metadata}
        return {"key": item.key, "index": item.index, "row": row, "rounds": rounds, "stats": stats}


# -- the job ------------------------------------------------------------------------------------------


def run_enhancement(config: StudentTeacherConfig, run_dir: str | Path) -> dict[str, Any]:
    """Enhance the dataset into `<run_dir>/enhance/`; returns the summary. A failure is written as an
    `error` event and raised; whatever finished is in enhanced.jsonl either way."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise in train.log
    previous = _sigterm_as_exit()
    try:
        with worker_session(RunDirectory(Path(run_dir)), config, "enhancement") as run:
            return anyio.run(_enhance, config, run)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


async def _enhance(config: StudentTeacherConfig, run: RunDirectory) -> dict[str, Any]:
    from finetune_mcp.enhance.student import Student

    started = time.time()
    paths = enhance_paths(run)
    paths["progress"].parent.mkdir(parents=True, exist_ok=True)
    items = load_items(config)
    keys = {item.key for item in items}
    if config.resume_from:
        adopt_progress(Path(config.resume_from), paths["progress"], keys)
    done = {k: r for k, r in read_progress(paths["progress"]).items() if k in keys}
    budget = Budget(config.budget_max_calls, config.budget_max_tokens,
                    calls=sum(r["stats"]["teacher_calls"] + r["stats"]["judge_calls"] for r in done.values()),
                    tokens=sum(r["stats"]["tokens"] for r in done.values()))
    run.write_event("start", kind="enhance", step=len(done), total_steps=len(items), resumed=len(done))
    log.info("%d examples, %d already finished; teacher %s, judge %s", len(items), len(done),
             config.teacher.describe(), config.judge_name)
    for endpoint in (config.teacher, config.judge):  # before the student loads: a refused key fails in a second
        if endpoint is not None:
            check_endpoint_key(endpoint)
    student = Student(config)
    log.info("student %s loaded with backend=%s on %s", config.model, student.backend, student.device)
    limiter = anyio.CapacityLimiter(config.max_concurrency)
    teacher = make_client(config.teacher, budget, limiter, max_retries=config.max_retries,
                          backoff_s=config.retry_backoff_s, seed=config.seed)
    judge = None if config.judge is None else make_client(
        config.judge, budget, limiter, max_retries=config.max_retries, backoff_s=config.retry_backoff_s,
        seed=config.seed + 1)
    enhancer = Enhancer(config, student, teacher, judge)
    pending = [item for item in items if item.key not in done]
    failed: dict[str, str] = {}
    unfinished = 0
    consecutive, processed, last_error, fatal = 0, 0, "", False
    try:
        for start in range(0, len(pending), config.batch_size):
            batch = pending[start:start + config.batch_size]
            for work in await enhancer.run_batch(batch):
                if work.budget_stopped:
                    unfinished += 1
                elif work.failure is not None:
                    failed[work.item.key] = work.failure
                    consecutive += 1
                    last_error = work.failure
                    fatal = fatal or work.fatal
                else:
                    record = enhancer.finished_record(work, student.log_vocab)
                    append_progress(paths["progress"], record)
                    done[work.item.key] = record
                    consecutive = 0
            processed += len(batch)
            summary = summarize(list(done.values()), len(items))
            eta = (time.time() - started) / processed * (len(pending) - processed)
            run.write_event("progress", step=len(done), total_steps=len(items), eta_s=round(eta, 1),
                            metrics=progress_metrics(summary, len(failed)))
            if fatal:
                raise TeacherError(f"stopped: {last_error}")
            if consecutive >= config.max_consecutive_failures:
                raise TeacherError(f"stopped after {consecutive} examples in a row could not be enhanced; last "
                                   f"error: {last_error}")
            if budget.exhausted:
                unfinished += len(pending) - processed
                log.warning("budget spent (%d calls, %d tokens): %d examples left unfinished", budget.calls,
                            budget.tokens, unfinished)
                break
    finally:
        await teacher.aclose()
        if judge is not None:
            await judge.aclose()
        summary = write_outputs(run, config, items, done, extra={
            "examples_failed": len(failed), "examples_unfinished": unfinished, "stopped_by_budget": unfinished > 0,
            "resumed_examples": len(items) - len(pending), "calls_used": budget.calls, "tokens_used": budget.tokens,
            "elapsed_s": round(time.time() - started, 2), "student": {
                "model": config.model, "backend": student.backend, "device": student.device,
                "log_vocab": round(student.log_vocab, 6)}})
    if failed:
        job = os.environ.get("FINETUNE_MCP_JOB_ID") or str(run.root)
        raise TeacherError(f"{len(failed)} of {len(items)} examples could not be enhanced (last error: "
                           f"{list(failed.values())[-1]}); the {len(done)} finished are in {paths['enhanced']}. "
                           f"Fix the cause, then run enhance_dataset again with resume_from={job!r} to do only the rest")
    run.write_event("end", status="succeeded", step=len(done), total_steps=len(items),
                    metrics=progress_metrics(summary, 0), summary=str(paths["summary"]))
    log.info("done in %.1fs: %d enhanced, convergence %.2f; output in %s", summary["elapsed_s"],
             summary["enhanced_examples"], summary["convergence_rate"], paths["enhanced"])
    return summary


def _sigterm_as_exit() -> Any:
    """Cancel (SIGTERM) unwinds like an exception, so the outputs are written from what finished."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, stop)
