"""Name a BPE tokenizer's pre-tokenizer for llama.cpp (`tokenizer.ggml.pre`) from its tokenizer.json.

llama.cpp's converter identifies a BPE pre-tokenizer by hashing the token ids that the tokenizer
gives one test string, against a table of hashes of published tokenizers. The hash depends on the
vocabulary as much as on the splitting rules, so a tokenizer trained anew (the offline tiny test
model's, a project's own) is refused even when it splits text exactly as Qwen2 or GPT-2 do.

`pre_tokenizer_name` is the fallback the exporter uses only when that hash is unknown: it reads the
splitting rules themselves (the `pre_tokenizer` of tokenizer.json) and names the llama.cpp
pre-tokenizer whose regex is the same. A tokenizer that matches none is refused with the reason;
a tokenizer the converter recognises never reaches this code. The verification step then compares
llama.cpp's and transformers' token ids on the validation prompts, so a wrong name cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The Split regexes of the published tokenizer.json files, and the llama.cpp name whose regex
# (src/llama-vocab.cpp) splits the same way.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_REGEXES = {QWEN2_REGEX: "qwen2", LLAMA3_REGEX: "llama-bpe"}


def pre_tokenizer_name(tokenizer_json: Path) -> str:
    """`qwen2`, `llama-bpe` or `gpt-2`: the llama.cpp pre-tokenizer that splits like this tokenizer.

    Raises ValueError with what was found when the rules match none of them.
    """
    try:
        data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {tokenizer_json}: {exc}") from None
    pre = data.get("pre_tokenizer")
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    steps = [s for s in steps if isinstance(s, dict)]
    name = _match(steps)
    if name is None:
        raise ValueError(f"its pre_tokenizer {json.dumps(pre)[:300]} is none that llama.cpp implements "
                         "(GPT-2's byte-level regex, Qwen2's or Llama 3's split regex)")
    return name


def _match(steps: list[dict[str, Any]]) -> str | None:
    # GPT-2: one ByteLevel step that applies its own (GPT-2) regex.
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel":
        step = steps[0]
        return "gpt-2" if step.get("use_regex", True) and not step.get("add_prefix_space", False) else None
    # Qwen2 / Llama 3: an isolating Split on the family's regex, then a ByteLevel without a regex of its own.
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        split, byte_level = steps
        pattern = split.get("pattern") or {}
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        plain = split.get("behavior") == "Isolated" and not split.get("invert", False)
        if plain and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space", False):
            return _SPLIT_REGEXES.get(regex)
    return None
