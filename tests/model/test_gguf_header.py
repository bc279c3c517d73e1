"""The server-side GGUF check: what a header says, and every bad file refused with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune_mcp.errors import ModelError
from finetune_mcp.model.gguf_header import SUPPORTED_ARCHITECTURES, read_gguf_header
from model.conftest import write_gguf


def test_the_real_models_header_gives_its_shape_quantisation_and_special_tokens(smol_gguf: Path):
    header = read_gguf_header(smol_gguf)
    assert (header.architecture, header.quantization, header.exact) == ("llama", "Q4_1", False)
    assert header.config == {"model_type": "llama", "tie_word_embeddings": True, "hidden_size": 576,
                             "num_hidden_layers": 30, "intermediate_size": 1536, "num_attention_heads": 9,
                             "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192}
    assert header.parameters == 134_515_008
    assert header.special_tokens == {"bos": 1, "eos": 2, "pad": 2, "unk": 0}
    assert header.source_record() | {"name": None} == {
        "file": str(smol_gguf), "quantization": "Q4_1", "architecture": "llama", "weights": "dequantised",
        "name": None}


def test_an_f32_file_is_exact(tmp_path: Path):
    header = read_gguf_header(write_gguf(tmp_path / "m.gguf", "llama"))
    assert (header.quantization, header.exact, header.source_record()["weights"]) == ("F32", True, "exact")


def test_a_truncated_copy_is_refused_with_the_fix(smol_gguf: Path, tmp_path: Path):
    cut = tmp_path / "cut.gguf"
    with smol_gguf.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(20_000_000))  # the header and some tensors: the rest is missing
    with pytest.raises(ModelError, match=r"cut.gguf is truncated \(20,000,000 bytes, its tensors need .*copy or "
                                         r"download the file again"):
        read_gguf_header(cut)
    with smol_gguf.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(1000))  # cut inside the header
    with pytest.raises(ModelError, match=r"not a readable GGUF file .*runs past the end.*give a complete .gguf"):
        read_gguf_header(cut)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf" * 10)
    with pytest.raises(ModelError, match="not a readable GGUF file \\(no GGUF magic"):
        read_gguf_header(fake)


def test_an_architecture_transformers_cannot_load_is_refused_with_the_fix(tmp_path: Path):
    path = write_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(ModelError, match=r"transformers cannot load the GGUF architecture 'bert' .*give the "
                                         "model's original Hugging Face folder or Hub id instead"):
        read_gguf_header(path)


def test_every_supported_architecture_is_one_transformers_loads_from_gguf():
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    assert "llama" in GGUF_CONFIG_MAPPING
    for gguf_name, model_type in SUPPORTED_ARCHITECTURES.items():
        # transformers looks the architecture up as is, or after its renames (qwen2moe -> qwen2_moe, ...)
        assert gguf_name in GGUF_SUPPORTED_ARCHITECTURES or model_type in GGUF_SUPPORTED_ARCHITECTURES, gguf_name


def test_a_copy_is_read_the_same(smol_gguf: Path, tmp_path: Path):
    copy = Path(shutil.copy(smol_gguf, tmp_path / "copy.gguf"))
    assert read_gguf_header(copy).config == read_gguf_header(smol_gguf).config
