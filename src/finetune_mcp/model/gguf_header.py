"""What a GGUF file says about itself, read from its header in the server (the `gguf` reader: pure Python
and numpy, no torch), so that a file the import cannot use is refused before any job is created.

The header is parsed here (a few dozen lines of `struct`): the `gguf` package's reader builds numpy views
of every token and merge, seconds for a 49k vocabulary; this skips them in ~0.1 s. Only its constants
(tensor type sizes, file types) come from `gguf`. Checked: the file is a GGUF (magic and a parseable header), it is complete (every tensor's bytes lie
inside the file: a copy cut short is caught here, not minutes later in the worker), and its architecture
is one transformers can build from GGUF. Read for the rest of the house: the quantisation type (the
file type llama.cpp recorded, else the most common type of the 2-D weights), whether the import is exact
(every tensor F32 / F16 / BF16) or dequantised, and the shape fields a config.json would give, so the
memory estimate (`jobs.vram`) works without converting anything.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from finetune_mcp.errors import ModelError

# GGUF architecture (llama.cpp's name) -> the transformers model_type that transformers 5.17 builds from it
# (transformers.modeling_gguf_pytorch_utils: GGUF_SUPPORTED_ARCHITECTURES after its renames), causal LMs only.
# tests/model/test_gguf_header.py checks this table against the installed transformers.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen2moe": "qwen2_moe", "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "lfm2": "lfm2", "falcon": "falcon", "phi3": "phi3",
    "bloom": "bloom", "stablelm": "stablelm", "gpt2": "gpt2", "starcoder2": "starcoder2", "nemotron": "nemotron",
    "gemma2": "gemma2", "gemma3": "gemma3_text",
}
EXACT_TYPES = frozenset({"F32", "F16", "BF16"})
_SPECIAL_TOKENS = {"bos": "bos", "eos": "eos", "pad": "padding", "unk": "unknown"}

# GGUF metadata key (after "<arch>.") -> config.json field, for sizing the model (jobs.vram.shape_from_config)
_SHAPE_KEYS = {
    "embedding_length": "hidden_size", "block_count": "num_hidden_layers", "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "vocab_size": "vocab_size", "context_length": "max_position_embeddings", "expert_count": "num_experts",
    "expert_feed_forward_length": "moe_intermediate_size", "attention.key_length": "head_dim",
}


@dataclass(frozen=True)
class GgufHeader:
    """One GGUF file as its header describes it."""

    path: Path
    architecture: str  # llama.cpp's name, e.g. "llama"
    quantization: str  # e.g. "Q4_1", "F16"
    exact: bool  # every tensor F32 / F16 / BF16: the import keeps the weights bit for bit
    name: str | None  # general.name, when the file has one
    parameters: int  # elements of all tensors
    special_tokens: dict[str, int]  # bos / eos / pad / unk ids the file declares (tokenizer.ggml.*_token_id)
    tokenizer: tuple[str, str]  # (tokenizer.ggml.model, tokenizer.ggml.pre): e.g. ("gpt2", "smollm")
    config: dict[str, Any] = field(repr=False)  # config.json-like shape fields

    def source_record(self) -> dict[str, Any]:
        """What a job, its result and its model card say about the model's origin."""
        return {"file": str(self.path), "quantization": self.quantization, "architecture": self.architecture,
                "weights": "exact" if self.exact else "dequantised", "name": self.name}


def read_gguf_header(path: Path) -> GgufHeader:
    """The header of the GGUF file at `path`, or a ModelError that says what is wrong and what to do."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    path = Path(path)
    try:
        with path.open("rb") as handle:
            fields, tensors, data_start = _parse(_Reader(handle, path.stat().st_size))
    except (ValueError, struct.error, UnicodeDecodeError, OSError) as exc:
        raise ModelError(f"{path} is not a readable GGUF file ({_reason(exc)}); give a complete .gguf file as "
                         "llama.cpp / Ollama / LM Studio use it, or a Hugging Face model folder") from None
    types: list[str] = []
    end = data_start
    for _name, shape, type_id, offset in tensors:
        try:
            kind = GGMLQuantizationType(type_id)
        except ValueError:
            raise ModelError(f"{path}: tensor type {type_id} is unknown to this gguf package; update it "
                             "(pip install -U gguf) or give the model's Hugging Face folder") from None
        block, size = GGML_QUANT_SIZES[kind]
        end = max(end, data_start + offset + math.prod(shape) // block * size)
        types.append(kind.name)
    file_size = path.stat().st_size
    if end > file_size or not tensors:
        raise ModelError(f"{path} is truncated ({file_size:,} bytes, its tensors need {end:,}); copy or download "
                         "the file again, completely")
    architecture = str(fields.get("general.architecture", ""))
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelError(f"{path}: transformers cannot load the GGUF architecture {architecture or 'unknown'!r} "
                         f"(it loads {', '.join(sorted(SUPPORTED_ARCHITECTURES))}); give the model's original "
                         "Hugging Face folder or Hub id instead")
    weight_types = Counter(t for t, (_n, shape, _t, _o) in zip(types, tensors, strict=True) if len(shape) > 1)
    try:
        quantization = LlamaFileType(int(fields["general.file_type"])).name.removeprefix("MOSTLY_")
        quantization = quantization.removeprefix("ALL_")
    except (KeyError, TypeError, ValueError):
        quantization = (weight_types or Counter(types)).most_common(1)[0][0]
    names = {name for name, *_ in tensors}
    config = _shape_config(architecture, fields, "output.weight" not in names)
    name = fields.get("general.name")
    special = {role: fields[f"tokenizer.ggml.{key}_token_id"] for role, key in _SPECIAL_TOKENS.items()
               if isinstance(fields.get(f"tokenizer.ggml.{key}_token_id"), int)}
    return GgufHeader(path, architecture, quantization, all(t in EXACT_TYPES for t in types),
                      str(name) if name else None, sum(math.prod(shape) for _n, shape, *_ in tensors), special,
                      (str(fields.get("tokenizer.ggml.model", "")), str(fields.get("tokenizer.ggml.pre", ""))), config)


class _Reader:
    """Little-endian reads with the file's size as the bound (a corrupt length fails, never allocates)."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size

    def take(self, count: int) -> bytes:
        if count < 0 or self.handle.tell() + count > self.size:
            raise ValueError("the header runs past the end of the file")
        return self.handle.read(count)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("Q")).decode("utf-8")

    def skip(self, count: int) -> None:
        if count < 0 or self.handle.tell() + count > self.size:
            raise ValueError("the header runs past the end of the file")
        self.handle.seek(count, 1)


# GGUF value types: 0-7 and 10-12 scalars (struct format), 8 string, 9 array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _value(reader: _Reader, kind: int) -> Any:
    if kind in _SCALARS:
        return reader.unpack(_SCALARS[kind])
    if kind == 8:
        return reader.string()
    if kind != 9:
        raise ValueError(f"unknown metadata value type {kind}")
    item, count = reader.unpack("I"), reader.unpack("Q")
    if item in _SCALARS:  # numbers (token scores, types): skipped, only their count matters here
        reader.skip(count * struct.calcsize(_SCALARS[item]))
        return _ArrayLength(count)
    for _ in range(count):
        _value(reader, item)
    return _ArrayLength(count)


class _ArrayLength(int):
    """An array's length: what the header check keeps of an array (token lists are large)."""


def _parse(reader: _Reader) -> tuple[dict[str, Any], list[tuple[str, list[int], int, int]], int]:
    """(metadata, tensors as (name, shape, type, offset), where the tensor data starts)."""
    if reader.take(4) != b"GGUF":
        raise ValueError("no GGUF magic at the start")
    version = reader.unpack("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not 2 or 3 (a big-endian or very old file)")
    tensor_count, kv_count = reader.unpack("Q"), reader.unpack("Q")
    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        fields[key] = _value(reader, reader.unpack("I"))
    tensors = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = reader.unpack("I")
        if dims > 8:
            raise ValueError(f"tensor {name!r} has {dims} dimensions")
        shape = [reader.unpack("Q") for _ in range(dims)]
        tensors.append((name, shape, reader.unpack("I"), reader.unpack("Q")))
    alignment = fields.get("general.alignment", 32)
    alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
    position = reader.handle.tell()
    return fields, tensors, -(-position // alignment) * alignment


def _shape_config(architecture: str, fields: dict[str, Any], tied: bool) -> dict[str, Any]:
    prefix = f"{architecture}."
    config: dict[str, Any] = {"model_type": SUPPORTED_ARCHITECTURES[architecture], "tie_word_embeddings": tied}
    for key, name in _SHAPE_KEYS.items():
        value = fields.get(prefix + key)
        if isinstance(value, int) and not isinstance(value, _ArrayLength | bool):
            config[name] = value
    if "vocab_size" not in config and isinstance(fields.get("tokenizer.ggml.tokens"), _ArrayLength):
        config["vocab_size"] = int(fields["tokenizer.ggml.tokens"])
    return config


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
