"""Write examples/lm_arithmetic/{train,dev}.jsonl: prompt/response pairs for causal-LM
fine-tuning (``--task lm:examples/lm_arithmetic``), generated, deterministic.

Each prompt asks a small sum or difference in words and the response answers in a fixed
sentence form ("The answer is 12."): a pretrained decoder knows the words and must learn
the form and the arithmetic.

Reproduce:
    python scripts/make_lm_example.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "examples" / "lm_arithmetic"


def example(rng: random.Random) -> dict[str, str]:
    """One prompt/response pair."""
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if rng.random() < 0.5:
        return {"prompt": f"Question: what is {a} plus {b}?\n",
                "response": f"The answer is {a + b}."}
    a, b = max(a, b), min(a, b)
    return {"prompt": f"Question: what is {a} minus {b}?\n",
            "response": f"The answer is {a - b}."}


def main() -> None:
    rng = random.Random(0)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < 600:
        row = example(rng)
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:500]), ("dev", rows[500:])):
        with (FOLDER / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row) + "\n")
    print(f"written: {FOLDER}/train.jsonl (500), dev.jsonl (100)")


if __name__ == "__main__":
    main()
