"""Answers from an exported GGUF file, through llama.cpp (llama-cpp-python), as `Generation`s.

The same contract as `model.generate.generate`, so results, get_samples, the card and the CLI
treat a GGUF column like any other:

- Prompts: rendered by the training tokenizer exactly as for transformers (`generate.prompt_ids`:
  the chat template cut where training's labels begin) and handed to llama.cpp as token ids, so
  both paths start from the same tokens (llama.cpp's own tokenizer and template are not used).
- Stops: the same end-of-turn ids (`generate.stop_token_ids`: the tokenizer's EOS, the template's
  end-of-turn marker) plus the GGUF's EOS (the model's generation-config EOS, which the converter
  wrote into the file).
- Decoding: greedy (argmax of the raw logits) unless a temperature is given; then temperature and
  top-p over the full vocabulary, from a numpy generator seeded with `seed` (reproducible, though
  not the same draws as torch's).
- Entropy: H = −Σ p log p (nats) of the step's raw next-token logits over the full vocabulary,
  before temperature / top-p (`entropy_from_logits`), and the most likely alternatives: the same
  figures the transformers path records.
- Timing: one prompt at a time (llama.cpp's high-level API decodes one sequence); time to first
  token = prompt evaluation + the first step, tokens/s over the whole call, in `GenerationStats`.
- Placement: the CPU (n_gpu_layers=0), the device the `export` extra's llama.cpp build runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from finetune_mcp.errors import ModelError
from finetune_mcp.model.generate import (
    Generation,
    GenerationStats,
    PromptInput,
    prompt_ids,
    stop_token_ids,
    token_pieces,
)
from finetune_mcp.model.generation_settings import GenerationSettings

CONTEXT_MARGIN = 8


def entropy_from_logits(logits: Any, top_k: int = 0) -> tuple[float, list[int], list[float]]:
    """H = −Σ p log p (nats) of softmax(`logits`) over the full vocabulary, and the `top_k` most
    likely ids with their probabilities (float64, stable: log-softmax after subtracting the max;
    -inf logits count as p = 0)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max()
    logp = z - np.log(np.exp(z).sum())
    p = np.exp(logp)
    positive = p > 0
    entropy = float(-(p[positive] * logp[positive]).sum())
    if not top_k:
        return entropy, [], []
    top = np.argpartition(-logp, top_k - 1)[:top_k] if top_k < len(logp) else np.arange(len(logp))
    top = top[np.argsort(-logp[top], kind="stable")][:top_k]
    return entropy, [int(i) for i in top], [float(p[i]) for i in top]


def sampler(settings: GenerationSettings) -> Callable[[Any], int]:
    """How a token is chosen from a step's logits: argmax when greedy, else temperature + top-p."""
    import numpy as np

    from finetune_mcp.export.llama import greedy_choice

    if settings.greedy:
        return greedy_choice
    rng = np.random.default_rng(settings.seed)

    def choose(logits: Any) -> int:
        z = np.asarray(logits, dtype=np.float64) / settings.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if settings.top_p < 1:
            order = np.argsort(-p, kind="stable")
            keep = order[: int(np.searchsorted(np.cumsum(p[order]), settings.top_p) + 1)]
            kept = np.zeros_like(p)
            kept[keep] = p[keep]
            p = kept / kept.sum()
        return int(rng.choice(len(p), p=p))

    return choose


def load_gguf(path: str, n_ctx: int, threads: int | None = None) -> Any:
    """The GGUF opened by llama.cpp on the CPU, keeping only the last position's logits."""
    from finetune_mcp.export.llama import llama_cpp_missing, load_llama

    missing = llama_cpp_missing()
    if missing is not None:
        raise ModelError(f"sampling a GGUF needs llama.cpp: {missing}")
    if not Path(path).is_file():
        raise ModelError(f"{path}: no such GGUF file; export the job again with export_model")
    return load_llama(path, n_ctx, threads, logits_all=False)


def generate_gguf(path: str, tokenizer: Any, prompts: Sequence[PromptInput], settings: GenerationSettings | None = None,
                  *, stats: GenerationStats | None = None, on_batch: Callable[[int], None] | None = None,
                  threads: int | None = None, llm: Any = None) -> list[Generation]:
    """One `Generation` per prompt from the GGUF at `path` (or the already open `llm`, whose context
    must hold the longest prompt plus max_new_tokens)."""
    settings = settings or GenerationSettings()
    encoded = [prompt_ids(tokenizer, prompt, index) for index, prompt in enumerate(prompts)]
    own = llm is None
    if own:
        llm = load_gguf(path, max((len(ids) for ids in encoded), default=1) + settings.max_new_tokens
                        + CONTEXT_MARGIN, threads)
    stops = set(stop_token_ids(tokenizer, None))
    eos = int(llm.token_eos())
    if eos >= 0:
        stops.add(eos)
    longest = max((len(ids) for ids in encoded), default=0)
    if longest + settings.max_new_tokens > llm.n_ctx():
        raise ModelError(f"a prompt of {longest} tokens plus max_new_tokens={settings.max_new_tokens} exceeds the "
                         f"GGUF's context of {llm.n_ctx()} tokens; shorten the prompt or raise max_seq_length")
    choose = sampler(settings)
    out: list[Generation] = []
    try:
        for index, ids in enumerate(encoded):
            out.append(_one(llm, tokenizer, ids, stops, choose, settings, stats))
            if on_batch is not None and ((index + 1) % settings.batch_size == 0 or index + 1 == len(encoded)):
                on_batch(index + 1)
    finally:
        if own:
            llm.close()
    return out


def _one(llm: Any, tokenizer: Any, ids: list[int], stops: set[int], choose: Callable[[Any], int],
         settings: GenerationSettings, stats: GenerationStats | None) -> Generation:
    from finetune_mcp.export.llama import continue_tokens

    steps: list[tuple[float, list[int], list[float]]] = []
    first: list[float] = []

    def record(logits: Any, token: int) -> None:
        if not first:
            first.append(time.perf_counter())
        steps.append(entropy_from_logits(logits, settings.alternatives))

    started = time.perf_counter()
    kept = continue_tokens(llm, ids, settings.max_new_tokens, stops, choose=choose, on_step=record)
    seconds = time.perf_counter() - started
    finish: Literal["stop", "length"] = "stop" if kept and kept[-1] in stops else "length"
    pieces, special = token_pieces(tokenizer, kept)
    alternatives = [[(tokenizer.decode([t]), round(p, 4)) for t, p in zip(top_ids, top_probs, strict=True)]
                    for _, top_ids, top_probs in steps]
    if stats is not None:
        stats.batches += 1
        stats.prompts += 1
        stats.generated_tokens += len(kept)
        stats.seconds += seconds
        if first:
            stats.first_token_s.append(first[0] - started)
    return Generation(text="".join(pieces), token_ids=kept, tokens=pieces, special=special,
                      entropies=[round(h, 5) for h, _, _ in steps], alternatives=alternatives,
                      finish_reason=finish, prompt_tokens=len(ids))
