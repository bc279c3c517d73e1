"""Running a GGUF with llama.cpp (llama-cpp-python), shared by the export's verification and by
`sample_model` on an exported file (the sample package sits above export and imports this).

`load_llama` opens a file on the CPU (n_gpu_layers=0: the wheel the `export` extra builds has no
CUDA). `continue_tokens` is the decoding loop: evaluate the prompt's token ids as given (no
re-tokenisation, no template: the caller renders the prompt as training did), then one token at a
time, each chosen by `choose` from the step's logits (greedy by default) and handed with them to
`on_step`, until a stop id or `max_new_tokens`. `next_logits` reads the last position's logits,
with or without `logits_all` (sampling keeps only those: n_ctx × vocabulary floats are not needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ExportError

INSTALL_HINT = ("install the exporter with `pip install 'finetune-mcp[export]'` (llama-cpp-python builds llama.cpp "
                "from source: a C++ compiler and cmake are needed, about 10-20 min on 2 cores, once; pip caches "
                "the wheel)")


def llama_cpp_missing() -> str | None:
    """Why llama-cpp-python cannot be used here (with the install hint), or None; no import happens."""
    from importlib.util import find_spec

    if find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed; {INSTALL_HINT}"
    return None


def load_llama(gguf_file: Path | str, n_ctx: int, threads: int | None = None, *, logits_all: bool = True) -> Any:
    """`gguf_file` opened by llama.cpp on the CPU; `logits_all` keeps every position's logits in
    `llm.scores` (n_ctx × vocabulary floats: the verification's teacher forcing needs them)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise ExportError(f"llama-cpp-python cannot be imported ({exc}); {INSTALL_HINT}") from None
    return Llama(model_path=str(gguf_file), n_ctx=n_ctx, n_batch=min(n_ctx, 2048), n_ubatch=min(n_ctx, 512),
                 logits_all=logits_all, n_gpu_layers=0, n_threads=threads or os.cpu_count() or 1, seed=0,
                 verbose=False)


def next_logits(llm: Any) -> Any:
    """The logits [vocabulary] for the token after the last evaluated one (a float32 numpy copy), read
    from llama.cpp's context (the last position of the last batch; logits_all or not)."""
    import llama_cpp
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float32, copy=True)


def greedy_choice(logits: Any) -> int:
    import numpy as np

    return int(np.argmax(logits))


def continue_tokens(llm: Any, prompt: Sequence[int], max_new_tokens: int, stop_ids: set[int], *,
                    choose: Callable[[Any], int] = greedy_choice,
                    on_step: Callable[[Any, int], None] | None = None) -> list[int]:
    """The tokens generated after `prompt` (ids), the stop id included when one ends it."""
    llm.reset()
    llm.eval(list(prompt))
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        logits = next_logits(llm)
        token = choose(logits)
        if on_step is not None:
            on_step(logits, token)
        tokens.append(token)
        if token in stop_ids:
            break
        llm.eval([token])
    return tokens
