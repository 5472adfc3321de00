"""Perturbing a batch of queries reproducibly: one generator per ``(seed, index)``."""

from __future__ import annotations

import random
from collections.abc import Sequence

from clirkit.errors import ClirkitError
from clirkit.perturb.spec import PerturbSpec, as_spec


def text_rng(seed: int, index: int) -> random.Random:
    """The generator for text ``index`` under ``seed``: independent of batch order and size.

    Seeding ``random.Random`` with a string hashes it with SHA-512, which is stable across
    processes and platforms (unlike ``hash()``), and distinct (seed, index) never collide.
    """
    return random.Random(f"clirkit.perturb:{seed}:{index}")


def perturb_many(spec: PerturbSpec | str, texts: Sequence[str], seed: int,
                 ids: Sequence[str] | None = None) -> list[str]:
    """Perturb every text with its own generator derived from ``(seed, index)``.

    Args:
        spec: a :class:`PerturbSpec` or a spec string.
        texts: the queries.
        seed: any non-negative integer (0 is a seed).
        ids: query ids, used to name an empty query in the error.

    Returns:
        The perturbed texts, in order.

    Raises:
        ClirkitError: a query is empty or whitespace-only.
    """
    spec = as_spec(spec)
    if seed is None or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if ids is not None and len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    out = []
    for index, text in enumerate(texts):
        if not text.strip():
            who = f"query {ids[index]!r}" if ids is not None else f"query #{index}"
            raise ClirkitError(f"{who} is empty; it cannot be perturbed",
                               fix="give it text or remove it from the queries file")
        out.append(spec.apply(text, text_rng(seed, index)))
    return out


