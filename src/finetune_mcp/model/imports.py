"""The worker side of a GGUF model source: the `model` value a loader can open.

`hf_folder(value, home)` returns `value` unchanged for a Hub id or a Hugging Face folder; for a GGUF file
(or a folder holding one) it returns the cached Hugging Face folder, converting the file first if no
completed conversion exists (`cache.build_once`). `import_spec_models(spec, home)` applies it to the
model fields of a job spec (training, experiment, evaluation: `model`; sampling: each entry of `models`
except exported GGUFs that llama.cpp runs), so everything after it (loading, merging, export, the
model card) sees an ordinary folder while `gguf_source` keeps the origin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from finetune_mcp.errors import FinetuneError, ModelError
from finetune_mcp.model.cache import build_once, cache_root, cached_folder, content_hash, read_record
from finetune_mcp.model.gguf_header import read_gguf_header
from finetune_mcp.model.source import resolve_gguf

log = logging.getLogger(__name__)

# Part of the cache key: a change to what the import writes (convert.py) gets a new folder instead of an
# old one being trusted. 2: byte-level tokenizers rebuilt as trained (llama.cpp-exportable); 3: head_dim
# from the file.
IMPORT_VERSION = 3


def hf_folder(value: str, home: Path) -> str:
    """A loadable model for `value`: itself, or the imported folder of the GGUF file it names."""
    gguf = resolve_gguf(value)
    if gguf is None:
        return value
    return str(import_gguf(gguf, home))


def import_gguf(gguf: Path, home: Path) -> Path:
    """The Hugging Face folder of `gguf`, converted now unless the cache holds it."""
    root = cache_root(home)
    digest = f"{content_hash(gguf, root)}-v{IMPORT_VERSION}"
    done = cached_folder(root, digest)
    if done is not None:
        return done
    header = read_gguf_header(gguf)
    log.info("importing %s (%s, %s): converting it once into %s", gguf, header.architecture, header.quantization,
             root / digest)
    from finetune_mcp.model.convert import convert_gguf

    try:
        return build_once(root, digest, lambda tmp: convert_gguf(header, tmp),
                          {**header.source_record(), "sha256_32": digest})
    except FinetuneError:
        raise
    except Exception as exc:  # reported as the job's error (the worker records FinetuneErrors of its spec)
        raise ModelError(f"importing {gguf} failed ({type(exc).__name__}: {str(exc)[:200]}); nothing was cached. "
                         "Check the file, or give the model's Hugging Face folder or Hub id") from exc


def source_of(folder: str) -> dict[str, Any] | None:
    """The source record of an imported folder (None for any other model)."""
    record = read_record(Path(folder))
    return record or None


def import_spec_models(spec: Any, home: Path) -> Any:
    """`spec` with every GGUF model field replaced by its imported folder (a copy; unchanged when none)."""
    update: dict[str, Any] = {}
    if isinstance(getattr(spec, "model", None), str) and not hasattr(spec, "models"):
        folder = hf_folder(spec.model, home)
        if folder != spec.model:
            update["model"] = folder
            if hasattr(spec, "gguf_source"):
                update["gguf_source"] = {**(spec.gguf_source or {}), **read_record(Path(folder)),
                                         "imported_folder": folder}
    entries = getattr(spec, "models", None)
    if isinstance(entries, list):
        models = []
        for entry in entries:
            if getattr(entry, "weights", None) == "gguf":  # an exported GGUF: llama.cpp runs it as it is
                models.append(entry)
                continue
            folder = hf_folder(entry.model, home)
            models.append(entry if folder == entry.model else entry.model_copy(update={"model": folder}))
        if models != entries:
            update["models"] = models
            update["model"] = models[0].model
    return spec.model_copy(update=update) if update else spec
