"""How much GPU memory a LoRA/QLoRA run needs, from the model's config.json — not from its name.

The parameter count comes from the architecture (hidden size, layers, MLP width, vocabulary,
attention heads and KV heads, tied embeddings, MoE experts); when the checkpoint's safetensors
index (or a local file's header) gives the exact size, that wins. The estimate then adds, in bytes:

    weights        params × 2 (16-bit), or linear layers at ~4.13 bits (NF4 + double-quantised
                   absmax, blocks of 64) with embeddings and head kept in 16-bit (QLoRA)
    lora           Σ over target modules and layers of r·(in + out), fp32 (PEFT keeps adapters fp32)
    gradients      one fp32 gradient per LoRA parameter
    optimizer      AdamW: two fp32 moments per LoRA parameter; 8-bit AdamW: two bytes
    activations    T = max_seq_length × batch tokens. With gradient checkpointing: one bf16 hidden
                   state per layer (L·T·h·2) plus one layer's recomputed working set and its
                   gradients (2 × T·(h + q + 2·kv + q + h + 3·I)·2); without: that working set per layer
    loss_head      the fused / chunked loss never holds T×V logits: the last hidden states (bf16),
                   their fp32 gradient, and one 256 MB logits block
    cuda_overhead  CUDA context + cuBLAS workspaces (~1 GB) + 10 % allocator fragmentation
and what the training method adds (`config.methods.MemoryExtras`, refined by its settings block:
`TrainingConfig.memory_extras`): sequences per row multiply the tokens of a step (a preference pair:
2); a reference copy adds the weights again (frozen, no LoRA); a reference forward (DPO/KTO: the base
with the adapter off) adds one no-grad layer working set and the loss head; generations add the KV
cache of the sequences generated before they train (GRPO: gradient_accumulation_steps micro-batches,
L · 2 · kv · 2 bytes per token, bf16).

The model is deliberately pessimistic: a run that "fits" by this estimate has headroom. Measured on
an H100 (Unsloth 2026.10.9, random weights, seq 2048 × batch 2, full-length examples), estimate
without cuda_overhead vs torch's peak reserved memory: Qwen3-0.6B 2.02 vs 1.67 GB (16-bit), 1.35 vs
0.99 GB (4-bit); Qwen3-4B 9.67 vs 8.86 GB (16-bit), 4.47 vs 3.61 GB (4-bit) — Unsloth offloads
checkpointed activations to the CPU; the transformers + PEFT path keeps them on the GPU.
Reading a Hub config never hangs: the HF cache is tried first, the network only when not offline
and under a deadline (FINETUNE_MCP_HUB_TIMEOUT_S, default 10 s).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_mcp.config.methods import MemoryExtras
from finetune_mcp.errors import ModelError

GB = 1024**3
NF4_BYTES_PER_PARAM = 4.127 / 8  # 4-bit weights + fp8 absmax per 64 + fp32 absmax per 256 blocks
CUDA_CONTEXT_BYTES = 1.0 * GB  # CUDA context + cuBLAS/cuDNN workspaces: typically 0.5-1 GB; the upper end
FRAGMENTATION = 0.10
LOSS_BLOCK_BYTES = 256 * 1024**2  # one [chunk, V] fp32 block: 2^26 elements (kernels.torch_entropy_ce.default_chunk)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "int8": 1, "uint8": 1}
QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text"})  # per-head RMSNorm on q and k


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from config.json (the text model's part of a multimodal config)."""

    model_type: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    experts: int = 0  # routed experts per MoE layer (0: dense)
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    prequantized: bool = False  # the checkpoint itself is 4/8-bit (e.g. "...-bnb-4bit")

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int, int]]:
        """LoRA-targetable linear modules: name → (in, out, copies per layer)."""
        h, q, kv = self.hidden, self.q_dim, self.kv_dim
        shapes = {"q_proj": (h, q, 1), "k_proj": (h, kv, 1), "v_proj": (h, kv, 1), "o_proj": (q, h, 1)}
        if self.experts:
            e, i = self.experts, self.expert_intermediate
            shapes |= {"gate_proj": (h, i, e), "up_proj": (h, i, e), "down_proj": (i, h, e)}
            if self.shared_intermediate:
                s = self.shared_intermediate
                shapes |= {"shared_gate_proj": (h, s, 1), "shared_up_proj": (h, s, 1), "shared_down_proj": (s, h, 1)}
        else:
            i = self.intermediate
            shapes |= {"gate_proj": (h, i, 1), "up_proj": (h, i, 1), "down_proj": (i, h, 1)}
        return shapes

    def parameter_count(self) -> dict[str, int]:
        """Embedding, head and transformer-body parameters, from the architecture alone."""
        per_layer = sum(i * o * n for i, o, n in self.linear_shapes().values())
        per_layer += 2 * self.hidden  # two RMSNorms
        if self.model_type in QK_NORM_TYPES:
            per_layer += 2 * self.head_dim
        if self.experts:
            per_layer += self.hidden * self.experts  # router
        embedding = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        body = per_layer * self.layers + self.hidden  # + final norm
        return {"embedding": embedding, "lm_head": head, "body": body, "total": embedding + head + body}


@dataclass
class ModelInfo:
    """A model's shape plus where it was read from and the exact size when a checkpoint gives one."""

    name: str
    shape: ModelShape
    source: str  # "local folder", "HF cache", "Hugging Face Hub"
    checkpoint_params: int | None = None
    checkpoint_params_source: str | None = None

    @property
    def params(self) -> int:
        if self.checkpoint_params and not self.shape.prequantized:
            return self.checkpoint_params
        return self.shape.parameter_count()["total"]


@dataclass
class MemoryEstimate:
    """Bytes a run needs on one GPU, by part; `total_gb` is what routing compares with free memory."""

    model: str
    params: int
    params_source: str
    bits: int
    lora_params: int
    tokens_per_step: int
    breakdown_gb: dict[str, float] = field(default_factory=dict)
    total_gb: float = 0.0
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_from_config(cfg: dict[str, Any]) -> ModelShape:
    """Read the fields that size a decoder from a transformers config.json dict."""
    text = cfg.get("text_config") if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict) else cfg
    get = text.get
    hidden = get("hidden_size") or get("n_embd") or get("d_model")
    layers = get("num_hidden_layers") or get("n_layer") or get("num_layers")
    vocab = get("vocab_size") or cfg.get("vocab_size")
    heads = get("num_attention_heads") or get("n_head")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, vocab, heads)):
        raise ModelError(
            "config.json lacks hidden_size / num_hidden_layers / vocab_size / num_attention_heads; "
            "this does not look like a decoder language model — pass a causal LM (e.g. unsloth/Qwen3-4B)"
        )
    intermediate = get("intermediate_size") or get("n_inner") or 4 * hidden
    experts = get("num_experts") or get("num_local_experts") or get("n_routed_experts") or 0
    quant = cfg.get("quantization_config") or {}
    return ModelShape(
        model_type=str(cfg.get("model_type", "unknown")),
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        vocab=vocab,
        heads=heads,
        kv_heads=get("num_key_value_heads") or heads,
        head_dim=get("head_dim") or hidden // heads,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        experts=experts if isinstance(experts, int) else 0,
        expert_intermediate=get("moe_intermediate_size") or intermediate,
        shared_intermediate=get("shared_expert_intermediate_size") or 0,
        prequantized=bool(quant.get("load_in_4bit") or quant.get("load_in_8bit") or quant.get("quant_method") in
                          ("bitsandbytes", "gptq", "awq")),
    )


def load_model_info(model: str) -> ModelInfo:
    """Find config.json (local folder, HF cache, then the Hub under a deadline) and read the shape; a
    GGUF file's shape comes from its header (`model.gguf_header`), its exact size from its tensors."""
    from finetune_mcp.model import read_gguf_header, resolve_gguf

    gguf = resolve_gguf(model)
    if gguf is not None:
        header = read_gguf_header(gguf)
        info = ModelInfo(model, shape_from_config(header.config), "GGUF header")
        info.checkpoint_params, info.checkpoint_params_source = header.parameters, "GGUF tensor sizes"
        return info
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelError(f"{path} has no config.json; pass a folder saved by save_pretrained or a Hub model id")
        info = ModelInfo(model, shape_from_config(_read_json(config)), "local folder")
        info.checkpoint_params, info.checkpoint_params_source = _local_checkpoint_params(path)
        return info
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelError(f"{model!r} is neither a model folder nor a Hub id like 'unsloth/Qwen3-4B'; check the path")
    config, source = _hub_json(model, "config.json", required=True)
    assert config is not None
    info = ModelInfo(model, shape_from_config(config), source)
    index, _ = _hub_json(model, "model.safetensors.index.json", required=False)
    if index is not None:
        total_size = (index.get("metadata") or {}).get("total_size")
        dtype = _config_dtype(config)
        if isinstance(total_size, int) and dtype:
            info.checkpoint_params = total_size // dtype
            info.checkpoint_params_source = "safetensors index total_size"
    return info


def estimate_memory(
    info: ModelInfo,
    *,
    load_in_4bit: bool = False,
    lora_r: int = 16,
    target_modules: list[str] | None = None,
    max_seq_length: int = 2048,
    batch_size: int = 2,
    gradient_checkpointing: bool = True,
    optim: str = "adamw_torch_fused",
    extras: MemoryExtras | None = None,
) -> MemoryEstimate:
    """The breakdown described in the module docstring, for one GPU and one optimiser step, with the
    training method's `extras` (None: an SFT-shaped run)."""
    extras = extras or MemoryExtras()
    shape = info.shape
    params = info.params
    counts = shape.parameter_count()
    assumptions: list[str] = []
    if info.checkpoint_params and shape.prequantized:
        assumptions.append("checkpoint is pre-quantized: parameter count taken from the architecture")
    embed_head = counts["embedding"] + counts["lm_head"]
    if load_in_4bit or shape.prequantized:
        weights = max(params - embed_head, 0) * NF4_BYTES_PER_PARAM + embed_head * 2
        bits = 4
    else:
        weights = params * 2
        bits = 16

    shapes = shape.linear_shapes()
    targets = target_modules or list(shapes)
    unknown = [t for t in targets if t not in shapes and t not in ("all-linear", "all_linear")]
    if unknown:
        assumptions.append(f"target modules {unknown} are not in this architecture's linear layers; not counted")
    if any(t in ("all-linear", "all_linear") for t in targets):
        targets = list(shapes)
    lora = sum(lora_r * (i + o) * n for name, (i, o, n) in shapes.items() if name in targets) * shape.layers
    eight_bit = "8bit" in optim or "8_bit" in optim
    optimizer = lora * (2 if eight_bit else 8)

    tokens = max_seq_length * batch_size * extras.sequences_per_row
    h, q, kv = shape.hidden, shape.q_dim, shape.kv_dim
    mlp_width = shape.expert_intermediate if shape.experts else shape.intermediate
    layer_working = tokens * (h + q + 2 * kv + q + h + 3 * mlp_width) * 2 * 2  # bf16 activations + their grads
    if gradient_checkpointing:
        activations = shape.layers * tokens * h * 2 + layer_working
    else:
        activations = shape.layers * layer_working
        assumptions.append("gradient checkpointing off: every layer's activations are kept")
    loss_head = tokens * h * (2 + 4) + LOSS_BLOCK_BYTES

    parts = {
        "weights": weights * (2 if extras.reference_copy else 1),
        "lora_adapters": lora * 4,
        "gradients": lora * 4,
        "optimizer": optimizer,
        "activations": activations,
        "loss_head": loss_head,
    }
    if extras.generations:
        parts["generation_kv_cache"] = shape.layers * tokens * extras.generations * 2 * kv * 2
        assumptions.append(f"generation: the KV cache of {extras.generations} micro-batch(es) of sequences "
                           "generated before they train")
    if extras.reference_forward:  # no-grad: one layer's activations at a time, no gradients
        parts["reference_forward"] = layer_working // 2 + loss_head
        assumptions.append("reference model: the base with the LoRA adapter switched off (no second copy of the "
                           "weights); its no-grad forward each step is counted")
    if extras.reference_copy:
        assumptions.append("reference model: a frozen second copy of the weights is counted")
    if extras != MemoryExtras():
        assumptions.append(f"the training method adds: {extras}")
    subtotal = sum(parts.values())
    parts["cuda_overhead"] = CUDA_CONTEXT_BYTES + FRAGMENTATION * subtotal
    assumptions.append(
        f"{tokens} tokens per step = max_seq_length {max_seq_length} × batch {batch_size} (padded worst case)"
    )
    return MemoryEstimate(
        model=info.name,
        params=params,
        params_source=info.checkpoint_params_source if info.params == info.checkpoint_params else "architecture",
        bits=bits,
        lora_params=lora,
        tokens_per_step=tokens,
        breakdown_gb={k: round(v / GB, 3) for k, v in parts.items()},
        total_gb=round(sum(parts.values()) / GB, 2),
        assumptions=assumptions,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; re-download the model or pass another folder") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object; re-download the model")
    return data


def _config_dtype(cfg: dict[str, Any]) -> int | None:
    name = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("torch_dtype")
    return DTYPE_BYTES.get(str(name)) if name else None


def _local_checkpoint_params(folder: Path) -> tuple[int | None, str | None]:
    """Exact parameter count from safetensors headers (8-byte length + JSON; no tensor is read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None, None
    total = 0
    for file in files:
        try:
            with file.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            return None, None
        for name, meta in header.items():
            if name != "__metadata__" and isinstance(meta, dict) and "shape" in meta:
                total += math.prod(meta["shape"])
    return total, "safetensors headers"


def _hub_json(repo_id: str, filename: str, *, required: bool) -> tuple[dict[str, Any] | None, str]:
    """A small JSON file from the HF cache, else ONE request to the Hub with a timeout (huggingface_hub's
    own download retries with backoff for minutes when the Hub is unreachable). Offline, or when the
    Hub cannot be reached, a required file gives a ModelError that says what to do."""
    from huggingface_hub import hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    if isinstance(cached, str):
        return _read_json(Path(cached)), "HF cache"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline:
        if required:
            raise ModelError(
                f"config.json of {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download "
                f"it once (`hf download {repo_id} config.json`), pass a local model folder, or unset HF_HUB_OFFLINE"
            )
        return None, "absent"
    import httpx

    # Endpoint and token read now, not when huggingface_hub was imported (tests and users change them).
    url = hf_hub_url(repo_id, filename, endpoint=os.environ.get("HF_ENDPOINT") or None)
    timeout = float(os.environ.get("FINETUNE_MCP_HUB_TIMEOUT_S", "10"))
    try:
        response = httpx.get(url, headers=build_hf_headers(token=os.environ.get("HF_TOKEN") or None),
                             timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__} while asking the Hub ({timeout:g} s timeout)"
    else:
        if response.status_code == 200:
            try:
                return response.json(), "Hugging Face Hub"
            except ValueError:
                problem = "the Hub answered with something that is not JSON"
        elif response.status_code == 404 and not required:
            return None, "absent"
        else:
            problem = f"HTTP {response.status_code} from the Hub" + (
                " (gated or private: set HF_TOKEN)" if response.status_code in (401, 403) else "")
    if not required:
        return None, "unavailable"
    raise ModelError(
        f"cannot read config.json of {repo_id!r} ({problem}); check the id and your network "
        "(and HF_TOKEN for gated models), or pass a local model folder"
    )
