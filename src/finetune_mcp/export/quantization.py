"""The GGUF file types an export can write, and how each one is made.

Standard library only: the MCP server validates `quantization=` with this before any job starts.

  f16, bf16   written by llama.cpp's converter straight from the merged checkpoint (no rounding
              beyond the 16-bit cast: bf16 → bf16 is exact, bf16 → f16 exact within f16's range)
  q8_0, q4_k_m, ...
              the converter writes a 16-bit file (bf16 for a bf16 checkpoint, else f16), then
              llama.cpp's quantiser (`llama_model_quantize`, the code behind `llama-quantize`)
              rounds it. The i-quants (iq2_xs, ...) are left out: they need an importance matrix.

K-quants work on blocks of 256 weights; llama.cpp keeps a tensor whose rows are not a multiple of
256 in a fallback type (q5_0/q8_0) and says so in the log, which the tiny test model shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune_mcp.errors import ConfigError


@dataclass(frozen=True)
class Quantization:
    name: str
    ftype: str  # the llama_cpp constant (LLAMA_FTYPE_...) of the finished file
    converter_outtype: str | None  # set when the converter writes the file itself
    bits_per_weight: float  # llama.cpp's figure for a 7B Llama, for the size hint
    description: str

    @property
    def is_float(self) -> bool:
        """f16/bf16: verified to the strict standard (identical greedy tokens)."""
        return self.converter_outtype is not None


QUANTIZATIONS: dict[str, Quantization] = {q.name: q for q in (
    Quantization("f16", "LLAMA_FTYPE_MOSTLY_F16", "f16", 16.0, "16-bit float, no quantisation loss"),
    Quantization("bf16", "LLAMA_FTYPE_MOSTLY_BF16", "bf16", 16.0, "bfloat16, exact for a bf16 checkpoint"),
    Quantization("q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", None, 8.5, "8-bit, near-lossless, half of f16"),
    Quantization("q6_k", "LLAMA_FTYPE_MOSTLY_Q6_K", None, 6.56, "6-bit k-quant"),
    Quantization("q5_k_m", "LLAMA_FTYPE_MOSTLY_Q5_K_M", None, 5.67, "5-bit k-quant, medium"),
    Quantization("q5_k_s", "LLAMA_FTYPE_MOSTLY_Q5_K_S", None, 5.52, "5-bit k-quant, small"),
    Quantization("q5_0", "LLAMA_FTYPE_MOSTLY_Q5_0", None, 5.5, "5-bit legacy"),
    Quantization("q4_k_m", "LLAMA_FTYPE_MOSTLY_Q4_K_M", None, 4.89, "4-bit k-quant, medium: the usual choice"),
    Quantization("q4_k_s", "LLAMA_FTYPE_MOSTLY_Q4_K_S", None, 4.58, "4-bit k-quant, small"),
    Quantization("q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0", None, 4.5, "4-bit legacy"),
    Quantization("q3_k_m", "LLAMA_FTYPE_MOSTLY_Q3_K_M", None, 3.91, "3-bit k-quant, medium"),
    Quantization("q2_k", "LLAMA_FTYPE_MOSTLY_Q2_K", None, 3.35, "2-bit k-quant: large quality loss"),
)}


def parse_quantization(name: str) -> Quantization:
    """The Quantization for a name such as "q4_k_m" or "Q4_K_M"; a ConfigError lists the choices."""
    key = name.strip().lower().replace("-", "_")
    if key not in QUANTIZATIONS:
        raise ConfigError(f"unknown GGUF quantization {name!r}; use one of {', '.join(QUANTIZATIONS)} "
                          "(q8_0 is near-lossless, q4_k_m the usual small one)", field="quantization")
    return QUANTIZATIONS[key]
