"""Models: how one is loaded, how it generates, and where it comes from.

Loading (`plan`, `loading`): `plan.plan_load` is the one decision of backend (Unsloth or transformers),
dtype, device and 4-bit, for every purpose (train, inference, reference, merge), made from the fields a
job copies from the run it reads (`plan.LOAD_FIELDS`); `loading.load_model` is the one place that
loads a model to run: training's base, sample, evaluate, the enhance student and local teacher, the
export's reference, the merge, the demo. So a sample job and an evaluate job of one run load it alike.

Generating (`generate`, `generation_settings`): `generate.generate`, the one batched generation with
per-token entropy (sample, evaluation suites, experiments, GRPO's held-out rewards, the enhance student
and a local teacher), and its plain-data settings (`GenerationSettings`, `PlainText`: no torch, so specs validate in the server).

Sources: a model is named by a Hugging Face Hub id, a local Hugging Face folder (config.json), a
`.gguf` file, or a folder that holds exactly one `.gguf` (`source.resolve_gguf`); `loading.load_model`
takes any of them. A GGUF file is read in the server
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
