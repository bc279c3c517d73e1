"""Offline stand-ins for the Hub: a tiny model + tokenizer and synthetic data with checkable answers.

Used by the tests, `finetune-mcp demo` and CI, none of which may download anything; `local_server`
starts the real server over stdio for the benchmarks (imported by name: it needs fastmcp's client).
"""

from finetune_mcp.testing.datagen import (
    FILE_FORMATS,
    answer_is_correct,
    heldout_examples,
    synthetic_examples,
    write_dataset,
)
from finetune_mcp.testing.tiny_model import build_tiny_model, build_tokenizer

__all__ = [
    "FILE_FORMATS",
    "answer_is_correct",
    "build_tiny_model",
    "build_tokenizer",
    "heldout_examples",
    "synthetic_examples",
    "write_dataset",
]
