"""Try a model: generations from a tuned model and, side by side, its base (`sample_model`).

Owns: `spec` (the `sample` kind's spec: which models, which prompts, the generation settings),
`prompts` (inline prompts and held-out dataset rows, read exactly as training read them),
`start` (the start checks and placement, in the server), `generate` (the reusable generation
function with per-token entropy: `generate(model, tokenizer, prompts, settings)`), `loading`
(an adapter on its base, a merged model, the base alone; Unsloth's fast inference on CUDA),
`marking` (high-entropy spans and reference matches), `results` (result.json, the compact view
get_job shows, and finding a run's sample job) and `workflow` (the worker body).
"""
