"""The GGUF import reads its file once: transformers' config, tokenizer and weight loaders share one parse."""

from __future__ import annotations

from pathlib import Path

import gguf

from finetune_mcp.model.convert import _parsed_once
from model.conftest import write_gguf


def test_within_the_import_a_file_is_parsed_once_and_outside_nothing_changes(tmp_path: Path):
    path = write_gguf(tmp_path / "m.gguf", "llama")
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _parsed_once():
        from gguf import GGUFReader, get_tensor_name_map  # as transformers looks them up, at call time

        first = GGUFReader(path)
        assert GGUFReader(str(path)) is first  # the same file by another spelling: the same parse
        assert first.fields["general.architecture"].contents() == "llama"
        name_map = get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is name_map
        assert get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 3) is not name_map
        assert name_map.get_name("model.layers.1.self_attn.q_proj") == "blk.1.attn_q"
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (original_reader, original_map)
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)
