"""Offline tokenizers carrying the real chat templates of the families people fine-tune.

The masking code decides which tokens carry loss by rendering the model's own chat template, so it
must be tested on the templates users really load (Qwen3's inserted think block, Mistral dropping
the system prompt, Gemma folding it into the user turn ...), not only on the tiny model's ChatML.
No tokenizer can be downloaded here, so each family gets a small byte-level BPE trained on the
built-in corpus (the same as `tiny_model`), with that family's markers as single added tokens,
its BOS/EOS/pad, whether it prepends BOS by itself, and its verbatim template from
`chat_templates/` (sources in `chat_templates/README.md`).

`write_template_model(family, path)` also writes the family's real `config.json` shape (no weights),
so the dry run (`preview_training`) can size the run as it would the real checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from finetune_mcp.testing.tiny_model import _corpus

TEMPLATES = resources.files("finetune_mcp.testing") / "chat_templates"


@dataclass(frozen=True)
class TemplateFamily:
    """One model family's chat conventions, as its Hub tokenizer has them."""

    name: str
    checkpoint: str  # the Hub model whose template and sizes these are
    template_file: str
    end_of_turn: str  # what closes an assistant reply: the token the model must learn to stop on
    eos: str
    bos: str | None = None
    pad: str | None = None
    adds_bos: bool = False  # tokenizer(text) prepends BOS itself (Llama, Gemma, Mistral, R1 distills)
    special: tuple[str, ...] = ()  # other markers, added as special tokens
    plain: tuple[str, ...] = ()  # added but not special (Qwen's <think>, </think>): kept by decode
    stops: tuple[str, ...] = ()  # what generation stops on (generation_config.json eos_token_id); default eos
    config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.json, shape fields only

    @property
    def template(self) -> str:
        return (TEMPLATES / self.template_file).read_text(encoding="utf-8")


_QWEN_PLAIN = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

FAMILIES: dict[str, TemplateFamily] = {f.name: f for f in (
    TemplateFamily(
        "qwen3", "Qwen/Qwen3-0.6B", "qwen3.jinja", end_of_turn="<|im_end|>", eos="<|im_end|>",
        pad="<|endoftext|>", special=("<|im_start|>",), plain=_QWEN_PLAIN, stops=("<|im_end|>", "<|endoftext|>"),
        config={"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 1024,
                "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                "intermediate_size": 3072, "vocab_size": 151936, "tie_word_embeddings": True,
                "max_position_embeddings": 40960, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "llama3_1", "meta-llama/Llama-3.1-8B-Instruct", "llama3_1.jinja", end_of_turn="<|eot_id|>",
        eos="<|eot_id|>", bos="<|begin_of_text|>", adds_bos=True,
        special=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"),
        stops=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        config={"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "llama3_2", "meta-llama/Llama-3.2-1B-Instruct", "llama3_2.jinja", end_of_turn="<|eot_id|>",
        eos="<|eot_id|>", bos="<|begin_of_text|>", adds_bos=True,
        special=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"),
        stops=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        config={"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
                "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "gemma3", "google/gemma-3-1b-it", "gemma3.jinja", end_of_turn="<end_of_turn>", eos="<eos>",
        bos="<bos>", pad="<pad>", adds_bos=True, special=("<start_of_turn>", "<end_of_turn>", "<start_of_image>"),
        stops=("<eos>", "<end_of_turn>"),
        config={"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "hidden_size": 1152,
                "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                "intermediate_size": 6912, "vocab_size": 262144, "tie_word_embeddings": True,
                "max_position_embeddings": 32768, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "gemma4", "google/gemma-4-E2B-it", "gemma4.jinja", end_of_turn="<turn|>", eos="<eos>", bos="<bos>",
        pad="<pad>", adds_bos=True,
        special=("<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>", '<|"|>', "<|tool>", "<tool|>",
                 "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>"),
        stops=("<eos>", "<turn|>"),
        # the text decoder of E2B as published in its config.json text_config (per-layer embeddings not counted)
        config={"model_type": "gemma4_text", "architectures": ["Gemma4ForCausalLM"], "hidden_size": 1536,
                "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
                "intermediate_size": 6144, "vocab_size": 262144, "tie_word_embeddings": True,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "mistral_v0_3", "mistralai/Mistral-7B-Instruct-v0.3", "mistral_v0_3.jinja", end_of_turn="</s>",
        eos="</s>", bos="<s>", adds_bos=True,
        special=("<unk>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                 "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
        config={"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 4096,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "intermediate_size": 14336, "vocab_size": 32768, "tie_word_embeddings": False,
                "max_position_embeddings": 32768, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "phi4", "microsoft/phi-4", "phi4.jinja", end_of_turn="<|im_end|>", eos="<|im_end|>",
        bos="<|endoftext|>", pad="<|dummy_85|>", special=("<|im_start|>", "<|im_sep|>"),
        stops=("<|im_end|>", "<|endoftext|>"),
        config={"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 5120,
                "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10,
                "intermediate_size": 17920, "vocab_size": 100352, "tie_word_embeddings": False,
                "max_position_embeddings": 16384, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "phi4_mini", "microsoft/Phi-4-mini-instruct", "phi4_mini.jinja", end_of_turn="<|end|>",
        eos="<|endoftext|>", bos="<|endoftext|>", pad="<|endoftext|>",
        special=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>", "<|tool_call|>",
                 "<|/tool_call|>"),
        stops=("<|end|>", "<|endoftext|>"),
        config={"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 3072,
                "num_hidden_layers": 32, "num_attention_heads": 24, "num_key_value_heads": 8,
                "intermediate_size": 8192, "vocab_size": 200064, "tie_word_embeddings": True,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"},
    ),
    TemplateFamily(
        "deepseek_r1_distill", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek_r1_distill.jinja",
        end_of_turn="<｜end▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>",
        pad="<｜end▁of▁sentence｜>", adds_bos=True,
        special=("<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                 "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
                 "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>"),
        plain=("<think>", "</think>"),
        config={"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536,
                "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": False,
                "max_position_embeddings": 131072, "torch_dtype": "bfloat16"},
    ),
)}


def family(name: str) -> TemplateFamily:
    """The family called `name`; a KeyError lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown template family {name!r}; known: {', '.join(FAMILIES)}") from None


def build_template_tokenizer(name: str, path: str | Path | None = None, vocab_size: int = 512):
    """A `PreTrainedTokenizerFast` with family `name`'s special tokens and verbatim chat template;
    saved to `path` when given. Each marker is one token, as in the real tokenizer, so a label
    mask that is off by one marker shows up as a wrong token, not as a wrong byte."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    fam = family(name)
    markers = [t for t in (fam.bos, fam.eos, fam.pad, fam.end_of_turn, *fam.special) if t is not None]
    specials = list(dict.fromkeys(markers))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials), special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in fam.plain])
    if fam.adds_bos and fam.bos is not None:
        bos_id = tok.token_to_id(fam.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam.bos} $A", pair=f"{fam.bos} $A {fam.bos} $B", special_tokens=[(fam.bos, bos_id)],
        )
    others = [t for t in specials if t not in (fam.bos, fam.eos, fam.pad)]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=fam.bos, eos_token=fam.eos, pad_token=fam.pad or fam.eos,
        unk_token=None, additional_special_tokens=others, model_max_length=131072,
    )
    fast.chat_template = fam.template
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def write_template_model(name: str, path: str | Path) -> Path:
    """A model folder without weights: family `name`'s tokenizer, its checkpoint's config.json shape
    (hidden size, layers, heads, vocabulary ...) and a generation_config.json with its stop tokens.
    Enough for everything that reads a config and a tokenizer (the dry run, the memory estimate);
    loading weights from it fails, as it should."""
    fam = family(name)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_template_tokenizer(name, path)
    config = {**fam.config, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
              "pad_token_id": tokenizer.pad_token_id, "_name_or_path": fam.checkpoint}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    stops = [tokenizer.convert_tokens_to_ids(t) for t in fam.stops] or [tokenizer.eos_token_id]
    generation = {"eos_token_id": stops, "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return path
