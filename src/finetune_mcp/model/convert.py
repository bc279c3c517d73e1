"""Turn one GGUF file into a Hugging Face folder (safetensors, config, tokenizer with its chat template).

Heavy (torch, transformers with the `gguf` package): only workers and the preview child call this.
transformers reads a GGUF (`from_pretrained(folder, gguf_file=name)`) and dequantises it, but the model
it returns is marked "quantized with gguf" and `save_pretrained` refuses it; the weights are therefore
moved into a model built from the same config, which saves normally.

dtype: an exact file keeps its own (F32 -> float32, F16 -> float16, BF16 -> bfloat16); a quantised file's
dequantised weights are stored in bfloat16 (what a GPU trains in; its rounding, ~0.4 %, is far below
the quantisation error the weights already carry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ModelError
from finetune_mcp.model.gguf_header import GgufHeader

log = logging.getLogger(__name__)

_EXACT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def convert_gguf(header: GgufHeader, destination: Path) -> dict[str, Any]:
    """Write the Hugging Face folder of `header.path` into `destination` (an empty folder); returns what
    the source record adds (dtype, seconds, library versions)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise ModelError("importing a GGUF needs the `gguf` package (with its distribution metadata, which "
                         "transformers checks): pip install gguf==0.19.0")
    started = time.time()
    dtype_name = _EXACT_DTYPES.get(header.quantization, "bfloat16") if header.exact else "bfloat16"
    dtype = getattr(torch, dtype_name)
    folder, name = str(header.path.parent), header.path.name
    try:
        with _parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    except (ValueError, KeyError, RuntimeError, OSError, NotImplementedError) as exc:
        raise ModelError(f"transformers could not read {header.path} ({str(exc).splitlines()[0][:200]}); give "
                         "the model's original Hugging Face folder or Hub id instead") from exc
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "model_type"},
                                  model_type=loaded.config.model_type)
    if "head_dim" in header.config:  # transformers 5.17 maps no head_dim for Qwen3 GGUFs: the default (128)
        config.head_dim = header.config["head_dim"]  # would not fit the file's tensors
    for attribute in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    _set_special_tokens(model, tokenizer, header.special_tokens)
    _byte_level_as_trained(tokenizer, header.tokenizer)
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer: the clean-up would strip spaces
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    seconds = round(time.time() - started, 1)
    log.info("imported %s (%s, %s) into %s in %.1fs", header.path, header.quantization, dtype_name, destination,
             seconds)
    return {"dtype": dtype_name, "convert_s": seconds, "transformers": transformers.__version__,
            "chat_template": bool(getattr(tokenizer, "chat_template", None))}


@contextmanager
def _parsed_once() -> Iterator[None]:
    """Within it, `gguf.GGUFReader` parses each file once and `gguf.get_tensor_name_map` builds each map once.

    Why: transformers 5.17 reads the whole GGUF (every metadata field, the 49,152-entry vocabulary and its
    merges, item by item through numpy memmaps) once for the tokenizer, once for the config and twice for
    the weights, and rebuilds llama.cpp's tensor-name map for each of the model's ~400 modules; on
    SmolLM2 that was most of the import's time. Both are looked up by name (`from gguf import ...`) at
    call time, so a memo placed on the `gguf` module for this block reaches them; a reader is read-only (a
    memmap of the file), a name map is a lookup table. Outside the block nothing changes."""
    import gguf

    readers: dict[str, Any] = {}
    maps: dict[tuple[Any, ...], Any] = {}
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader(path: Any, mode: str = "r") -> Any:
        key = f"{Path(path).resolve()}:{mode}"
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    def tensor_name_map(arch: Any, n_blocks: int) -> Any:
        if (arch, n_blocks) not in maps:
            maps[arch, n_blocks] = name_map(arch, n_blocks)
        return maps[arch, n_blocks]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, tensor_name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


# llama.cpp pre-tokenizer names (tokenizer.ggml.pre) -> the Hugging Face pre-tokenizer they stand for, where
# transformers' GGUF tokenizer rebuilds only the ByteLevel part (SmolLM's digits are split one by one).
_PRE_TOKENIZERS: dict[str, list[dict[str, Any]]] = {
    "smollm": [{"type": "Digits", "individual_digits": True}],
}


def _byte_level_as_trained(tokenizer: Any, kind: tuple[str, str]) -> None:
    """A byte-level BPE (llama.cpp's "gpt2" tokenizer model) rebuilt as the original: ByteLevel decoder only,
    and the pre-tokenizer `tokenizer.ggml.pre` names.

    Why: transformers 5.17's GGUF tokenizer gives a byte-level BPE a SentencePiece-style decoder
    (ByteFallback, Replace '▁'), and llama.cpp's converter then takes the folder for a SentencePiece vocabulary:
    a GGUF exported from it crashes llama.cpp's tokenizer (byte_to_token, seen on SmolLM2)."""
    import json

    from tokenizers import Tokenizer

    model, pre = kind
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if model != "gpt2" or backend is None:
        return
    data = json.loads(backend.to_str())
    if (data.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        return
    byte_level = {**data["pre_tokenizer"], "add_prefix_space": False, "trim_offsets": True}
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    if pre in _PRE_TOKENIZERS:
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [*_PRE_TOKENIZERS[pre], byte_level]}
    rebuilt = Tokenizer.from_str(json.dumps(data))
    if hasattr(tokenizer, "_tokenizer"):
        tokenizer._tokenizer = rebuilt
    else:
        tokenizer.backend_tokenizer = rebuilt


def _set_special_tokens(model: Any, tokenizer: Any, special: dict[str, int]) -> None:
    """The special tokens the GGUF declares, on the tokenizer, the config and the generation config.

    Why: transformers 5.17's GGUF tokenizer takes its end-of-sequence from the wrong place for some files
    (SmolLM2's Q4_1 came out with eos = <|im_start|>, id 1, where the file says 2, <|im_end|>), and a
    model whose end of turn is not its eos never stops generating and trains the wrong stop token."""
    generation = model.generation_config
    for role, token_id in special.items():
        if not 0 <= token_id < len(tokenizer):
            continue
        setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
        if role in ("bos", "eos", "pad"):
            setattr(model.config, f"{role}_token_id", token_id)
            setattr(generation, f"{role}_token_id", token_id)
