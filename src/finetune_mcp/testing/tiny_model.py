"""A tiny Qwen3-architecture model and byte-level BPE tokenizer, built offline in seconds.

The tests, the demo and CI cannot download from the Hub, yet the real loading code must run. This
builds a folder that `AutoModelForCausalLM.from_pretrained` / Unsloth load exactly like a Hub
checkpoint: config.json, model.safetensors, tokenizer.json with a ChatML chat template.

The tokenizer is trained on a small built-in corpus (English words, digits, punctuation and the
synthetic tasks' vocabulary) so sequences stay short; every byte is in its alphabet, so any text
tokenizes.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# How text is split before BPE: GPT-2's byte-level regex (the default), or the Split regexes of the
# Qwen2/Qwen3 and Llama 3 tokenizer.json files (the GGUF export tests use them: llama.cpp must split alike).
PRE_TOKENIZERS = ("gpt2", "qwen2", "llama3")
# The Split regexes of Qwen2/Qwen3's and Llama 3's published tokenizer.json (tests/export checks that
# the exporter names them `qwen2` and `llama-bpe`).
_SPLIT_REGEXES = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

_CORPUS_WORDS = (
    "the a an is are was of to in on for with and or not what which who how why when where answer question "
    "user assistant system you are helpful reply respond give return say write repeat reverse uppercase lowercase "
    "sum plus minus times add subtract multiply number numbers digit word words letter letters color capital "
    "country city sky grass snow sun blood banana apple orange lemon cherry grape red green blue white yellow "
    "purple black brown pink gray yes no true false document query relevant instruction input output context "
    "database collection graph node edge arangodb aql python code function return value list first last count "
    "entropy model train training loss weight learning data set example examples test"
).split()


def _corpus() -> list[str]:
    lines = [" ".join(_CORPUS_WORDS[i : i + 12]) for i in range(0, len(_CORPUS_WORDS), 12)]
    lines += [f"{a} + {b} = {a + b}" for a in range(20) for b in range(20)]
    lines += ["".join(chr(c) for c in range(32, 127))]
    return lines * 4


def build_tokenizer(path: str | Path | None = None, vocab_size: int = 512, pre_tokenizer: str = "gpt2"):
    """Train a byte-level BPE tokenizer with ChatML special tokens; save it to `path` if given.

    `pre_tokenizer`: one of PRE_TOKENIZERS (see there)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if pre_tokenizer not in PRE_TOKENIZERS:
        raise ValueError(f"pre_tokenizer must be one of {PRE_TOKENIZERS}, not {pre_tokenizer!r}")
    tok = Tokenizer(models.BPE())
    if pre_tokenizer == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLIT_REGEXES[pre_tokenizer]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    fast.chat_template = CHATML_TEMPLATE
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def build_tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    model_vocab_size: int | None = None,
    initializer_range: float = 0.1,
    seed: int = 0,
    pre_tokenizer: str = "gpt2",
) -> Path:
    """Write a randomly initialised Qwen3 causal LM + tokenizer to `path` and return it.

    Idempotent: an existing complete folder is left as it is (the demo calls this every time).
    `initializer_range` is larger than the usual 0.02 so that the untrained model's predictions are
    not uniform and LoRA alone (the lm_head stays frozen) can make them confident within a minute
    of CPU training, which the demo's before/after comparison needs.
    `pre_tokenizer` picks the tokenizer's splitting rules (`build_tokenizer`).
    `model_vocab_size` pads the model's vocabulary beyond the tokenizer's (benchmarks use real
    vocabulary sizes such as 151,936 to measure the loss head at scale).
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists() and (path / "tokenizer.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path, vocab_size=vocab_size, pre_tokenizer=pre_tokenizer)
    config = Qwen3Config(
        vocab_size=max(model_vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path))
    return path
