"""Evaluation: how good a model is, and whether fine-tuning helped or cost something.

Owns: `job` (the `evaluate` kind: its spec, start check, placement and worker body; what a plain
evaluation measures is the method's `evaluate` hook, its metric names the method descriptor's, so
`config.methods` is the one metric registry), `generate` (the project's one batched generation
function, with per-token entropy; sample jobs, experiments and suites call it),
`settings` (`GenerationSettings`, plain data), `suites` (base vs tuned on held-out rows and on the
forgetting check's `general_set`), `intervals` (Wilson and paired bootstrap intervals).
"""
