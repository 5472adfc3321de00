"""Throughput of clirkit's ``char-swap`` against nlpaug's ``RandomCharAug(action="swap")``.

Both perturb the same N generated queries (default 100,000; 3-10 words each, ~80% ASCII words
with Swahili/Tagalog-like syllables, ~20% words in accented Latin, Arabic script or Devanagari)
with the same settings: 30% of the words of at least 4 characters get one adjacent swap. nlpaug's
character augmenter needs no model, so nothing is downloaded. The two are not identical:
clirkit swaps grapheme clusters and keeps each word's first and last cluster, nlpaug swaps code
points anywhere in the word; the comparison is of throughput at equal work per query.

Usage::

    .venv/bin/python bench/bench_perturb.py            # 100,000 queries, well under 2 minutes
    .venv/bin/python bench/bench_perturb.py --n 20000
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clirkit.perturb import parse_spec, perturb_many  # noqa: E402

SYLLABLES = ["ka", "ma", "ta", "na", "li", "mu", "si", "wa", "ng", "ku", "ba", "ri", "po", "ya", "ha"]
OTHER_SCRIPTS = [
    "éèàçôûëï",  # accented Latin, precomposed
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",  # Arabic letters
    "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह",  # Devanagari consonants (vowel signs added below)
]


def make_word(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return "".join(rng.choices(SYLLABLES, k=rng.randint(1, 5)))
    letters = rng.choice(OTHER_SCRIPTS)
    word = "".join(rng.choices(letters, k=rng.randint(2, 9)))
    if letters[0] == "क":
        word = "".join(c + rng.choice(["", "ा", "ि", "्"]) for c in word)  # matras and viramas
    return word


def make_queries(n: int, seed: int) -> list[str]:
    """``n`` queries drawn from a 20,000-word vocabulary."""
    rng = random.Random(seed)
    vocab = [make_word(rng) for _ in range(20_000)]
    return [" ".join(rng.choices(vocab, k=rng.randint(3, 10))) for _ in range(n)]


def clirkit_swap(rate: float, seed: int) -> Callable[[list[str]], list[str]]:
    spec = parse_spec(f"char-swap:rate={rate},min_len=4")
    return lambda queries: perturb_many(spec, queries, seed)


def nlpaug_swap(rate: float, seed: int) -> Callable[[list[str]], list[str]]:
    import nlpaug.augmenter.char as nac
    import numpy as np

    # nlpaug draws from the global generators; a benchmark script may seed them.
    random.seed(seed)
    np.random.seed(seed)
    aug = nac.RandomCharAug(action="swap", swap_mode="adjacent", aug_word_p=rate, aug_word_max=1000,
                            aug_char_min=1, aug_char_max=1, min_char=4)
    return aug.augment


def measure(fn: Callable[[list[str]], list[str]], queries: list[str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = fn(queries)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of queries")
    ap.add_argument("--rate", type=float, default=0.3, help="fraction of eligible words perturbed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    queries = make_queries(args.n, args.seed)
    results = {}
    for name, build in (("clirkit char-swap", clirkit_swap), ("nlpaug RandomCharAug(swap)", nlpaug_swap)):
        seconds, out = measure(build(args.rate, args.seed), queries)
        assert len(out) == len(queries)
        changed = sum(a != b for a, b in zip(queries, out, strict=True)) / len(queries)
        results[name] = (seconds, changed)

    table = Table(title=f"char swap on {args.n:,} queries (rate={args.rate}, min length 4)")
    for column in ("library", "seconds", "queries/s", "queries changed"):
        table.add_column(column, justify="left" if column == "library" else "right")
    for name, (seconds, changed) in results.items():
        table.add_row(name, f"{seconds:.2f}", f"{args.n / seconds:,.0f}", f"{changed:.1%}")
    console = Console()
    console.print(table)
    (ours, _), (theirs, _) = results.values()
    console.print(f"throughput ratio clirkit / nlpaug: {theirs / ours:.2f}x  "
                  f"(python {platform.python_version()}, nlpaug {version('nlpaug')}, regex {version('regex')})")


if __name__ == "__main__":
    main()
