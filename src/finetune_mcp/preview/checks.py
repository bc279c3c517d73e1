"""The warnings a careful engineer raises before a run: each says what is wrong and how to fix it.

Every check reads what the dry run already has (the rows, their encodings, the lengths, the
config); none loads weights. Whether the base model already fits the data (which would make
entropy weighting pointless) would need a forward pass, so it is not checked here.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.data.chat_tokens import ChatSpans, split_reasoning
from finetune_mcp.preview.report import LengthReport, PreviewWarning, RenderedExample

USUAL_LR = (1e-5, 1e-3)  # LoRA learning rates outside this are rarely right (2e-4 is the common default)
USUAL_ALPHA_RATIO = (0.5, 4.0)  # lora_alpha / lora_r
MAX_TRUNCATED_SHARE = 0.10
MIN_STEPS = 10
MAX_WARMUP_SHARE = 0.25
TEMPLATE_CHECK_ROWS = 50  # rows rendered once more to see what the template drops


def run_checks(config: EnhancedTrainingConfig, train: list[dict[str, Any]], validation: list[dict[str, Any]],
               lengths: LengthReport, examples: list[RenderedExample], chat: ChatSpans | None,
               dropped_rows: int, model_dir: Path | None, tokenizer: Any) -> list[PreviewWarning]:
    found: list[PreviewWarning] = []
    conversational = any("messages" in row for row in train)
    if conversational and chat is not None:
        found += _template_checks(chat, train, examples)
        found += _stop_token_check(chat, model_dir, tokenizer)
    found += _reply_checks([*train, *validation])
    found += _plain_prompt_check(train, tokenizer)
    found += _duplicate_checks(train, validation)
    found += _hyperparameter_checks(config)
    found += _length_checks(config, lengths, dropped_rows)
    return found


def warn(code: str, message: str, fix: str) -> PreviewWarning:
    return PreviewWarning(code=code, message=message, fix=fix)


def _template_checks(chat: ChatSpans, train: list[dict[str, Any]],
                     examples: list[RenderedExample]) -> list[PreviewWarning]:
    out = []
    if chat.turn_end is None:
        out.append(warn("no_end_of_turn", "the chat template writes no end-of-turn token after a reply, so the model "
                        "never learns where to stop", "use the instruct model's tokenizer, or set a chat template "
                        "that closes each assistant turn with the EOS token"))
    elif any(not ex.ends_with_end_of_turn for ex in examples if ex.trained_tokens and not ex.truncated):
        out.append(warn("no_end_of_turn", f"some shown examples have a trained span that does not end with "
                        f"{chat.turn_end!r}, so the model is not taught to stop there", "check the rendered examples; "
                        "use a template that closes each assistant turn with its end-of-turn token"))
    system_lost = reasoning_lost = checked = 0
    for index, row in enumerate(train):
        if checked >= TEMPLATE_CHECK_ROWS:
            break
        messages = row.get("messages")
        if not messages:
            continue
        checked += 1
        text = chat.render(messages, False, index)
        system_lost += any(m["role"] == "system" and m["content"].strip() and m["content"].strip() not in text
                           for m in messages)
        reasoning_lost += any(m["role"] == "assistant" and _reasoning(m) and _reasoning(m) not in text
                              for m in messages)
    if system_lost:
        out.append(warn("system_prompt_dropped", f"the chat template leaves out the system prompt in {system_lost} of "
                        f"{checked} conversations checked (Mistral v0.3 keeps it only when the conversation ends with "
                        "a user turn), so the model never sees it in training", "fold the system prompt into the "
                        "first user message, or use a model whose template renders system prompts"))
    if reasoning_lost:
        out.append(warn("reasoning_dropped", f"the chat template drops the <think> reasoning of assistant turns in "
                        f"{reasoning_lost} of {checked} conversations checked (Qwen3 keeps it only after the last "
                        "user message; the DeepSeek-R1 distills never), so it is not trained", "keep reasoning only "
                        "in the final assistant turn, or give the model folder a chat template that keeps it (e.g. "
                        "TRL's deepseek_r1_distill_training.jinja as chat_template in tokenizer_config.json)"))
    return out


def _reasoning(message: dict[str, Any]) -> str:
    thought, _ = split_reasoning(message["content"])
    return thought.removesuffix("</think>").split("<think>")[-1].strip()


def _stop_token_check(chat: ChatSpans, model_dir: Path | None, tokenizer: Any) -> list[PreviewWarning]:
    """The reply's end-of-turn token must be one generation stops on, or the tuned model rambles on."""
    if chat.turn_end is None or model_dir is None:
        return []
    ids = tokenizer(chat.turn_end, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return []
    stops = {tokenizer.eos_token_id}
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            stops |= set(value) if isinstance(value, list) else {value}
    if ids[0] in stops:
        return []
    return [warn("end_of_turn_not_a_stop_token", f"replies end with {chat.turn_end!r} (id {ids[0]}), but generation "
                 f"stops only on ids {sorted(i for i in stops if i is not None)}; the tuned model will not stop after "
                 "its reply", f"add {ids[0]} to eos_token_id in the model's generation_config.json")]


def _reply_checks(rows: list[dict[str, Any]]) -> list[PreviewWarning]:
    empty = sum(1 for row in rows for m in row.get("messages", ()) if m["role"] == "assistant"
                and not split_reasoning(m["content"])[1].strip())
    empty += sum(1 for row in rows if isinstance(row.get("completion"), str) and not row["completion"].strip())
    if not empty:
        return []
    return [warn("empty_replies", f"{empty} assistant replies in the data are empty: those turns teach the model "
                 "to stop at once (and score it on that)", "remove those rows or fill in the replies")]


def _plain_prompt_check(train: list[dict[str, Any]], tokenizer: Any) -> list[PreviewWarning]:
    """A chat model trained on bare prompt/completion strings never sees the role markers it is
    prompted with at inference."""
    plain = sum(1 for row in train if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str))
    if not plain or not getattr(tokenizer, "chat_template", None):
        return []
    return [warn("not_chat_formatted", f"{plain} training rows are prompt/completion strings: they are tokenised as "
                 "plain text, without the chat template this model is prompted with at inference",
                 "give them as 'messages' (or prompt/completion message lists) so the template renders them, or "
                 "fine-tune a base model for plain completion")]


def _duplicate_checks(train: list[dict[str, Any]], validation: list[dict[str, Any]]) -> list[PreviewWarning]:
    keys = [_key(row) for row in train]
    repeats = sum(count - 1 for count in Counter(keys).values() if count > 1)
    out = []
    if repeats:
        out.append(warn("duplicates", f"{repeats} training rows ({repeats / len(train):.0%}) repeat another row "
                        "exactly: they count several times per epoch and invite memorisation",
                        "deduplicate the dataset (or keep the repeats on purpose as weighting)"))
    leaked = len(set(keys) & {_key(row) for row in validation})
    if leaked:
        out.append(warn("validation_leak", f"{leaked} validation rows also appear in the training split, so the "
                        "validation loss overstates how well the model generalises", "deduplicate the dataset"))
    return out


def _key(row: dict[str, Any]) -> str:
    fields = ("messages", "prompt", "completion", "text", "query", "docs", "chosen", "rejected", "label", "columns")
    return json.dumps({k: row[k] for k in fields if k in row}, sort_keys=True, default=str)


def _hyperparameter_checks(config: EnhancedTrainingConfig) -> list[PreviewWarning]:
    out = []
    low, high = USUAL_LR
    if not low <= config.learning_rate <= high:
        side = "high: the adapter will diverge or forget" if config.learning_rate > high else "low: it will barely move"
        out.append(warn("learning_rate", f"learning_rate={config.learning_rate:g} is far from the usual range for "
                        f"LoRA ({low:g}–{high:g}; 2e-4 is common) and likely too {side}",
                        "use learning_rate=2e-4 (the default), or 1e-4 for large models"))
    ratio = config.lora_alpha / config.lora_r
    if not config.use_rslora and not USUAL_ALPHA_RATIO[0] <= ratio <= USUAL_ALPHA_RATIO[1]:
        out.append(warn("lora_alpha", f"lora_alpha/lora_r = {config.lora_alpha}/{config.lora_r} = {ratio:g}: the "
                        "adapter's updates are scaled by this, and values outside 0.5–4 behave like a learning rate "
                        "changed by that factor", f"set lora_alpha to {config.lora_r}–{2 * config.lora_r} "
                        "(1–2 × lora_r), or use_rslora=true for large ranks"))
    if config.lora_r > 256 or config.lora_r < 4:
        out.append(warn("lora_r", f"lora_r={config.lora_r} is unusual (8–64 covers most fine-tunes; ranks above 256 "
                        "cost memory without gains, below 4 may not fit the task)", "use lora_r=16 (the default)"))
    if config.lora_dropout > 0.3:
        out.append(warn("lora_dropout", f"lora_dropout={config.lora_dropout:g} drops a large share of the adapter's "
                        "input; it slows learning", "use 0–0.1"))
    return out


def _length_checks(config: EnhancedTrainingConfig, lengths: LengthReport, dropped_rows: int) -> list[PreviewWarning]:
    out = []
    if lengths.truncated_share > MAX_TRUNCATED_SHARE:
        suggest = min(131072, int(2 ** math.ceil(math.log2(max(lengths.p95, 16)))))
        out.append(warn("truncation", f"{lengths.truncated_share:.0%} of the rows are longer than max_seq_length="
                        f"{config.max_seq_length} and lose their end ({lengths.truncated_part})",
                        f"raise max_seq_length to ~{suggest} (the 95th percentile is {lengths.p95:g} tokens), or "
                        "shorten or split the long rows"))
    if dropped_rows:
        out.append(warn("rows_without_trained_tokens", f"~{dropped_rows} training rows keep no trained token after "
                        "truncation (their prompts fill max_seq_length) and are dropped",
                        "raise max_seq_length or shorten the prompts"))
    if lengths.total_steps < MIN_STEPS:
        out.append(warn("few_steps", f"the run has only {lengths.total_steps} optimiser steps: too few for the "
                        "learning-rate schedule (warm-up, then decay) to do its job, and the adapter barely moves",
                        "train more epochs, add data, or lower per_device_train_batch_size × "
                        "gradient_accumulation_steps"))
    elif lengths.warmup_steps >= MAX_WARMUP_SHARE * lengths.total_steps:
        out.append(warn("warmup", f"warm-up takes {lengths.warmup_steps} of the {lengths.total_steps} steps, so "
                        "most of the run is spent below the target learning rate",
                        "lower warmup_ratio / warmup_steps, or train longer"))
    return out
