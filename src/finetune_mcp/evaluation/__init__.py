"""Evaluation: how good a model is, and whether fine-tuning helped or cost something.

Owns: `job` (the `evaluate` kind: its spec, start check, placement and worker body; what a plain
evaluation measures is the method's `evaluate` hook, its metric names the method descriptor's, so
`config.methods` is the one metric registry), `suites` (base vs tuned on held-out rows and on the
forgetting check's `general_set`), `intervals` (Wilson and paired bootstrap intervals).
Its models are loaded by `model.loading` and answer through `model.generate`, as a sample job's.
"""
