"""Retrieval behind one interface (:class:`Searcher`), and the registry that builds a system's searcher.

A builder takes a :class:`SearchSetup` (what the stage knows: encoders, the dataset, the
scoring options, how to get a dense index) and returns a :class:`Searcher`; ``clirkit eval``
and both attacks only call :func:`build_searcher`. ``dense``, ``maxsim`` and ``bm25`` (the
lexical system, :mod:`clirkit.retrieval.bm25`, which ignores the encoders and the dense index)
are registered here. Fusions of several systems are :class:`~clirkit.retrieval.fusion.FusionSearcher`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clirkit.registry import Registry
from clirkit.retrieval.base import RunDict, Searcher, Translate, Translated, drop_identical, retrieve, run_from_top
from clirkit.retrieval.bm25 import BM25Searcher, document_analyzer, ensure_bm25_index
from clirkit.retrieval.dense import DenseSearcher
from clirkit.retrieval.maxsim import MaxSimSearcher, PackedDocs, maxsim_packed, maxsim_scores

if TYPE_CHECKING:
    from clirkit.models import EncoderPair

__all__ = ["SEARCHERS", "BM25Searcher", "DenseSearcher", "MaxSimSearcher", "PackedDocs", "RunDict", "SearchSetup",
           "Searcher", "Translated", "build_searcher", "document_analyzer", "drop_identical", "ensure_bm25_index",
           "maxsim_packed", "maxsim_scores", "retrieve", "run_from_top"]


@dataclass
class SearchSetup:
    """What a searcher builder may use.

    Attributes:
        scoring: the registered searcher name (``dense``, ``maxsim``, ...).
        pair: the query and document encoders (None for lexical systems).
        index: returns the corpus's dense index (built or reused by the stage) when called.
        maxsim_mode: ``auto``, ``exhaustive``, ``rerank`` or ``token-ann``.
        rerank_k: dense candidates re-ranked by MaxSim.
        batch_size: query encoder batch size; None: each call's texts in one batch.
        name: the system's label.
        extra: anything a further builder needs; ``bm25`` reads ``dataset`` (a
            :class:`~clirkit.data.formats.Dataset`), ``run`` (where its index goes) and ``bm25``
            (``{"k1", "b", "method", "stem", "stopwords"}``).
    """

    scoring: str
    pair: EncoderPair | None = None
    index: Callable[[], Any] | None = None
    maxsim_mode: str = "auto"
    rerank_k: int = 100
    batch_size: int | None = 64
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


SEARCHERS: Registry[Callable[[SearchSetup], Searcher]] = Registry("scoring")


@SEARCHERS.register("dense")
def _dense(setup: SearchSetup) -> Searcher:
    assert setup.pair is not None and setup.index is not None
    return DenseSearcher(setup.pair.query, setup.index(), setup.batch_size, setup.name)


@SEARCHERS.register("maxsim")
def _maxsim(setup: SearchSetup) -> Searcher:
    assert setup.pair is not None and setup.index is not None
    return MaxSimSearcher(setup.pair.query, setup.index(), setup.maxsim_mode, setup.rerank_k, setup.batch_size,
                          setup.name)


@SEARCHERS.register("bm25")
def _bm25(setup: SearchSetup) -> Searcher:
    ds, run, p = setup.extra["dataset"], setup.extra["run"], setup.extra["bm25"]
    analyzer = document_analyzer(ds, stem=p["stem"], stopwords=p["stopwords"])
    return ensure_bm25_index(ds, run, analyzer, p["k1"], p["b"], p["method"])


def build_searcher(setup: SearchSetup, translate: Translate | None = None, translation: str | None = None
                   ) -> Searcher:
    """The searcher registered under ``setup.scoring``, translating queries first when asked."""
    searcher = SEARCHERS.get(setup.scoring)(setup)
    return Translated(searcher, translate, translation or "translated") if translate is not None else searcher
