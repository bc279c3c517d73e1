"""GGUF export: a finished run → a llama.cpp / Ollama / LM Studio file, verified against the trained model.

Owns the `export` job body (`workflow.run_export`): merge the adapter into its base (the merged
save deploy already makes), convert with llama.cpp's converter and quantise with its quantiser
(`convert`), name unknown BPE pre-tokenizers by their rules (`pretokenizer`), write the Ollama
Modelfile from the training tokenizer (`modelfile`), and compare the file with the merged model in
transformers on validation prompts (`verify`). `quantization` and `spec` are light (no torch) so the
server can check a request before any job starts.
"""
