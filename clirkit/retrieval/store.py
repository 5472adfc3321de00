"""A stored corpus index as searchers read it: document ids, the FAISS index, embeddings and
(for MaxSim) token embeddings. :mod:`clirkit.index` builds and finds these folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DenseIndex:
    """A loaded index: ids, the FAISS index, and (for maxsim) token embeddings."""

    path: Path
    manifest: dict
    doc_ids: list[str]
    faiss_index: object
    tokens: np.ndarray | None = None
    token_offsets: np.ndarray | None = None
    #: what searchers derive from the index once and keep for its lifetime (MaxSim's packed tokens)
    derived: dict = field(default_factory=dict)

    @property
    def embeddings(self) -> np.ndarray:
        return np.load(self.path / "embeddings.npy", mmap_mode="r")

    def doc_tokens(self, i: int) -> np.ndarray:
        assert self.tokens is not None and self.token_offsets is not None
        return self.tokens[self.token_offsets[i]:self.token_offsets[i + 1]]


def load_index(path: Path) -> DenseIndex:
    import faiss

    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    doc_ids = (path / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    idx = faiss.read_index(str(path / "index.faiss"))
    tokens = offsets = None
    if (path / "tokens.npy").is_file():
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        offsets = np.load(path / "token_offsets.npy")
    return DenseIndex(path, manifest, doc_ids, idx, tokens, offsets)
