"""Try a model: generations from a tuned model and, side by side, its base (`sample_model`).

Owns: `spec` (the `sample` kind's spec: which models, which prompts, the generation settings),
`prompts` (inline prompts and held-out dataset rows, read exactly as training read them),
`start` (the start checks and placement, in the server), `loading` (groups of models sharing a
base, loaded once by `model.loading`: adapters on their base, a merged model, the base alone; an
exported GGUF through llama.cpp), `gguf` (a GGUF's answers with `model.generate`'s contract),
`marking` (high-entropy spans and reference matches), `results` (result.json, the compact view
get_job shows, and finding a run's sample job) and `workflow` (the worker body).
"""
