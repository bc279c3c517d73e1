"""The `sft` method: supervised fine-tuning on chat/instruction data.

Owns: `workflow` (the worker body `train_sft` and `sft_parts`, the SFT config and trainer the
builder puts on its shared base; the reranker reuses them), `trainer` (`EnhancedUnslothTrainer`:
TRL's SFTTrainer whose loss goes through the fused entropy-weighted kernel) and `method` (the
hooks the registry entry in `config.methods` points at: train, evaluate, score held-out rows).
"""
