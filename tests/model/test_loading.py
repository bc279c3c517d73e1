"""`load_model` on the offline tiny model: the plan's dtype whatever the checkpoint's, inference vs training
mode, an adapter that changes the logits (and its base behind `disable_adapter`), the tokenizer training saved
beside the adapter, the same model for a sample job and an evaluate job, and a GGUF file as the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_mcp.errors import ModelError
from finetune_mcp.model.loading import load_model
from finetune_mcp.model.plan import LoadRequest, plan_load

MARKED_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
PROMPT = [[5, 17, 42, 9, 101, 7]]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are not zero (PEFT's init_lora_weights=False), so it
    changes the model's output, saved with a tokenizer whose chat template differs from the base's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, lora).save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = MARKED_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return folder


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROMPT)).logits


def test_the_plan_decides_the_dtype_whatever_the_checkpoint_holds(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16 = tmp_path / "bf16"  # a checkpoint saved in bf16 still loads as the plan says (fp32 on the CPU)
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).to(torch.bfloat16).save_pretrained(str(bf16))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(bf16))
    loaded = load_model(str(bf16), plan_load(LoadRequest()))
    assert (loaded.backend, loaded.device, next(loaded.model.parameters()).dtype) == ("hf", "cpu", torch.float32)
    assert not loaded.model.training and loaded.tokenizer.pad_token is not None


def test_an_adapter_changes_the_logits_and_brings_its_own_tokenizer(tiny_model_dir: Path, adapter_dir: Path) -> None:
    plan = plan_load(LoadRequest())
    base = load_model(str(tiny_model_dir), plan)
    tuned = load_model(str(tiny_model_dir), plan, adapters={"default": str(adapter_dir)}, tokenizer=str(adapter_dir))
    assert not torch.allclose(logits(base.model), logits(tuned.model), atol=1e-4)
    with tuned.model.disable_adapter():
        assert torch.allclose(logits(base.model), logits(tuned.model), atol=1e-5)
    assert tuned.tokenizer.chat_template == MARKED_TEMPLATE != base.tokenizer.chat_template
    # a folder without a saved tokenizer leaves the model's
    assert load_model(str(tiny_model_dir), plan, tokenizer=str(adapter_dir.parent)).tokenizer.chat_template == \
        base.tokenizer.chat_template


def test_a_sample_job_and_an_evaluate_job_load_the_same_model(tiny_model_dir: Path, adapter_dir: Path) -> None:
    from finetune_mcp.evaluation.job import EvaluationSpec, _load
    from finetune_mcp.sample.loading import group_models, load_group
    from finetune_mcp.sample.spec import build_sample_spec

    model, adapter = str(tiny_model_dir), str(adapter_dir)
    sample = build_sample_spec({"model": model, "prompts": [{"messages": [{"role": "user", "content": "hi"}]}],
                                "models": [{"label": "tuned", "model": model, "adapter": adapter, "weights": "adapter"},
                                           {"label": "base", "model": model, "weights": "base"}]})
    evaluate = EvaluationSpec(model=model, adapter=adapter, dataset="unused.jsonl", metrics=["loss"])
    [group] = group_models(sample.models)
    loaded = load_group(group, sample, plan_load(sample))
    evaluated, tokenizer, device = _load(evaluate)
    assert (loaded.backend, loaded.device) == ("hf", device)
    with loaded.active(sample.models[0]) as tuned:
        assert torch.equal(logits(tuned), logits(evaluated))
    with loaded.active(sample.models[1]) as base:
        assert not torch.allclose(logits(base), logits(evaluated), atol=1e-4)
    assert loaded.tokenizers["tuned"].chat_template == tokenizer.chat_template == MARKED_TEMPLATE


def test_a_folder_that_is_not_a_model_is_refused_before_loading(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match=r"has no config\.json"):
        load_model(str(tmp_path), plan_load(LoadRequest()))


@pytest.mark.slow
def test_a_gguf_file_loads_from_its_imported_folder(smol_gguf: Path, tmp_path: Path) -> None:
    from finetune_mcp.model.cache import SOURCE_RECORD
    from finetune_mcp.model.generate import generate
    from finetune_mcp.model.generation_settings import GenerationSettings
    from finetune_mcp.testing.real_model import default_cache_home, share_import

    folder = share_import(default_cache_home(), tmp_path)  # the session's conversion, not a second one
    loaded = load_model(str(smol_gguf), plan_load(LoadRequest()), home=tmp_path)
    assert Path(loaded.model.name_or_path).resolve() == folder.resolve()
    assert json.loads((folder / SOURCE_RECORD).read_text())["quantization"] == "Q4_1"
    assert next(loaded.model.parameters()).dtype == torch.float32  # the plan's, not the import's bf16
    [answer] = generate(loaded.model, loaded.tokenizer, ["What is the capital of France?"],
                        GenerationSettings(max_new_tokens=8))
    assert "Paris" in answer.text
