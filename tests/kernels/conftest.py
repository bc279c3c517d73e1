"""Kernel tests: on a machine without CUDA, the fused kernel runs under Triton's interpreter.

`@triton.jit` picks compiled or interpreted when the decorator runs (at the kernel module's import),
reading TRITON_INTERPRET then; so it is set here, before any test module imports the kernel. With
CUDA present (the device machine) the kernel compiles as usual.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def kernel():
    """The entropy_ce module, interpreted on a CPU machine even if something imported it compiled before."""
    mod = importlib.import_module("finetune_mcp.kernels.triton_entropy_ce")
    if not torch.cuda.is_available() and not mod._INTERPRETED:
        os.environ["TRITON_INTERPRET"] = "1"
        mod = importlib.reload(mod)
    return mod


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
