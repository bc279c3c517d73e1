"""Training methods and what runs inside a training worker.

Owns: `workflow` (`run_training`, the `train` kind's worker body, and `METHODS`, the task table),
`loop` (what every method shares: `TrainingRun`, `build_trainer`, `fit_and_save`), `sft` (the
SFT method) and `rerank/` (the Qwen3-Reranker method: prompt, trainer, workflow, metrics),
`sft_trainer` (the trainer whose loss goes through the kernels), `model` (backend choice and
model loading: Unsloth, transformers + PEFT), `callbacks` (events, TensorBoard, throughput),
`entropy` (entropy bookkeeping for logs and the card), `evaluation` (the `evaluate` kind's body),
`inference` (reload an adapter and generate) and `preflight` (a training spec's start checks).
A new training method is a module or folder here plus one line in `workflow.METHODS`.
"""
