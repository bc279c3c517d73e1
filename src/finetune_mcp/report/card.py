"""The model card: `render_model_card(run, compare_with)` (pure: run directories in, markdown out)
and `write_model_card`, which also draws the plots into `card/plots/` and writes `card/README.md`.

The card is `huggingface_hub.ModelCard.from_template` over `card_template.md`, so its YAML header
is what the Hub validates (`ModelCardData`). Facts come only from what the run wrote — spec.json,
result.json, events.jsonl, entropy/ — never from the process that renders, so a card made later,
elsewhere, or for a RunPod job says the same thing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from finetune_mcp.config.methods import method_of
from finetune_mcp.report import plots as P
from finetune_mcp.report.enhancement_section import student_teacher_section
from finetune_mcp.report.evaluation_section import evaluation_section
from finetune_mcp.report.experiment_section import experiment_section
from finetune_mcp.report.gguf_section import gguf_section
from finetune_mcp.report.method_section import method_section
from finetune_mcp.report.ranking_section import ranking_section
from finetune_mcp.report.samples_section import samples_section
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.facts import RunFacts
from finetune_mcp.runs.rundir import RunDirectory, write_atomic

TEMPLATE = Path(__file__).with_name("card_template.md")
PLOT_DIR = "plots/"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FORMULAS = {
    "linear": "w = clip(1 + s·h, min, max)",
    "relu": "w = clip(1 + s·max(0, h − t), min, max)",
    "exponential": "w = clip(exp(s·h), min, max)",
    "sigmoid": "w = clip(1 + sigmoid(s·(h − 0.5)), min, max)",
    "dft": "w = clip(p(y), min, max) (DFT: each token weighted by its own probability)",
    "entropy_gated": "w = clip(h^s, min, max) (EAFT: confident tokens down-weighted)",
    "top_entropy": "w = 1 for tokens with H ≥ the batch's q-quantile, else 0 (only the highest-entropy tokens train)",
}
_NOT_HYPERPARAMETERS = {"model", "dataset", "run_dir", "ignored_fields", "gguf_source"}


def render_model_card(run: RunDirectory, compare_with: RunDirectory | None = None, *,
                      repo_id: str | None = None, samples: dict[str, Any] | None = None,
                      with_gguf: bool = True) -> str:
    """The card's markdown (YAML header included) for a succeeded run; plots referenced under plots/.
    `samples`: a sample job's result.json for the base-vs-tuned table. `with_gguf`: describe the run's
    GGUF exports (a Hub card does only when they are uploaded too)."""
    facts = RunFacts.load(run)
    other = RunFacts.load(compare_with) if compare_with is not None else None
    return _render(facts, other, repo_id, samples, run.read_exports() if with_gguf else [])


def write_model_card(run: RunDirectory, compare_with: RunDirectory | None = None, *,
                     repo_id: str | None = None, samples: dict[str, Any] | None = None,
                     with_gguf: bool = True) -> tuple[Path, dict[str, Path]]:
    """Draw the plots into card/plots/, write card/README.md; returns the README path and the plots."""
    facts = RunFacts.load(run)
    other = RunFacts.load(compare_with) if compare_with is not None else None
    plots = P.make_plots(facts, run.card / PLOT_DIR.rstrip("/"), other)
    readme = run.card / "README.md"
    write_atomic(readme, _render(facts, other, repo_id, samples, run.read_exports() if with_gguf else []))
    return readme, plots


def _render(facts: RunFacts, other: RunFacts | None, repo_id: str | None, samples: dict[str, Any] | None = None,
            exports: list[dict[str, Any]] | None = None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    spec, result = facts.spec, facts.result
    base = str(spec.get("model", "unknown"))
    base_hub = base if _is_hub_id(base) else None
    dataset = str(spec.get("dataset", "unknown"))
    qlora = bool(spec.get("load_in_4bit"))
    backend = result.get("backend", "hf")
    method = method_of(spec)
    tags = ["qlora" if qlora else "lora", "peft", "trl", method.name, "finetune-mcp", method.pipeline_tag]
    if backend == "unsloth":
        tags.append("unsloth")
    if facts.entropy_on:
        tags.append("entropy-weighted")
    data = ModelCardData(
        base_model=base_hub,
        library_name="peft",
        pipeline_tag=method.pipeline_tag,
        license=base_model_license(base),
        datasets=[dataset] if _is_hub_id(dataset) else None,
        tags=tags,
        model_name=repo_id.split("/")[-1] if repo_id else None,
    )
    adapter_ref = repo_id or str(facts.root / "adapter")
    context = _context(facts, other, repo_id, base, adapter_ref)
    context["samples"] = samples_section(samples)  # None unless a sample job sampled this run and its base
    context["gguf"] = gguf_section(exports or [], repo_id)  # None without exports: the section is left out
    card = ModelCard.from_template(data, template_path=str(TEMPLATE), **context)
    return str(card)


def _context(facts: RunFacts, other: RunFacts | None, repo_id: str | None, base: str,
             adapter_ref: str) -> dict[str, Any]:
    spec, result = facts.spec, facts.result
    # the epochs actually run (max_steps can stop early or run past num_train_epochs)
    epochs = (result.get("metrics") or {}).get("train/epoch", spec.get("num_train_epochs"))
    if isinstance(epochs, float):
        epochs = round(epochs, 2)
    steps = result.get("global_step")
    n_train, n_eval = result.get("num_train_examples"), result.get("num_eval_examples")
    dataset = str(spec.get("dataset", "unknown"))
    method = (f"{'QLoRA (4-bit base)' if spec.get('load_in_4bit') else 'LoRA'}, r = {spec.get('lora_r')}, "
              f"α = {spec.get('lora_alpha')}, dropout {spec.get('lora_dropout')}, "
              f"rsLoRA {'on' if spec.get('use_rslora') else 'off'}, on "
              + ", ".join(f"`{m}`" for m in spec.get("target_modules", [])))
    weighting = "entropy-weighted cross-entropy" if facts.entropy_on else "plain cross-entropy"
    trained_by = method_of(spec).card_text or f"supervised fine-tuning (TRL `SFTTrainer`) with {weighting}"
    base_text = _gguf_ref(spec["gguf_source"]) if spec.get("gguf_source") else _ref(base)
    summary = (f"A {'QLoRA' if spec.get('load_in_4bit') else 'LoRA'} adapter for {base_text}, trained by "
               f"{trained_by} on {_fmt(n_train)} examples "
               f"({_fmt(epochs)} epoch(s), {_fmt(steps)} optimiser steps); {_fmt(n_eval)} examples held out "
               "for evaluation.")
    return {
        "title": (repo_id.split("/")[-1] if repo_id else f"{_short(base)} — LoRA fine-tune {facts.name}"),
        "summary": summary,
        "base_model_text": base_text,
        "method": method,
        "dataset_text": f"{_ref(dataset)} ({(result.get('dataset') or {}).get('format', spec.get('dataset_format'))}"
                        " format)",
        "entropy_short": _entropy_short(facts),
        "student_teacher": student_teacher_section(spec),  # None unless the data came from enhance_dataset
        "experiment": experiment_section(facts.root),  # None unless the run is one arm × seed of an experiment
        "method_section": method_section(result, spec),  # None unless the method has its own settings (DPO, GRPO, ...)
        "evaluation": evaluation_section(facts.root / "evaluation"),  # None unless evaluate_model(suite=...) ran
        "ranking": ranking_section(result, spec, other.result if other else None,  # None unless the run reports rankings
                                   tuple(f"`{f.name}` ({'weighted' if f.entropy_on else 'unweighted'})"
                                         for f in (facts, other or facts))),
        "backend_text": "Unsloth + TRL" if result.get("backend") == "unsloth" else "Transformers + PEFT + TRL",
        "device": f"`{result.get('device', 'unknown')}`",
        "wall_time": _duration(result.get("train_runtime_s")),
        "cost": f"${result['cost_usd']:.2f} (RunPod)" if result.get("cost_usd") is not None else None,
        "run_facts": _run_facts(facts),
        "hyperparameters": _hyperparameters(spec),
        "versions": sorted((result.get("versions") or {}).items()),
        "entropy_text": _entropy_text(facts),
        "entropy_summary": _entropy_summary(facts),
        "top_tokens_intro": _top_tokens_intro(facts),
        "top_tokens": _top_tokens(facts),
        "loss_text": _loss_text(facts),
        "comparison": _comparison(facts, other) if other is not None else None,
        "eval_text": _eval_text(facts),
        "eval_rows": _eval_rows(facts),
        "intended_use": (f"Research and experimentation with {_ref(base)} adapted to data like {_ref(dataset)}: "
                         "prompts in the chat format it was trained on (the tokenizer and its chat template are "
                         "saved with the adapter). Evaluate it on your own task before relying on it."),
        "limitations": _limitations(facts),
        "peft_snippet": _peft_snippet(base, adapter_ref),
        "unsloth_snippet": _unsloth_snippet(adapter_ref, spec),
        "plots": P.plot_names(facts, other),
        "plot_dir": PLOT_DIR,
        "job_id": facts.name,
    }


def base_model_license(model: str) -> str | None:
    """The base model's license from its card, when the card is on this machine (a local folder or
    the Hugging Face cache); never a network call."""
    from huggingface_hub import metadata_load, try_to_load_from_cache

    path = Path(model).expanduser()
    readme: Path | None = path / "README.md" if path.is_dir() else None
    if readme is None and _is_hub_id(model):
        cached = try_to_load_from_cache(model, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None or not readme.is_file():
        return None
    try:
        license_ = (metadata_load(readme) or {}).get("license")
    except ValueError:  # a README whose YAML header does not parse says nothing about the license
        return None
    return license_ if isinstance(license_, str) else None


def _is_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not Path(value).expanduser().exists()


def _gguf_ref(source: dict[str, Any]) -> str:
    """A base model imported from a GGUF file: which file, its quantisation, and what that means."""
    weights = ("its weights exact" if source.get("weights") == "exact" else
               "its weights dequantised, so they keep the quantisation error of the file")
    name = f" ({source['name']})" if source.get("name") else ""
    return (f"`{Path(str(source.get('file', 'unknown'))).name}`{name}, a {source.get('quantization', '?')} GGUF file "
            f"imported into a Hugging Face folder, {weights}")


def _ref(value: str) -> str:
    if _is_hub_id(value):
        return f"[`{value}`](https://huggingface.co/{value})"
    return f"`{_short(value)}` (a local {'folder' if Path(value).is_dir() else 'file'})"


def _short(value: str) -> str:
    return Path(value).name if not _is_hub_id(value) else value


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if value != int(value) or abs(value) >= 1e6 else str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "—"
    return str(value).replace("|", "\\|")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown wall time"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes} min" if hours else (f"{minutes} min {secs:.0f} s" if minutes else f"{secs:.1f} s")


def _run_facts(facts: RunFacts) -> list[tuple[str, str]]:
    result, perf = facts.result, facts.result.get("perf") or {}
    rows = [
        ("Job", f"`{facts.name}`"),
        ("Backend", "Unsloth" if result.get("backend") == "unsloth" else "Transformers + PEFT"),
        ("Device", f"`{result.get('device', 'unknown')}`"),
        ("Wall time", _duration(result.get("train_runtime_s"))),
        ("Optimiser steps", _fmt(result.get("global_step"))),
        ("Training / evaluation examples", f"{_fmt(result.get('num_train_examples'))} / "
                                           f"{_fmt(result.get('num_eval_examples'))}"),
        ("Seed", _fmt(facts.spec.get("seed"))),
        ("Step time", f"{perf['step_s']:.3g} s" if perf.get("step_s") else "—"),
        ("Peak GPU memory", f"{perf['peak_memory_mib']:.0f} MiB" if perf.get("peak_memory_mib") else "—"),
    ]
    if result.get("cost_usd") is not None:
        rows.append(("Cost (RunPod)", f"${result['cost_usd']:.2f}"))
    return rows


def _hyperparameters(spec: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in spec.items():
        if key in _NOT_HYPERPARAMETERS:
            continue
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", _fmt(v)) for k, v in value.items()]
        else:
            rows.append((key, _fmt(value)))
    return rows


def _entropy_short(facts: RunFacts) -> str:
    if not facts.entropy_on:
        return "off (plain cross-entropy; entropy still measured)"
    return f"on, `{facts.spec.get('entropy', {}).get('function', 'linear')}` weight function"


def _entropy_text(facts: RunFacts) -> str:
    threshold = facts.result.get("high_entropy_threshold")
    cfg = facts.spec.get("entropy") or {}
    if cfg.get("high_entropy_threshold") is not None:
        how = "set in the configuration"
    else:
        how = f"the {_fmt(cfg.get('high_entropy_percentile', 90.0))}th percentile of the first logging window"
    threshold_text = (f"A token counts as *high entropy* when H > {_fmt(threshold)} nats ({how}, then frozen "
                      "for the run).")
    if not facts.entropy_on:
        return ("**Off.** The loss is the plain mean cross-entropy over the trained tokens (w = 1). Token entropy "
                "H = −Σ p log p was still measured at every step, so this run can be compared with an "
                f"entropy-weighted one. {threshold_text}")
    fn = cfg.get("function", "linear")
    formula = _FORMULAS.get(fn, f"w = clip(`{fn}`(H, log V), min, max) (a user function)")
    params = (f"s = {_fmt(cfg.get('scale'))}, min = {_fmt(cfg.get('min_weight'))}, "
              f"max = {_fmt(cfg.get('max_weight'))}" + (f", t = {_fmt(cfg.get('relu_threshold'))}"
                                                         if fn == "relu" else ""))
    return (f"**On.** Each trained token's cross-entropy CE = −log p(y) is multiplied by a weight w = f(H) of the "
            "model's predictive entropy H = −Σ p log p over the vocabulary V, with h = H / log V in [0, 1]. "
            "The weight is detached (no gradient flows through it), and the loss is Σ w·CE / N over the N "
            "trained tokens (TRL's `num_items_in_batch` normalisation).\n\n"
            f"- Function: `{fn}`: {formula}\n- Parameters: {params}\n- {threshold_text}")


def _entropy_summary(facts: RunFacts) -> str:
    lines = []
    ev = facts.entropy_eval
    if ev and ev.get("mean_entropy") is not None:
        lines.append(f"**Final model, validation set:** mean token entropy **{ev['mean_entropy']:.4g} nats**"
                     f" over {_fmt(ev.get('num_examples'))} examples (high-entropy share "
                     f"{_fmt(ev.get('high_entropy_share'))}, loss {_fmt(ev.get('loss'))}).")
    else:
        lines.append("No validation set was held out, so the final model's validation entropy is not measured.")
    steps, values = facts.series(M.ENTROPY_MEAN)
    if values:
        lines.append(f"During training the mean token entropy went from {values[0]:.4g} nats (step {steps[0]}) "
                     f"to {values[-1]:.4g} nats (step {steps[-1]}).")
    for epoch in facts.entropy_epochs:
        if epoch.get("entropies"):
            lines.append(f"- Epoch {epoch['epoch']}: mean {_fmt(epoch.get('mean'))} nats, high-entropy share "
                         f"{_fmt(epoch.get('high_entropy_share'))} ({len(epoch['entropies'])} sampled of "
                         f"{_fmt(epoch.get('tokens_seen'))} tokens)")
    return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if len(lines) > 2 else "")


def _last_epoch_with_tokens(facts: RunFacts) -> dict[str, Any] | None:
    return next((e for e in reversed(facts.entropy_epochs) if e.get("top_tokens")), None)


def _top_tokens_intro(facts: RunFacts) -> str:
    epoch = _last_epoch_with_tokens(facts)
    if epoch is None:
        return "No token crossed the high-entropy threshold, so there is no list of high-entropy tokens."
    rule = epoch.get("top_tokens_rule") or (
        f"target tokens predicted with entropy above the threshold ({_fmt(epoch.get('threshold'))} nats)")
    return (f"The most frequent high-entropy tokens of epoch {epoch['epoch']}: {rule}. *Times above threshold* "
            "counts those predictions; *share* is the fraction of the token's occurrences that were among them.")


def _top_tokens(facts: RunFacts) -> list[list[str]]:
    epoch = _last_epoch_with_tokens(facts)
    if epoch is None:
        return []
    rows = []
    for rank, tok in enumerate(epoch["top_tokens"], 1):
        occurrences = tok.get("occurrences")
        share = f"{tok['count'] / occurrences:.0%}" if occurrences else "—"
        rows.append([str(rank), _md_token(tok["token"]), str(tok["id"]), str(tok["count"]), _fmt(occurrences),
                     share, f"{tok['mean_entropy']:.4g}"])
    return rows


def _md_token(token: str) -> str:
    """A token in a table cell: quoted so whitespace shows, with | and backticks made harmless."""
    quoted = json.dumps(token, ensure_ascii=False).replace("|", "\\|").replace("`", "ˋ")
    return f"`{quoted}`"


def _loss_text(facts: RunFacts) -> str:
    parts = [f"Final training loss {_fmt(facts.final(M.LOSS))}"]
    ce = facts.final(M.CE_LOSS)
    if ce is not None:
        parts.append(f"unweighted cross-entropy {_fmt(ce)}")
    weighted = facts.final(M.WEIGHTED_LOSS)
    if weighted is not None:
        parts.append(f"entropy-weighted cross-entropy {_fmt(weighted)}")
    text = ", ".join(parts) + " (last logging window, nats per token)."
    if facts.entropy_on:
        text += (" The optimised loss is the weighted one, so it sits above the plain cross-entropy by about the "
                 "mean weight; the unweighted CE is the number to compare with other runs.")
    else:
        text += " With weighting off the optimised loss is the cross-entropy; the weighted value shows what the " \
                "entropy-weighted loss would have been on the same tokens."
    return text


def _comparison(facts: RunFacts, other: RunFacts) -> dict[str, Any]:
    def label(f: RunFacts) -> str:
        return f"`{f.name}` ({'weighted' if f.entropy_on else 'unweighted'})"

    tags = [M.LOSS, M.CE_LOSS, M.WEIGHTED_LOSS, M.ENTROPY_MEAN, M.HIGH_ENTROPY_SHARE, M.WEIGHT_MEAN,
            M.EVAL_LOSS, M.EVAL_ENTROPY_MEAN, M.EVAL_HIGH_ENTROPY_SHARE]
    rows = []
    for tag in tags:
        a, b = facts.final(tag), other.final(tag)
        if a is None and b is None:
            continue
        diff = f"{a - b:+.4g}" if a is not None and b is not None else "—"
        rows.append([f"`{tag}`", _fmt(a), _fmt(b), diff])
    rows.append(["wall time", _duration(facts.result.get("train_runtime_s")),
                 _duration(other.result.get("train_runtime_s")), "—"])
    text = (f"This run ({label(facts)}) next to `{other.name}` ({'entropy-weighted' if other.entropy_on else 'unweighted'}"
            f", base {_ref(str(other.spec.get('model', 'unknown')))}). Final values of the last logging window; "
            "compare the unweighted cross-entropy and the eval loss, which mean the same thing in both modes.")
    return {"name": f"`{other.name}`", "text": text, "this_label": label(facts), "other_label": label(other),
            "rows": rows}


def _eval_text(facts: RunFacts) -> str:
    ev = facts.result.get("eval") or {}
    if "eval_loss" not in ev:
        return "No evaluation was run (no validation split)."
    return (f"On the {_fmt(facts.result.get('num_eval_examples'))} held-out validation examples, after training "
            f"(perplexity = exp(eval loss)):")


def _eval_rows(facts: RunFacts) -> list[tuple[str, str]]:
    ev = facts.result.get("eval") or {}
    rows = [(key.removeprefix("eval_").replace("_", " "), _fmt(value)) for key, value in ev.items()
            if isinstance(value, int | float) and key != "epoch"]
    if isinstance(ev.get("eval_loss"), int | float) and ev["eval_loss"] < 50:
        rows.insert(1, ("perplexity", _fmt(math.exp(ev["eval_loss"]))))
    return rows


def _limitations(facts: RunFacts) -> list[str]:
    items = [
        f"Trained on {_fmt(facts.result.get('num_train_examples'))} examples; it is specialised to that data and "
        "was evaluated only on the held-out split reported above.",
        "It inherits the base model's knowledge cut-off, biases, failure modes and license terms.",
        "No safety or red-team evaluation was done; review its outputs before any user sees them.",
    ]
    if facts.entropy_on:
        items.append("Entropy weighting is an experimental training signal: it up-weights tokens the model was "
                     "unsure about, which can help on hard tokens and can also amplify label noise. Compare with "
                     "an unweighted run on your data.")
    if not _is_hub_id(str(facts.spec.get("model", ""))):
        items.append("The base model was a local folder; `adapter_config.json` names that local path, so pass "
                     "the base model explicitly when loading (as below).")
    return items


def _peft_snippet(base: str, adapter: str) -> str:
    return f'''from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained({base!r}, dtype="auto")
model = PeftModel.from_pretrained(base, {adapter!r})
tokenizer = AutoTokenizer.from_pretrained({adapter!r})

messages = [{{"role": "user", "content": "What color is the sky?"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=32)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))'''


def _unsloth_snippet(adapter: str, spec: dict[str, Any]) -> str:
    return f'''from unsloth import FastLanguageModel

model, tokenizer = FastLanguageModel.from_pretrained(
    model_name={adapter!r},  # the adapter; Unsloth loads its base model from adapter_config.json
    max_seq_length={spec.get("max_seq_length", 2048)},
    load_in_4bit={bool(spec.get("load_in_4bit"))},
)
FastLanguageModel.for_inference(model)
messages = [{{"role": "user", "content": "What color is the sky?"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True).to("cuda")
output = model.generate(**inputs, max_new_tokens=32)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))'''
