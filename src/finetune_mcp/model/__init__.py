"""Where a model comes from, and GGUF import.

A model is named by a Hugging Face Hub id, a local Hugging Face folder (config.json), a `.gguf` file,
or a folder that holds exactly one `.gguf` (`source.resolve_gguf`). A GGUF file is read in the server
from its header alone (`gguf_header`: the pure-Python `gguf` reader, no torch) so a bad file is refused
before any job exists, and converted once, where heavy work runs (a job's worker, the preview child),
into a Hugging Face folder cached under `$FINETUNE_MCP_HOME/models/gguf/<content hash>/`
(`imports.hf_folder`, `convert`). The folder appears only when complete (built in a temporary folder,
then renamed), and carries `gguf_source.json`: which file, its quantisation type, and whether its
weights were dequantised (any quantised type) or are exact (F32 / F16 / BF16).
"""

from finetune_mcp.model.gguf_header import GgufHeader, read_gguf_header
from finetune_mcp.model.source import resolve_gguf

__all__ = ["GgufHeader", "read_gguf_header", "resolve_gguf"]
