"""The forgetting check's general set: 64 short questions with one right answer, made here, offline.

What fine-tuning on a narrow dataset must not cost is checked on what that dataset did not teach:
arithmetic, world facts, word knowledge and number patterns, each answered in a word or a number so
a reference check can judge it. The rows are fixed (built from literal lists and a seeded generator:
the same 64 rows everywhere), so base and tuned, and two runs, are scored on the same questions.

Its limits (docs/evaluation.md): it is small (a 95 % interval on a match rate over 64 rows is about
±12 points), English only, short-answer only (no reasoning, instructions or long-form writing), and
a small model may get few of them right to begin with, in which case the teacher-forced loss on the
reference answers (which moves even when no answer is right) is the figure to read.
"""

from __future__ import annotations

import random
from typing import Any

_ASK = " Answer with the number only."
_ONE_WORD = " Answer in one word."

CAPITALS = (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Greece", "Athens"), ("Russia", "Moscow"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"),
            ("Austria", "Vienna"), ("Poland", "Warsaw"))
WORDS = (("What is the opposite of hot?", "cold"), ("What is the opposite of up?", "down"),
         ("What is the plural of mouse?", "mice"), ("What is the plural of child?", "children"),
         ("What color is the sky on a clear day?", "blue"), ("What color is fresh grass?", "green"),
         ("Which animal says moo?", "cow"), ("Which animal barks?", "dog"),
         ("What is frozen water called?", "ice"), ("Which planet do we live on?", "Earth"),
         ("What is the past tense of go?", "went"), ("What is the opposite of day?", "night"),
         ("Which season comes after winter?", "spring"), ("What do bees make?", "honey"),
         ("Which month comes after March?", "April"), ("What is the first day of the week after Sunday?", "Monday"))
COUNTS = (("How many days are in a week?", 7), ("How many legs does a spider have?", 8),
          ("How many months are in a year?", 12), ("How many hours are in a day?", 24),
          ("How many sides does a triangle have?", 3), ("How many minutes are in an hour?", 60),
          ("How many legs does a dog have?", 4), ("How many sides does a hexagon have?", 6))


def general_rows() -> list[dict[str, Any]]:
    """The 64 rows as chat examples (user question, assistant answer), in a fixed order."""
    rng = random.Random(25)
    pairs: list[tuple[str, str]] = []
    for _ in range(8):
        a, b = rng.randint(11, 89), rng.randint(11, 89)
        pairs.append((f"What is {a} + {b}?{_ASK}", str(a + b)))
    for _ in range(8):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        pairs.append((f"What is {a} times {b}?{_ASK}", str(a * b)))
    pairs += [(f"What is the capital of {country}?{_ONE_WORD}", city) for country, city in CAPITALS]
    pairs += [(question + _ONE_WORD, answer) for question, answer in WORDS]
    pairs += [(question + _ASK, str(answer)) for question, answer in COUNTS]
    for _ in range(8):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        shown = ", ".join(str(start + i * step) for i in range(4))
        pairs.append((f"What number comes next: {shown}, ?{_ASK}", str(start + 4 * step)))
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
