"""Reading training data: where it comes from, which format a row is in, how it becomes tokens.

Owns: `loader` (local files and folders, filters, subset, split: `load_examples`,
`validate_dataset`), `hub` (Hugging Face dataset ids), `formats/` (the format registry, the one
place a row's format is decided: one module per format — chat, alpaca, ShareGPT, prompt/completion,
text, ArangoDB Q&A, ranking — registered once) and `chat_tokens` (chat template rendering and the label mask: which tokens
carry loss). Used by training, evaluation, enhancement and the preview alike, so they all read a
dataset the same way.
"""
