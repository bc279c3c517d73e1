"""The decoder's forward and backward replayed from CUDA graphs: a training step that is not launch-bound.

Chosen by `train.step_plan` for launch-bound steps on CUDA (off with FINETUNE_MCP_CUDA_GRAPHS=0). On
an H100 (2026-12-06, SmolLM2-135M, batch 16 × ~45 tokens, `benchmarks/real_model_step.py`) it took a
step from 0.243 s (eager) to 0.083 s, and a 5-arm × 8-seed study ran on it. Two ways a capture
fails, both seen there: another thread's unsafe CUDA call in "global" capture mode (hence
`_thread_local_capture`), and an autograd graph of an earlier backward still alive, whose gradient
accumulators sit on another stream (cudaErrorStreamCaptureImplicit: in training nothing holds one —
the Trainer keeps detached losses — but a caller holding an earlier output does). A failed capture
leaves the decoder eager for the rest of the run (`GraphedDecoder.failed`), as it was before graphs.

Why: a LoRA step of a small model is bound by the host, not the GPU. SmolLM2-135M at batch 16 ×
~45 tokens is ~0.6 TFLOP (under a millisecond of an H100), yet eager transformers + PEFT took
0.5 s a step: 30 layers × ~70 kernels forward, twice that backward, each launched from Python
(Unsloth's own notes put that host time at 0.25-0.4 s per micro-batch). A CUDA graph records those
kernels once per batch shape and replays them with one launch, so the step costs what the GPU
needs.

What is captured: the decoder layers and the final norm of a Llama-shaped model (`model.embed_tokens`,
`model.rotary_emb`, `model.layers`, `model.norm`: Llama, Qwen2/3, Mistral, SmolLM2 ...), forward and
backward, through `torch.cuda.make_graphed_callables`, one graph pair per (batch, length) shape.
The embedding lookup and rotary tables run eagerly (a few kernels); the loss head stays the fused
entropy kernel, eager, so both arms of an A/B run the same loss code.

Attention runs causal-only (`attention_mask=None`, SDPA's `is_causal`, its flash kernel). That is
exact for right-padded batches, which is what the SFT collator builds: a real token never sees a
later pad, so every real position's output equals the masked computation; pad positions produce
outputs nobody reads (their labels are ignored, their upstream gradient is zero). `is_right_padded`
checks each batch on the host before it reaches the GPU, and a batch that is not right-padded
takes the eager, masked path.

Rules that keep the graphs valid: inputs are copied into static buffers (shapes fixed per graph),
nothing inside syncs with the host, the frozen embedding's output carries no gradient (LoRA never
trains it), dropout draws from the graph-safe CUDA generator. The backward graph hands out its
parameter gradients in static buffers; autograd would adopt such a buffer as `param.grad` when the
gradient is unset, and the next micro-batch's replay would then overwrite an accumulated gradient.
So before every forward the trainable parameters get gradients (views of one zeroed buffer) if they
have none: autograd then adds into them, and gradient accumulation stays exact.

One `GraphedDecoder` is kept per model (`for_model`): an experiment's runs share the base model and
re-initialise LoRA in place, so the graphs captured by its first run serve every later one. `EagerDecoder` is the same
computation without graphs: CPU runs use it, and the tests compare it with the model's own forward.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger("finetune_mcp.run")

MAX_SHAPES = 8  # graph pairs kept (each holds its activations); more shapes run eagerly


def unsupported_reason(causal_lm: Any) -> str | None:
    """Why this model's decoder cannot run as `EagerDecoder` / `GraphedDecoder` (None: it can)."""
    decoder = getattr(causal_lm, "model", None)
    for part in ("embed_tokens", "rotary_emb", "layers", "norm"):
        if not hasattr(decoder, part):
            return f"the decoder has no `{part}` (not a Llama-shaped model)"
    config = causal_lm.config
    if getattr(config, "_attn_implementation", "sdpa") != "sdpa":
        return f"attention implementation is {config._attn_implementation!r}, not sdpa"
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if types != {"full_attention"}:
        return f"layer types {sorted(types)} include non-causal or sliding-window attention"
    if getattr(decoder.embed_tokens.weight, "requires_grad", False):
        return "the embedding is trained (its gradient would cross the graph's input)"
    return None


def is_right_padded(attention_mask: torch.Tensor | None) -> bool:
    """True when every row is ones then zeros (or no mask): causal-only attention is then exact."""
    if attention_mask is None:
        return True
    mask = attention_mask.to(torch.int8)
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


class _LayerStack(torch.nn.Module):
    """The decoder layers and the final norm, as one module with tensor inputs only (what
    `make_graphed_callables` takes)."""

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.layers = decoder.layers
        self.norm = decoder.norm
        self.num_layers = decoder.config.num_hidden_layers

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[: self.num_layers]:
            hidden = layer(hidden, attention_mask=None, position_embeddings=(cos, sin), use_cache=False)
        return self.norm(hidden)


class EagerDecoder:
    """Last hidden states [B, T, d] of a right-padded batch, causal-only attention, no graphs."""

    def __init__(self, causal_lm: Any) -> None:
        self.decoder = causal_lm.model
        self.stack = _LayerStack(self.decoder)

    def inputs(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.decoder.embed_tokens(input_ids).detach()  # [B, T, d]; frozen: no gradient
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # [1, T]
        cos, sin = self.decoder.rotary_emb(hidden, position_ids=positions)  # [1, T, head_dim]: broadcast over rows
        return hidden, cos, sin

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.stack(*self.inputs(input_ids))


class GraphedDecoder(EagerDecoder):
    """`EagerDecoder` whose layer stack replays a captured CUDA graph pair per batch shape."""

    def __init__(self, causal_lm: Any, max_shapes: int = MAX_SHAPES) -> None:
        super().__init__(causal_lm)
        self.max_shapes = max_shapes
        self.graphs: dict[tuple[int, ...], Any] = {}
        self.pool = torch.cuda.graph_pool_handle()  # one memory pool shared by every shape's graphs
        self.eager_shapes: set[tuple[int, ...]] = set()
        self.failed: str | None = None  # why capturing failed (the decoder then runs eagerly for good)
        self.trainable = [p for p in self.stack.parameters() if p.requires_grad]
        first = self.trainable[0] if self.trainable else None
        self._grads = (torch.zeros(sum(p.numel() for p in self.trainable), dtype=first.dtype, device=first.device)
                       if first is not None else None)

    @classmethod
    def for_model(cls, causal_lm: Any) -> GraphedDecoder:
        """The model's decoder graphs, created once and kept on the model (see the module docstring)."""
        graphed = getattr(causal_lm, "_finetune_mcp_graphed_decoder", None)
        if graphed is None:
            graphed = cls(causal_lm)
            causal_lm._finetune_mcp_graphed_decoder = graphed
        return graphed

    def _ensure_grads(self) -> None:
        """Unset gradients become views of one zeroed buffer (see the module docstring)."""
        if not self.trainable or self.trainable[0].grad is not None:
            return
        self._grads.zero_()
        offset = 0
        for param in self.trainable:
            n = param.numel()
            if param.dtype == self._grads.dtype:
                param.grad = self._grads[offset: offset + n].view_as(param)
            else:
                param.grad = torch.zeros_like(param)
            offset += n

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        self._ensure_grads()
        args = self.inputs(input_ids)
        shape = tuple(input_ids.shape)
        graphed = self.graphs.get(shape)
        if graphed is None:
            if self.failed is not None:
                return self.stack(*args)
            if len(self.graphs) >= self.max_shapes:
                if shape not in self.eager_shapes:
                    self.eager_shapes.add(shape)
                    log.info("batch shape %s runs eagerly: %d graph shapes already captured", shape, self.max_shapes)
                return self.stack(*args)
            try:
                graphed = self._capture(shape, args)
            except RuntimeError as exc:  # a model whose layers cannot be captured trains eagerly, as before
                self.failed = f"{type(exc).__name__}: {exc}"
                log.warning("step plan: CUDA graph capture failed (%s); the decoder runs eagerly", self.failed)
                torch.cuda.synchronize()
                return self.stack(*args)
        return graphed(*args)

    def _capture(self, shape: tuple[int, ...], args: tuple[torch.Tensor, ...]) -> Any:
        import time

        started = time.perf_counter()
        samples = tuple(a.detach().clone() for a in args)
        # make_graphed_callables replaces the forward of the module it is given: each shape gets its own
        # wrapper (sharing the same layers and parameters), and `self.stack` stays eager.
        stack = _LayerStack(self.decoder)
        # Autocast (if the caller runs under it) must not cache casts across a capture.
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        with (torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False),
              _thread_local_capture()):
            graphed = torch.cuda.make_graphed_callables(stack, samples, num_warmup_iters=2, pool=self.pool)
        self.graphs[shape] = graphed
        log.info("captured the decoder's CUDA graphs for batch shape %s in %.2f s", shape, time.perf_counter() - started)
        return graphed


@contextlib.contextmanager
def _thread_local_capture() -> Iterator[None]:
    """Captures inside `make_graphed_callables` in "thread_local" mode (it offers no argument for it).

    Why: in the default "global" mode a CUDA call that is unsafe during capture, made by *any* thread
    of the process, invalidates the capture (cudaErrorStreamCaptureInvalidated). A training process
    has such threads: the DataLoader's pin-memory thread allocates pinned host memory while the
    decoder is being captured. "thread_local" forbids those calls only on the capturing thread, which
    is what the graph's correctness needs (the backward's kernels are launched by autograd's device
    thread into the capturing stream, and are captured either way).
    """
    graph = torch.cuda.graph
    original = graph.__init__

    def init(self, cuda_graph, pool=None, stream=None, capture_error_mode="thread_local", **kwargs):
        original(self, cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode, **kwargs)

    graph.__init__ = init
    try:
        yield
    finally:
        graph.__init__ = original
