"""`generate(model, tokenizer, prompts, settings)`: answers with the model's per-token entropy.

The one generation function of the project: sample jobs, evaluation suites, the experiment kind's answer
accuracy and GRPO's held-out rewards all call it. It sits in model/, below train/ and evaluation/, so
that every one of them can:

- Prompts are rendered as training rendered them. A conversation is cut where training's labels
  begin: the conversation plus a probe reply goes through `data.chat_tokens` (the span finder the
  loss mask uses), and the prompt is the rendered text up to the reply's start. So whatever the
  template puts before a reply (Qwen3's think block, a system preamble) is in the prompt exactly
  when training put it there. A `PlainText` prompt (prompt/completion rows, or a prompt a caller
  rendered itself) is tokenised as is.
- Generation stops at the end of the turn: the tokenizer's EOS, the model's generation-config EOS
  and the template's end-of-turn marker (e.g. `<|im_end|>`) all stop it.
- Greedy by default. The generation config is built here from `GenerationSettings` alone: a
  model's own defaults (Qwen3 ships do_sample=True, temperature 0.6, top_k 20) never leak in, so
  the same prompts give the same outputs on an adapter and on its merged model.
- Entropy: H = −Σ p log p (nats) of the model's next-token distribution at each generated step,
  over the full vocabulary and before temperature / top-p: the same H training logs. It is
  recorded by a logits processor, one [batch] vector per step, so no step's logits are kept
  (at V = 151,936 that would be 0.6 MB per token and sequence).
- Timing: a streamer notes when the first new token exists (time to first token) and the whole
  call's duration (tokens per second), per batch, in `GenerationStats`.

Heavy imports (torch, transformers) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from finetune_mcp.errors import ConfigError, ModelError
from finetune_mcp.model.generation_settings import GenerationSettings, PlainText

_PROBE = "\u2047sample-probe-reply\u2047"  # a reply no template or dataset contains


PromptInput = str | Sequence[Mapping[str, str]] | PlainText  # str: one user turn


@dataclass
class Generation:
    """One generated answer, token by token: `tokens[i]` is the text token i adds to `text` ("" for a
    special token such as the end-of-turn marker, whose name is in `special[i]`), `entropies[i]` the
    model's entropy when it chose it, `alternatives[i]` its most likely choices (token, probability)."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    special: list[str | None]
    entropies: list[float]
    alternatives: list[list[tuple[str, float]]]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int

    @property
    def mean_entropy(self) -> float | None:
        return sum(self.entropies) / len(self.entropies) if self.entropies else None

    @property
    def max_entropy(self) -> float | None:
        return max(self.entropies) if self.entropies else None


@dataclass
class GenerationStats:
    """Timing over every batch of one or more `generate` calls."""

    batches: int = 0
    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    first_token_s: list[float] = field(default_factory=list)  # per batch: call start → first new token
    warmup_s: float | None = None  # the untimed warm-up call before these batches (see `warm_up`)

    @property
    def ttft_s(self) -> float | None:
        """Mean time to first token over the batches (prefill of the batch + one decoding step)."""
        return sum(self.first_token_s) / len(self.first_token_s) if self.first_token_s else None

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second of generation, prefill included, over all sequences."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        return {"batches": self.batches, "prompts": self.prompts, "generated_tokens": self.generated_tokens,
                "seconds": round(self.seconds, 4),
                "ttft_s": round(self.ttft_s, 4) if self.ttft_s is not None else None,
                "tokens_per_s": round(self.tokens_per_s, 2) if self.tokens_per_s is not None else None,
                "warmup_s": round(self.warmup_s, 4) if self.warmup_s is not None else None}


def generate(model: Any, tokenizer: Any, prompts: Sequence[PromptInput], settings: GenerationSettings | None = None,
             *, stats: GenerationStats | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[Generation]:
    """One `Generation` per prompt, in order. `model` is any causal LM (a PEFT model, an Unsloth
    model after `for_inference`); `on_batch(prompts_done)` is called after each batch."""
    import torch

    settings = settings or GenerationSettings()
    encoded = [prompt_ids(tokenizer, prompt, index) for index, prompt in enumerate(prompts)]
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = _generation_config(settings, stops, pad)
    device = _device(model)
    if not settings.greedy:
        torch.manual_seed(settings.seed)
    out: list[Generation] = []
    with torch.inference_mode(), _plain_defaults(model):
        for start in range(0, len(encoded), settings.batch_size):
            batch = encoded[start : start + settings.batch_size]
            out += _generate_batch(model, tokenizer, batch, config, pad, set(stops), device, settings, stats)
            if on_batch is not None:
                on_batch(len(out))
    return out


def warm_up(model: Any, tokenizer: Any, prompts: Sequence[PromptInput], settings: GenerationSettings,
            stats: GenerationStats) -> None:
    """One short, untimed call on the first batch (two new tokens), its wall time kept in `stats.warmup_s`.

    A process's first generation pays one-time costs (Unsloth's and torch's compilation, CUDA kernel
    selection, allocator growth): 5.4 s to the first token against 0.04 s warm on an H100. Timed
    without a warm-up, whichever model a job samples first would look many times slower than the
    next, and the side-by-side figures would compare start-up, not the models."""
    started = time.perf_counter()
    generate(model, tokenizer, prompts[: settings.batch_size], settings.model_copy(update={"max_new_tokens": 2}))
    stats.warmup_s = time.perf_counter() - started


def check_prompt_lengths(tokenizer: Any, prompts: Sequence[PromptInput], max_seq_length: int) -> None:
    """Refuse, before any generation, a prompt longer than `max_seq_length` tokens. Training keeps the
    first max_seq_length tokens of a row, so the model never learned to read further; and attention
    over a 25,000-token prompt made one answer of a tiny model take 30 s instead of 5."""
    for index, prompt in enumerate(prompts):
        length = len(prompt_ids(tokenizer, prompt, index))
        if length > max_seq_length:
            raise ConfigError(f"prompt {index} is {length:,} tokens, longer than max_seq_length={max_seq_length} "
                              "(what the model was trained to read; training keeps the first max_seq_length tokens "
                              "of a row); shorten the prompt, or sample a job trained with a longer max_seq_length",
                              field="prompts")


def prompt_ids(tokenizer: Any, prompt: PromptInput, index: int = 0) -> list[int]:
    """The token ids generation starts from (see the module docstring)."""
    if isinstance(prompt, PlainText):
        return list(tokenizer(prompt.text, add_special_tokens=prompt.special_tokens)["input_ids"])
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return list(tokenizer(prompt_text(tokenizer, messages, index), add_special_tokens=False)["input_ids"])


def chat_prompt(tokenizer: Any, prompt: str | Sequence[Mapping[str, str]]) -> PlainText:
    """`prompt` (one user turn, or a conversation) rendered by the chat template with its generation
    prompt, as a chat client renders it, for callers that generate as one rather than as training's
    label mask cuts a conversation: GRPO's held-out prompts (TRL's trainer renders a conversational
    prompt so), the enhance student and a local teacher. The template writes the special tokens
    itself, so the tokenizer adds none."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return PlainText(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     special_tokens=False)


def prompt_text(tokenizer: Any, messages: list[dict[str, str]], index: int = 0) -> str:
    """The conversation rendered up to where an assistant reply starts, as training's mask sees it."""
    from finetune_mcp.data.chat_tokens import ChatSpans

    if messages and messages[-1].get("role") == "assistant":
        raise ModelError(f"prompt {index} ends with an assistant turn; end it with the user turn to answer")
    full, spans = ChatSpans(tokenizer).char_spans([*messages, {"role": "assistant", "content": _PROBE}], index)
    return full[: spans[-1][0]]


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS, the model's generation-config EOS and the chat
    template's end-of-turn marker when it is one token. The first is the tokenizer's EOS."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [int(i) for i in (configured if isinstance(configured, list) else [configured]) if i is not None]
    marker = _turn_end_marker(tokenizer)
    if marker is not None and marker in tokenizer.get_vocab():
        ids.append(int(tokenizer.convert_tokens_to_ids(marker)))
    if not ids:
        raise ModelError("the tokenizer has no EOS token and the chat template no end-of-turn marker, so "
                         "generation could never stop; set tokenizer.eos_token")
    return list(dict.fromkeys(ids))


def _turn_end_marker(tokenizer: Any) -> str | None:
    from finetune_mcp.data.chat_tokens import ChatSpans

    if not getattr(tokenizer, "chat_template", None) or not getattr(tokenizer, "is_fast", False):
        return None
    return ChatSpans(tokenizer).turn_end


def _generation_config(settings: GenerationSettings, stops: list[int], pad: int) -> Any:
    from transformers import GenerationConfig

    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0} \
        if not settings.greedy else {"do_sample": False}
    return GenerationConfig(max_new_tokens=settings.max_new_tokens, eos_token_id=stops, pad_token_id=pad,
                            num_beams=1, repetition_penalty=1.0, **sampling)


@contextlib.contextmanager
def _plain_defaults(model: Any) -> Iterator[None]:
    """Give the model a blank generation config while generating: transformers fills every field a
    call leaves unset from the model's own config, which would bring its sampling defaults (and any
    repetition penalty) into greedy decoding."""
    from transformers import GenerationConfig

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    targets = [m for m in {id(model): model, id(inner): inner}.values() if hasattr(m, "generation_config")]
    saved = [m.generation_config for m in targets]
    for target in targets:
        target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        for target, config in zip(targets, saved, strict=True):
            target.generation_config = config


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _generate_batch(model: Any, tokenizer: Any, batch: list[list[int]], config: Any, pad: int, stops: set[int],
                    device: Any, settings: GenerationSettings, stats: GenerationStats | None) -> list[Generation]:
    import torch
    from transformers import LogitsProcessorList

    width = max(len(ids) for ids in batch)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
    recorder = _EntropyRecorder(settings.alternatives)
    timer = _FirstTokenTimer()
    started = time.perf_counter()
    sequences = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                               logits_processor=LogitsProcessorList([recorder]), streamer=timer)
    seconds = time.perf_counter() - started
    new = sequences[:, width:].tolist()
    entropies, top_ids, top_probs = recorder.collect(len(batch))
    out = []
    for row, ids in enumerate(new):
        length = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
        kept = ids[:length]
        finish: Literal["stop", "length"] = "stop" if kept and kept[-1] in stops else "length"
        pieces, special = token_pieces(tokenizer, kept)
        alternatives = [[(tokenizer.decode([t]), round(p, 4)) for t, p in zip(top_ids[row][i], top_probs[row][i],
                                                                               strict=True)]
                        for i in range(length)] if settings.alternatives else [[] for _ in range(length)]
        out.append(Generation(text="".join(pieces), token_ids=kept, tokens=pieces, special=special,
                              entropies=[round(h, 5) for h in entropies[row][:length]], alternatives=alternatives,
                              finish_reason=finish, prompt_tokens=len(batch[row])))
    if stats is not None:
        stats.batches += 1
        stats.prompts += len(batch)
        stats.generated_tokens += sum(len(g.token_ids) for g in out)
        stats.seconds += seconds
        if timer.first is not None:
            stats.first_token_s.append(timer.first - started)
    return out


def token_pieces(tokenizer: Any, ids: list[int]) -> tuple[list[str], list[str | None]]:
    """The text each token adds to the decoded answer. Tokens are decoded in the context of the line
    they are on (SentencePiece drops a leading space when a token is decoded alone); a token that
    ends inside a multi-byte character adds "" and the one that completes it adds the character."""
    special_ids = set(tokenizer.all_special_ids)
    pieces: list[str] = []
    names: list[str | None] = []
    line: list[int] = []
    emitted = 0
    for token in ids:
        if token in special_ids:
            pieces.append("")
            names.append(tokenizer.convert_ids_to_tokens(token))
            continue
        line.append(token)
        text = tokenizer.decode(line, skip_special_tokens=True)
        names.append(None)
        if text.endswith("\ufffd"):
            pieces.append("")
            continue
        pieces.append(text[emitted:])
        emitted = len(text)
        if text.endswith("\n"):
            line, emitted = [], 0
    return pieces, names


class _EntropyRecorder:
    """A logits processor that changes nothing: it records each step's entropy and top tokens.

    transformers applies user processors after its own non-sampling ones (none are configured
    here) and before temperature / top-p, so `scores` are the model's raw next-token logits."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.steps: list[tuple[Any, Any, Any]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)  # [B, V]
        entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)  # [B]; 0·log 0 = 0 where a logit is -inf
        if self.top_k:
            top = torch.topk(logp, self.top_k, dim=-1)  # [B, k]
            self.steps.append((entropy, top.indices, top.values.exp()))
        else:
            self.steps.append((entropy, None, None))
        return scores

    def collect(self, batch: int) -> tuple[list[list[float]], list[list[list[int]]], list[list[list[float]]]]:
        """[B][T] entropies and [B][T][k] top ids / probabilities, moved to the CPU once."""
        import torch

        if not self.steps:
            return [[] for _ in range(batch)], [[] for _ in range(batch)], [[] for _ in range(batch)]
        entropy = torch.stack([s[0] for s in self.steps], dim=1).cpu().tolist()  # [B, T]
        if not self.top_k:
            empty = [[[] for _ in self.steps] for _ in range(batch)]
            return entropy, empty, empty  # type: ignore[return-value]
        ids = torch.stack([s[1] for s in self.steps], dim=1).cpu().tolist()  # [B, T, k]
        probs = torch.stack([s[2] for s in self.steps], dim=1).float().cpu().tolist()
        return entropy, ids, probs


class _FirstTokenTimer:
    """A generation streamer that only notes the time the first new tokens arrive (the first `put`
    is the prompt; the second, the first generated token of every sequence)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        return None
