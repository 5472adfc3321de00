"""One seeding entry point returning local generators; library code never touches global RNGs.

Seed 0 is a seed: callers test ``seed is None``, never ``if seed`` (the sentence-transformers
trainer bug noted in the design guide).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass
class Generators:
    """Independent generators derived from one seed."""

    seed: int
    py: random.Random
    np: np.random.Generator

    def torch(self, offset: int = 0):
        """A ``torch.Generator`` seeded from this seed (imported lazily; torch is heavy)."""
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g

    def child(self, offset: int) -> Generators:
        """A derived, independent set of generators (e.g. one per perturbation seed)."""
        return set_seed(self.seed * 1_000_003 + offset)


def set_seed(seed: int, *, torch_global: bool = False) -> Generators:
    """Return local generators for ``seed``.

    Args:
        seed: any non-negative integer; 0 is a valid seed.
        torch_global: also seed torch's global RNG, which model initialisation (nn.Linear,
            dropout) draws from. Only the training entry point sets this.
    """
    if seed is None or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if torch_global:
        import torch

        torch.manual_seed(seed)
    return Generators(seed=seed, py=random.Random(seed), np=np.random.default_rng(seed))
