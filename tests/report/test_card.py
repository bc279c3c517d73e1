"""The model card of real tiny runs: every section, plots that open, Hub-valid metadata, snippets that run."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from peft import PeftModel
from PIL import Image

from finetune_mcp.errors import JobError
from finetune_mcp.report.card import render_model_card, write_model_card
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import TinyRuns, copy_run, tiny_runs

pytestmark = pytest.mark.slow

SECTIONS = [
    "## Training details", "### Hyperparameters", "### Software", "## Entropy weighting", "## Entropy",
    "### Highest-entropy tokens", "## Loss curves", "## Evaluation results", "## Intended use and limitations",
    "## How to load",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


def test_card_of_a_weighted_run_compared_with_an_unweighted_one(runs: TinyRuns, tmp_path: Path) -> None:
    run = copy_run(runs.weighted, tmp_path)
    readme, plots = write_model_card(run, runs.plain)
    text = readme.read_text()

    for heading in [*SECTIONS, f"## Comparison with `{runs.plain.root.name}`"]:
        assert f"\n{heading}\n" in text, heading
    card = ModelCard.load(readme)  # YAML header parses as the Hub's metadata
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"lora", "peft", "trl", "entropy-weighted"} <= set(card.data.tags)
    assert "unsloth" not in card.data.tags  # trained with the transformers backend on CPU
    assert card.data.base_model is None  # a local folder is not a Hub id

    # plots: exist, open, and are exactly the images the card references
    assert set(plots) == {"loss.png", "entropy.png", "entropy_boxplot.png", "comparison.png"}
    for path in plots.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 250
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(referenced) == sorted(f"plots/{name}" for name in plots)
    assert all((readme.parent / ref).is_file() for ref in referenced)

    spec, result = run.read_json(run.spec), run.read_json(run.result)
    for key, value in spec.items():  # every hyperparameter
        if isinstance(value, dict):
            assert all(f"| `{key}.{sub}` |" in text for sub in value)
        elif key not in ("model", "dataset", "run_dir", "ignored_fields", "gguf_source"):  # gguf: in the summary
            assert f"| `{key}` |" in text, key
    assert f"| Seed | {spec['seed']} |" in text
    for package, version in result["versions"].items():
        assert f"| {package} | {version} |" in text
    assert "| Device | `cpu` |" in text and "Transformers + PEFT" in text

    assert "**On.**" in text and "w = clip(1 + s·h, min, max)" in text
    threshold = result["high_entropy_threshold"]
    assert f"H > {threshold:.4g} nats" in text
    val_entropy = run.read_json(run.entropy / "eval.json")["mean_entropy"]
    assert f"mean token entropy **{val_entropy:.4g} nats**" in text
    epochs = sorted(run.entropy.glob("epoch_*.json"))
    top = next(run.read_json(p) for p in reversed(epochs) if run.read_json(p)["top_tokens"])["top_tokens"]
    rows = re.findall(r"^\| \d+ \| `.*` \| \d+ \| \d+ \| \d+ \| \d+% \| [\d.]+ \|$", text, re.M)
    assert len(rows) == len(top) > 0
    first = json.dumps(top[0]["token"], ensure_ascii=False).replace("|", "\\|").replace("`", "ˋ")
    assert f"| 1 | `{first}` | {top[0]['id']} | {top[0]['count']} |" in text
    # side-by-side table: the unweighted run's eval loss next to this one's
    plain_eval = runs.plain.read_json(runs.plain.result)["metrics"]["eval/loss"]
    assert re.search(rf"^\| `eval/loss` \| [\d.]+ \| {plain_eval:.4g} \| [+-][\d.e-]+ \|$", text, re.M)


def test_unweighted_run_says_off_and_has_no_comparison(runs: TinyRuns) -> None:
    text = render_model_card(runs.plain)
    card = ModelCard(text)
    assert "entropy-weighted" not in card.data.tags
    assert "**Off.**" in text and "## Comparison" not in text
    for heading in SECTIONS:
        assert f"\n{heading}\n" in text, heading


def test_hub_ids_license_and_runpod_cost_reach_the_metadata(runs: TinyRuns, tmp_path: Path) -> None:
    run = copy_run(runs.weighted, tmp_path / "a")
    spec = run.read_json(run.spec)
    run.write_json(run.spec, {**spec, "model": "Qwen/Qwen3-0.6B", "dataset": "someone/qa-pairs"})
    run.write_json(run.result, {**run.read_json(run.result), "cost_usd": 0.4213, "backend": "unsloth",
                                "device": "NVIDIA RTX 4090"})
    card = ModelCard(render_model_card(run, repo_id="alice/qwen3-qa"))
    assert card.data.base_model == "Qwen/Qwen3-0.6B" and card.data.datasets == ["someone/qa-pairs"]
    assert "unsloth" in card.data.tags and card.data.model_name == "qwen3-qa"
    assert "$0.42 (RunPod)" in card.text and "`NVIDIA RTX 4090`" in card.text
    assert "model_name='alice/qwen3-qa'" in card.text  # the Unsloth snippet loads from the Hub repo

    licensed = tmp_path / "licensed-base"
    licensed.mkdir()
    (licensed / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base model\n")
    run.write_json(run.spec, {**spec, "model": str(licensed)})
    assert ModelCard(render_model_card(run)).data.license == "apache-2.0"


def test_the_peft_snippet_loads_the_adapter_and_generates(runs: TinyRuns) -> None:
    text = render_model_card(runs.weighted)
    snippet = re.search(r"With 🤗 PEFT and Transformers:\n\n```python\n(.*?)```", text, re.S).group(1)
    assert str(runs.model) in snippet and str(runs.weighted.adapter) in snippet
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(snippet, "card-snippet", "exec"), namespace)
    assert isinstance(namespace["model"], PeftModel)
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]  # it generated


def test_a_card_needs_a_succeeded_run(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "ft-0000000000aa").create()
    with pytest.raises(JobError, match=r"no result\.json"):
        render_model_card(run)
    run.write_json(run.result, {"status": "failed"})
    with pytest.raises(JobError, match="needs a succeeded run"):
        render_model_card(run)
