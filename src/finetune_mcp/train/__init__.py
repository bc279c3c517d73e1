"""Training methods and what runs inside a training worker.

Owns: `workflow` (`run_training`, the `train` kind's worker body: it calls the `train` hook of the
config's method), `methods` (finds a method's implementation from its registry entry in
`config.methods`), `builder` (the trainer builder: the shared TrainingArguments base and always-on
sinks, plus a method's `TrainerParts`), `loop` (what every method shares after that: `TrainingRun`,
`fit_and_save`), one folder per method — `sft/` (workflow, the entropy-aware trainer, scoring,
hooks) and `rerank/` (the Qwen3-Reranker: prompt, trainer, workflow, metrics, hooks) —, `model`
(LoRA attached to the base `model.loading` loads: Unsloth's or PEFT's), `callbacks` (events,
TensorBoard, throughput; entropy where the trainer keeps it), `entropy` (entropy bookkeeping for
logs and the card), `tracking` (the trackers of `report_to`: their TrainingArguments and local
stores), `padding` and `preflight` (a training spec's start checks). The `evaluate` kind lives in
`evaluation/`.
A new training method is a folder here (`train/<method>/method.py` with the hooks) plus one
`TrainingMethod` entry in `config.methods.METHODS`.
"""
