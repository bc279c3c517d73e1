"""The quantization names the tool and CLI accept."""

from __future__ import annotations

import pytest

from finetune_mcp.errors import ConfigError
from finetune_mcp.export.quantization import QUANTIZATIONS, parse_quantization


def test_names_are_case_and_dash_insensitive() -> None:
    assert parse_quantization("Q4_K_M").name == "q4_k_m"
    assert parse_quantization(" q8-0 ").name == "q8_0"


def test_float_types_come_from_the_converter_and_the_rest_from_the_quantiser() -> None:
    assert {q.name for q in QUANTIZATIONS.values() if q.is_float} == {"f16", "bf16"}
    assert all(q.ftype.startswith("LLAMA_FTYPE_MOSTLY_") for q in QUANTIZATIONS.values())


def test_every_file_type_exists_in_llama_cpp() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for quantization in QUANTIZATIONS.values():
        assert isinstance(getattr(llama_cpp, quantization.ftype), int), quantization.ftype


@pytest.mark.parametrize("bad", ["q4", "iq2_xs", "gguf", ""])
def test_an_unknown_name_lists_the_choices(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"q8_0.*q4_k_m") as err:
        parse_quantization(bad)
    assert err.value.field == "quantization" and repr(bad) in str(err.value)
