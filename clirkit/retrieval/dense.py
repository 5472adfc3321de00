"""Single-vector dense retrieval: inner product of normalised embeddings from a FAISS index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clirkit.retrieval.base import Rep, Searcher

if TYPE_CHECKING:
    from clirkit.models import Encoder
    from clirkit.retrieval.store import DenseIndex


def faiss_top(index: DenseIndex, q_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's top ``k`` rows and scores (float32 queries, as the index stores them)."""
    k = min(k, len(index.doc_ids))
    scores, rows = index.faiss_index.search(np.ascontiguousarray(q_emb, dtype=np.float32), k)
    return rows.astype(np.int64), np.where(rows >= 0, scores, -np.inf)


class DenseSearcher(Searcher):
    """Cosine retrieval (Karpukhin et al., DPR, EMNLP 2020) with a FAISS index (Johnson, Douze &
    Jégou, "Billion-scale similarity search with GPUs", IEEE TBD 2019).

    Args:
        encoder: the query encoder.
        index: the corpus index built by the document encoder.
        batch_size: encoder batch size; ``None`` encodes all texts of a call in one batch (the
            greedy attack's "one forward pass per step").
    """

    def __init__(self, encoder: Encoder, index: DenseIndex, batch_size: int | None = 64, name: str | None = None):
        self.encoder = encoder
        self.index = index
        self.batch_size = batch_size
        self.doc_ids = index.doc_ids
        self.name = name or encoder.name

    def encode(self, texts: list[str]) -> list[Rep]:
        return list(self.encoder.encode(texts, batch_size=self.batch_size or max(1, len(texts))))

    def score(self, reps: list[Rep], rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((len(reps), 0))
        docs = np.asarray(self.index.embeddings[np.sort(rows)], dtype=np.float64)
        order = np.argsort(np.argsort(rows))  # back from sorted (memmap-friendly) to given order
        return (np.stack(reps).astype(np.float64) @ docs.T)[:, order]

    def top(self, reps: list[Rep], k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss_top(self.index, np.stack(reps), k)
