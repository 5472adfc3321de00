"""The one retrieval interface: a :class:`Searcher` encodes queries, scores them against given
documents, and returns each query's best documents.

Every system (dense FAISS, late-interaction MaxSim, BM25, fusions of them) implements it, so
``clirkit eval``, both attacks and the dev evaluation of distillation never look inside one.
The greedy attack needs more than a ranked list: it encodes many candidate edits in one pass
(:meth:`Searcher.encode`), scores them against chosen documents in float64
(:meth:`Searcher.score`), and re-searches (:meth:`Searcher.top`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

RunDict = dict[str, dict[str, float]]
Rep = Any  # what a searcher's encode returns for one query (a vector, token vectors, term ids)
Translate = Callable[[dict[str, str]], dict[str, str]]


class Searcher(ABC):
    """One retrieval system over one corpus; row ``i`` of every array is ``doc_ids[i]``.

    Attributes:
        name: a label for tables and manifests.
        doc_ids: the corpus ids in row order.
        search_encodes: encoder passes :meth:`top` made beyond :meth:`encode` (a cost the
            greedy attack reports; MaxSim re-ranking needs the query's dense vector).
    """

    name: str
    doc_ids: list[str]
    search_encodes: int = 0

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.doc_ids)}

    @abstractmethod
    def encode(self, texts: list[str]) -> list[Rep]:
        """One query representation per text, in one batched pass of the query encoder."""

    @abstractmethod
    def score(self, reps: list[Rep], rows: np.ndarray) -> np.ndarray:
        """``len(reps) x len(rows)`` float64 scores of each query against the documents ``rows``.

        float64 makes rescoring the same pair reproducible far below the greedy attack's
        tolerance, which its monotonicity guarantee rests on.
        """

    @abstractmethod
    def top(self, reps: list[Rep], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)`` of each query's best ``k`` documents, best first.

        Both have shape ``(len(reps), k')`` with ``k' <= k``; a query with fewer results is
        padded with row ``-1`` and score ``-inf``.
        """

    def search(self, queries: dict[str, str], k: int) -> RunDict:
        """``{qid: {doc_id: score}}`` of each query's top ``k`` documents (as ir_measures reads a run)."""
        qids = list(queries)
        rows, scores = self.top(self.encode([queries[q] for q in qids]), k)
        return run_from_top(qids, rows, scores, self.doc_ids)


def run_from_top(qids: list[str], rows: np.ndarray, scores: np.ndarray, doc_ids: list[str]) -> RunDict:
    """The run of :meth:`Searcher.top`'s arrays; padding rows (``-1``) are left out."""
    return {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0} for i, q in enumerate(qids)}


def top_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` columns of each row of ``scores`` (ties by column), and their scores."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # a tie straddling the cut must be broken by column as a full stable sort would
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        rows = np.empty((len(scores), k), dtype=np.int64)
        for i in range(len(scores)):
            above = np.flatnonzero(scores[i] > kth[i])
            ties = np.flatnonzero(scores[i] == kth[i])[:k - len(above)]
            cand = np.concatenate([above, ties])
            rows[i] = cand[np.argsort(-scores[i, cand], kind="stable")]
    else:
        rows = np.argsort(-scores, axis=1, kind="stable")
    return rows, np.take_along_axis(scores, rows, axis=1)


class Translated(Searcher):
    """A searcher whose queries are translated first (the query-translation baseline)."""

    def __init__(self, inner: Searcher, translate: Translate, label: str) -> None:
        self.inner = inner
        self.translate = translate
        self.name = f"{inner.name}+{label}"
        self.doc_ids = inner.doc_ids

    @property
    def search_encodes(self) -> int:  # type: ignore[override]
        return self.inner.search_encodes

    def _texts(self, texts: list[str]) -> list[str]:
        return list(self.translate(dict(enumerate(texts))).values())

    def encode(self, texts: list[str]) -> list[Rep]:
        return self.inner.encode(self._texts(texts))

    def score(self, reps: list[Rep], rows: np.ndarray) -> np.ndarray:
        return self.inner.score(reps, rows)

    def top(self, reps: list[Rep], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.top(reps, k)

    def search(self, queries: dict[str, str], k: int) -> RunDict:
        return self.inner.search(self.translate(queries), k)


def drop_identical(run: RunDict) -> RunDict:
    """BEIR's ``ignore_identical_ids``: a query never retrieves the document with its own id."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def retrieve(searcher: Searcher, queries: dict[str, str], k: int, ignore_identical_ids: bool = False) -> RunDict:
    """Each query's top ``k``; with ``ignore_identical_ids`` ``k + 1`` are fetched, the query's own
    id dropped and the ranking cut to ``k`` (in the searcher's order), so every query gets ``k``
    results when the corpus has them, whether or not its own document was among them."""
    if not ignore_identical_ids:
        return searcher.search(queries, k)
    run = drop_identical(searcher.search(queries, k + 1))
    return {q: dict(list(docs.items())[:k]) for q, docs in run.items()}
