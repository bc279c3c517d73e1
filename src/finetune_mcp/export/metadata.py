"""The training tokenizer's chat template, BOS/EOS and stop tokens: into the GGUF, and checked there.

llama.cpp's converter reads them from the folder it converts (tokenizer_config.json,
chat_template.jinja, config.json). The exporter gives it the tokenizer files saved with the
adapter, i.e. the tokenizer training used, and states `add_bos_token` / `add_eos_token` in
tokenizer_config.json as that tokenizer behaves (transformers 5 no longer writes them, and
llama.cpp's default for a BPE vocabulary would otherwise decide). After conversion the GGUF's
`tokenizer.chat_template`, EOS and BOS flag are read back and compared; a difference fails the
export before any prompt is run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.errors import ExportError


@dataclass
class TrainingTokenizer:
    tokenizer: Any  # transformers tokenizer, as saved with the adapter

    @classmethod
    def load(cls, folder: Path) -> TrainingTokenizer:
        from finetune_mcp.model.loading import load_tokenizer

        return cls(load_tokenizer(str(folder)))

    @property
    def chat_template(self) -> str | None:
        template = self.tokenizer.chat_template
        return template if isinstance(template, str) else None

    @property
    def bos_token(self) -> str | None:
        return self.tokenizer.bos_token

    @property
    def add_bos(self) -> bool:
        """Whether tokenising with special tokens puts the BOS first (what training's ids had)."""
        bos = self.tokenizer.bos_token_id
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bos is not None and bool(ids) and ids[0] == bos

    @property
    def add_eos(self) -> bool:
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return eos is not None and bool(ids) and ids[-1] == eos

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def write_bos_eos_flags(self, folder: Path) -> None:
        """State add_bos_token / add_eos_token in folder/tokenizer_config.json (the converter reads them)."""
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        config.update(add_bos_token=self.add_bos, add_eos_token=self.add_eos)
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    def stop_tokens(self, checkpoint: Path) -> list[str]:
        """EOS and the generation config's eos_token_id(s), as text (Ollama's `stop` takes strings)."""
        ids = [self.tokenizer.eos_token_id]
        path = checkpoint / "generation_config.json"
        if path.is_file():
            configured = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            ids += configured if isinstance(configured, list) else [configured]
        texts = [self.tokenizer.convert_ids_to_tokens(i) for i in ids if isinstance(i, int)]
        return [t for t in dict.fromkeys(texts) if t]


def check_gguf_metadata(gguf_file: Path, tokenizer: TrainingTokenizer) -> dict[str, Any]:
    """Read the GGUF's tokenizer metadata back; an ExportError when it is not the training tokenizer's."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_file)).fields

    def value(key: str) -> Any:
        return fields[key].contents() if key in fields else None

    found = {
        "pre_tokenizer": value("tokenizer.ggml.pre"),
        "chat_template_chars": len(value("tokenizer.chat_template") or ""),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "eos_token": tokenizer.tokenizer.eos_token,
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "add_bos_token": value("tokenizer.ggml.add_bos_token"),
        "add_eos_token": value("tokenizer.ggml.add_eos_token"),
        "vocab_size": len(value("tokenizer.ggml.tokens") or []),
    }
    wrong = []
    if value("tokenizer.chat_template") != tokenizer.chat_template:
        wrong.append("tokenizer.chat_template is not the training tokenizer's chat template")
    if found["eos_token_id"] != tokenizer.tokenizer.eos_token_id:
        wrong.append(f"EOS id {found['eos_token_id']} ≠ the training tokenizer's {tokenizer.tokenizer.eos_token_id}")
    if found["add_bos_token"] is not None and bool(found["add_bos_token"]) != tokenizer.add_bos:
        wrong.append(f"add_bos_token {found['add_bos_token']} ≠ the training tokenizer's {tokenizer.add_bos}")
    if tokenizer.add_bos and found["bos_token_id"] != tokenizer.tokenizer.bos_token_id:
        wrong.append(f"BOS id {found['bos_token_id']} ≠ the training tokenizer's {tokenizer.tokenizer.bos_token_id}")
    if wrong:
        raise ExportError(f"the converted GGUF's tokenizer metadata is not the training tokenizer's: {'; '.join(wrong)}; "
                          "the export was not kept (report this with the job's log)")
    return found
