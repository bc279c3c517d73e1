"""Evaluation: how good a model is, and whether fine-tuning helped or cost something.

Owns: `job` (the `evaluate` kind: its spec, start check, placement and worker body), `metrics` (the
metric registry: names, tags, direction), `scoring` (teacher-forced loss, perplexity, entropy and
token accuracy over the tokens training puts loss on, per row or pooled), `generate` (the project's
one batched generation function, with per-token entropy; sample jobs and experiments call it),
`settings` (`GenerationSettings`, plain data), `suites` (base vs tuned on held-out rows and on the
forgetting check's `general_set`), `intervals` (Wilson and paired bootstrap intervals).
"""
