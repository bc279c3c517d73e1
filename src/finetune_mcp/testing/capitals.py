"""A small checkable task for the real model: the capital of a country, answered with the city alone.

SmolLM2-135M-Instruct knows many capitals but answers in a sentence ("The capital of France is Paris."),
so its exact-match rate on the bare city starts near zero; a few LoRA steps teach the format, and the
held-out countries (never in the training rows) show whether it learned the format rather than the rows.
Rows are conversations; every other one carries a system turn of its own, the rest get the template's
default system prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

CAPITALS: dict[str, str] = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
    "Germany": "Berlin", "Canada": "Ottawa", "Kenya": "Nairobi", "Russia": "Moscow", "China": "Beijing",
    "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest",
    "Thailand": "Bangkok", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Argentina": "Buenos Aires",
    "England": "London", "Belgium": "Brussels", "Netherlands": "Amsterdam", "Iran": "Tehran", "Iraq": "Baghdad",
    "Mexico": "Mexico City", "India": "New Delhi", "South Korea": "Seoul", "Turkey": "Ankara",
    "Australia": "Canberra", "Brazil": "Brasilia", "Ukraine": "Kyiv", "Vietnam": "Hanoi", "Colombia": "Bogota",
    "Philippines": "Manila",
}
HELDOUT = ("France", "Japan", "Italy", "Germany", "Russia", "China", "Greece", "Egypt", "Spain", "England",
           "Mexico", "Thailand")
QUESTIONS = ("What is the capital of {c}?", "Name the capital city of {c}.", "{c}'s capital?",
             "Which city is the capital of {c}?")
SYSTEM = "Answer with the city name only."


def rows(countries: list[str], questions: tuple[str, ...] = QUESTIONS) -> list[dict]:
    out = []
    for i, country in enumerate(countries):
        for j, question in enumerate(questions):
            messages = [{"role": "user", "content": question.format(c=country)},
                        {"role": "assistant", "content": CAPITALS[country]}]
            if (i + j) % 2:
                messages.insert(0, {"role": "system", "content": SYSTEM})
            out.append({"messages": messages})
    return out


def write_capitals(folder: Path) -> tuple[Path, Path]:
    """(train.jsonl, heldout.jsonl): training countries with every phrasing; held-out countries asked once."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [c for c in CAPITALS if c not in HELDOUT]
    paths = folder / "train.jsonl", folder / "heldout.jsonl"
    for path, data in zip(paths, (rows(train), rows(list(HELDOUT), QUESTIONS[:1])), strict=True):
        path.write_text("".join(json.dumps(row) + "\n" for row in data), encoding="utf-8")
    return paths
