"""Does the GGUF behave like the trained model? llama.cpp (llama-cpp-python) against transformers.

On a few validation rows of the training data, tokenised exactly as in training:
  tokenizer   llama.cpp's token ids for the row's text == transformers' (a wrong pre-tokenizer or
              special-token table shows up here first)
  greedy      a greedy continuation of the row's prompt (the text before the first trained token)
              from both; `greedy_identical` counts identical ones, `greedy_token_agreement` is the
              mean share of tokens that agree up to the first difference
  next token  teacher-forced over the whole row: top-1 agreement and max |Δ logit|, and the top-1
              agreement at clear positions only (transformers' top-2 margin above CLEAR_MARGIN: where the
              two best tokens are closer than 16-bit rounding can move a logit, either is right)
  perplexity  over the trained tokens (the labels), from both, and the difference

The reference is the merged checkpoint in fp32 (the GGUF's 16-bit weights are these weights). Which
differences fail the export: for f16/bf16 any tokenizer difference, any greedy difference that is
not at a tie (transformers' top-2 margin at that step no larger than the max |Δ logit| measured),
or top-1 agreement at clear positions below 99% (an untrained model's near-flat logits make the
all-positions figure a coin toss at 16-bit rounding, so it is reported, not judged); for quantised files only a tokenizer difference (the agreement and
perplexity figures are reported, since quantisation is expected to change some tokens).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_mcp.export.llama import continue_tokens, load_llama
from finetune_mcp.export.quantization import Quantization

log = logging.getLogger("finetune_mcp.export")

MIN_FLOAT_TOP1 = 0.99
# A logit gap no 16-bit rounding of the weights closes: the largest |Δ logit| measured on a real export
# (Qwen3-0.6B shape, f16, H100) was 0.083. Fixed, not the measured max, so a wrong file cannot widen it.
CLEAR_MARGIN = 0.25


@dataclass
class Verification:
    figures: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def verify_gguf(gguf_file: Path, checkpoint: Path, tokenizer_dir: Path, rows: list[dict[str, Any]],
                quantization: Quantization, *, max_seq_length: int, assistant_only_loss: bool,
                max_new_tokens: int, threads: int | None = None) -> Verification:
    """Compare `gguf_file` with `checkpoint` (merged HF folder) on `rows` (normalised examples)."""
    import torch

    from finetune_mcp.data.chat_tokens import IGNORE_INDEX, tokenize_examples
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import LoadRequest, plan_load

    plan = plan_load(LoadRequest(max_seq_length=max_seq_length), "reference")
    loaded = load_model(str(checkpoint), plan, tokenizer=str(tokenizer_dir))
    reference, tokenizer, device = loaded.model, loaded.tokenizer, plan.device
    tokenized = tokenize_examples(rows, tokenizer, max_seq_length, assistant_only_loss)
    sequences = [(list(ids), list(labels)) for ids, labels in zip(tokenized["input_ids"], tokenized["labels"],
                                                                    strict=True)]
    stop_ids = _stop_ids(tokenizer, reference)
    n_ctx = max(len(ids) for ids, _ in sequences) + max_new_tokens + 8
    llm = load_llama(gguf_file, n_ctx, threads)
    totals = _Totals()
    examples = []
    with torch.no_grad():
        for ids, labels in sequences:
            text = tokenizer.decode(ids, skip_special_tokens=False)
            hf_text_ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            totals.tokenizer_identical += int(llm.tokenize(text.encode(), add_bos=True, special=True) == hf_text_ids)
            totals.forced(reference, llm, ids, labels, IGNORE_INDEX, device)
            prompt = _prompt(ids, labels, IGNORE_INDEX)
            hf_out, margins = _hf_greedy(reference, prompt, max_new_tokens, stop_ids, device)
            gguf_out = continue_tokens(llm, prompt, max_new_tokens, stop_ids)
            totals.greedy(hf_out, gguf_out, margins)
            if len(examples) < 3:
                examples.append({"prompt": tokenizer.decode(prompt, skip_special_tokens=False),
                                 "transformers": tokenizer.decode(hf_out, skip_special_tokens=False),
                                 "gguf": tokenizer.decode(gguf_out, skip_special_tokens=False)})
    llm.close()
    figures = totals.figures(len(sequences))
    return Verification(figures, _failures(figures, quantization), examples)


def _failures(figures: dict[str, Any], quantization: Quantization) -> list[str]:
    n = figures["prompts"]
    failures = []
    if figures["tokenizer_identical"] < n:
        failures.append(f"llama.cpp tokenises {n - figures['tokenizer_identical']} of {n} validation rows differently "
                        "from the training tokenizer (wrong pre-tokenizer or special tokens)")
    if quantization.is_float:
        if figures["greedy_differences_not_at_ties"]:
            failures.append(f"{figures['greedy_differences_not_at_ties']} of {n} greedy continuations differ from "
                            f"transformers' where its choice was clear (a {quantization.name} file must match)")
        clear = figures["top1_agreement_clear"]
        if clear is not None and clear < MIN_FLOAT_TOP1:
            failures.append(f"top-1 next-token agreement {clear:.4f} at the {figures['positions_clear']} positions "
                            f"with a clear choice is below {MIN_FLOAT_TOP1} (max |Δ logit| "
                            f"{figures['max_abs_logit_diff']:.4g})")
    return failures


@dataclass
class _Totals:
    tokenizer_identical: int = 0
    positions: int = 0
    top1_same: int = 0
    max_abs: float = 0.0
    ce_hf: float = 0.0
    ce_gguf: float = 0.0
    trained_tokens: int = 0
    greedy_same: int = 0
    greedy_not_at_tie: int = 0
    agreement_sum: float = 0.0
    generated: int = 0
    top1_at: list[tuple[float, bool]] = field(default_factory=list)  # (transformers' top-2 margin, same top-1)

    def forced(self, reference, llm, ids: list[int], labels: list[int], ignore: int, device: str) -> None:
        import numpy as np
        import torch

        hf = reference(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()  # [T, V]
        llm.reset()
        llm.eval(ids)
        gg = np.asarray(llm.scores[: len(ids)], dtype=np.float32)  # [T, V]
        width = min(hf.shape[1], gg.shape[1])
        hf, gg = hf[:, :width], gg[:, :width]
        self.positions += len(ids)
        same = hf.argmax(-1) == gg.argmax(-1)
        self.top1_same += int(same.sum())
        top2 = np.sort(hf, axis=-1)[:, -2:]
        self.top1_at.extend(zip((top2[:, 1] - top2[:, 0]).tolist(), same.tolist(), strict=True))
        self.max_abs = max(self.max_abs, float(np.abs(hf - gg).max()))
        for t in range(1, len(ids)):
            if labels[t] != ignore:
                self.ce_hf -= _log_softmax_at(hf[t - 1], ids[t])
                self.ce_gguf -= _log_softmax_at(gg[t - 1], ids[t])
                self.trained_tokens += 1

    def greedy(self, hf_out: list[int], gguf_out: list[int], margins: list[float]) -> None:
        same = 0
        while same < min(len(hf_out), len(gguf_out)) and hf_out[same] == gguf_out[same]:
            same += 1
        self.generated += max(len(hf_out), len(gguf_out))
        self.agreement_sum += same / max(len(hf_out), len(gguf_out), 1)
        if hf_out == gguf_out:
            self.greedy_same += 1
        elif same >= len(margins) or margins[same] > self.max_abs:
            self.greedy_not_at_tie += 1

    def figures(self, n: int) -> dict[str, Any]:
        ppl_hf = math.exp(self.ce_hf / self.trained_tokens) if self.trained_tokens else None
        ppl_gguf = math.exp(self.ce_gguf / self.trained_tokens) if self.trained_tokens else None
        clear = [(margin, same) for margin, same in self.top1_at if margin > CLEAR_MARGIN]
        return {
            "prompts": n,
            "tokenizer_identical": self.tokenizer_identical,
            "greedy_identical": self.greedy_same,
            "greedy_differences_not_at_ties": self.greedy_not_at_tie,
            "greedy_token_agreement": round(self.agreement_sum / n, 4) if n else None,
            "generated_tokens": self.generated,
            "top1_agreement": round(self.top1_same / self.positions, 4) if self.positions else None,
            "top1_agreement_clear": round(sum(same for _, same in clear) / len(clear), 4) if clear else None,
            "positions_clear": len(clear),
            "max_abs_logit_diff": round(self.max_abs, 5),
            "positions_compared": self.positions,
            "perplexity_transformers": _round(ppl_hf),
            "perplexity_gguf": _round(ppl_gguf),
            "perplexity_delta": _round(ppl_gguf - ppl_hf) if ppl_hf is not None and ppl_gguf is not None else None,
            "trained_tokens": self.trained_tokens,
        }


def _stop_ids(tokenizer, model) -> set[int]:
    """EOS of the tokenizer and of the generation config (Qwen3 stops on <|im_end|> and <|endoftext|>)."""
    found = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    found.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return found


def _prompt(ids: list[int], labels: list[int], ignore: int) -> list[int]:
    """The tokens before the first trained one (chat rows: the prompt up to the assistant's reply)."""
    first = next((t for t, label in enumerate(labels) if label != ignore), 0)
    return ids[:first] if first > 0 else ids[: max(1, len(ids) // 2)]


def _hf_greedy(model, prompt: list[int], max_new_tokens: int, stop_ids: set[int], device: str):
    """Greedy tokens from transformers, and at each step the margin between its top two logits."""
    import torch

    out = model.generate(torch.tensor([prompt], device=device), attention_mask=torch.ones(1, len(prompt),
                         dtype=torch.long, device=device), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=sorted(stop_ids) or None, pad_token_id=next(iter(stop_ids), 0),
                         output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    margins = []
    for step in out.logits:
        top2 = torch.topk(step[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    return _until_stop(tokens, stop_ids), margins


def _until_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1]
    return tokens


def _log_softmax_at(logits, index: int) -> float:
    import numpy as np

    top = float(logits.max())
    return float(logits[index]) - top - math.log(float(np.exp(logits - top).sum()))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)
