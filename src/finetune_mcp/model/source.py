"""Which kind of model source a `model` value names: a GGUF file (directly, or as the one `.gguf` in a
folder without config.json), or anything else (a Hugging Face folder or Hub id, handled as before).

Light (no torch, no file content read beyond a 4-byte magic): the server's start checks and the
workers both ask here first.
"""

from __future__ import annotations

from pathlib import Path

from finetune_mcp.errors import ModelError

GGUF_MAGIC = b"GGUF"


def resolve_gguf(value: str) -> Path | None:
    """The GGUF file `value` names (absolute), None when it names a Hugging Face folder or a Hub id, or a
    ModelError for a path that is neither (a missing .gguf, a folder with several GGUFs, a non-GGUF file)."""
    path = Path(value).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:5])
            raise ModelError(f"{path} holds {len(found)} GGUF files ({names}); name the one to use, e.g. "
                             f"model='{found[0]}'")
        return found[0].resolve() if found else None
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic == GGUF_MAGIC:
            return path.resolve()
        if path.suffix.lower() == ".gguf":
            raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF header); give a .gguf "
                             "file as llama.cpp / Ollama / LM Studio use it")
        return None
    if path.suffix.lower() == ".gguf":
        raise ModelError(f"{path}: no such GGUF file; check the path (a .gguf file or a folder holding one)")
    return None
