"""The model card's "Use with llama.cpp / Ollama" section, from the run's verified GGUF exports.

`gguf_section(exports, repo_id)` is pure (the entries of export/exports.json in, markdown out);
card.py shows it when the run has at least one export. With a repo id the commands name the files
as uploaded (deploy_to_hf(include_gguf=True) puts them at the repo's root); without, the local paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def gguf_section(exports: list[dict[str, Any]], repo_id: str | None) -> str | None:
    """Markdown: a table of the files and their verification figures, then how to run them."""
    if not exports:
        return None
    rows = ["| File | Size | Greedy continuations identical | Token agreement | Top-1 agreement | max \\|Δ logit\\| "
            "| Perplexity (transformers → GGUF) |", "|---|---|---|---|---|---|---|"]
    for entry in exports:
        v = entry.get("verification") or {}
        rows.append(f"| `{Path(entry['gguf']).name}` | {entry['size_bytes'] / 1e6:.1f} MB | "
                    f"{v.get('greedy_identical')}/{v.get('prompts')} | {_num(v.get('greedy_token_agreement'))} | "
                    f"{_num(v.get('top1_agreement'))} | {_num(v.get('max_abs_logit_diff'))} | "
                    f"{_num(v.get('perplexity_transformers'))} → {_num(v.get('perplexity_gguf'))} |")
    first = exports[0]
    gguf, modelfile = Path(first["gguf"]), Path(first["modelfile"])
    name = gguf.stem.lower()
    if repo_id:
        fetch = (f"hf download {repo_id} {gguf.name} {modelfile.name} --local-dir {name}\n"
                 f"cd {name} && ollama create {name} -f {modelfile.name} && ollama run {name}")
        llama = f"llama-server -hf {repo_id}:{first['quantization'].upper()} --jinja"
        studio = f"lms import {name}/{gguf.name}"
        where = "uploaded beside the adapter"
    else:
        fetch = first["commands"]["ollama"].replace(" && ", "\n")
        llama = first["commands"]["llama_cli"]
        studio = first["commands"]["lm_studio"]
        where = f"in `{gguf.parent}`"
    intro = (f"GGUF files of this fine-tune ({where}): the adapter merged into the base model, converted with "
             "llama.cpp's `convert_hf_to_gguf` and quantised with llama.cpp's quantiser. The chat template, "
             "BOS/EOS and stop tokens are those of the tokenizer used in training. Each file was loaded with "
             f"llama.cpp and compared with the merged model in 🤗 Transformers on {first['verification'].get('prompts')} "
             "validation rows (greedy continuations, teacher-forced next-token agreement and perplexity on the "
             "trained tokens):")
    return "\n".join([intro, "", *rows, "", "Ollama (the Modelfile sets the template, stop tokens and system prompt):",
                      "", "```bash", fetch, "```", "", "llama.cpp (uses the chat template inside the GGUF):", "",
                      "```bash", llama, "```", "", "LM Studio:", "", "```bash", studio, "```"])


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)
