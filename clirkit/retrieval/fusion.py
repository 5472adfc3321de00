"""Rank fusion of several runs with ranx: RRF, CombSUM and CombMNZ, optionally weighted.

:func:`fuse_runs` is the pure core (run dicts in, run dict out, no I/O) used by ``clirkit
fuse``, experiment grids and attacks; :class:`FusionSearcher` wraps member searchers so that
one query text (an attacked one, say) is searched by every member and the results fused.

Conventions, the same for every method:

- A member's rank of a document is its position after a *stable* sort by descending score,
  so ties keep the order the run lists them in (a run read from ``run.trec`` lists them in
  its rank order; the 6-decimal scores there may tie where the originals did not).
- A query a member returned nothing for contributes nothing from that member; the fused run
  holds every query of any member.
- ``weights`` (one per run) are ranx's weighted variants: ``sum_i w_i / (k + rank_i)`` for
  RRF, ranx ``wsum`` for CombSUM and ranx ``wmnz`` (the normalised score sum times the sum of
  the weights of the runs that retrieved the document) for CombMNZ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from clirkit.errors import ClirkitError
from clirkit.retrieval.base import Searcher

RunDict = dict[str, dict[str, float]]
METHODS = ("rrf", "combsum", "combmnz")
NORMS = ("min-max", "max", "sum", "zmuv", "rank", "borda", "none")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"rrf": {"k": 60}, "combsum": {"norm": "min-max"},
                                             "combmnz": {"norm": "min-max"}}
GREEDY_UNSUPPORTED = "greedy search is not supported for fused systems; use --search random"


def check_fusion(n_runs: int, method: str, weights: Sequence[float] | None, params: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """Validate a fusion request and return its parameters with the defaults filled in.

    Raises:
        ClirkitError: fewer than two runs, an unknown method, norm or parameter, or weights
            whose count does not match the runs (or that are negative or all zero).
    """
    if method not in METHODS:
        raise ClirkitError(f"unknown fusion method {method!r}", fix=f"use one of: {', '.join(METHODS)}")
    if n_runs < 2:
        raise ClirkitError(f"fusion needs at least two runs, got {n_runs}", fix="pass two or more runs")
    unknown = sorted(set(params or {}) - set(DEFAULT_PARAMS[method]))
    if unknown:
        raise ClirkitError(f"{method} takes no parameter {', '.join(map(repr, unknown))}",
                           fix=f"its parameters are: {', '.join(DEFAULT_PARAMS[method])}")
    resolved = {**DEFAULT_PARAMS[method], **(params or {})}
    if method == "rrf" and not (isinstance(resolved["k"], int) and resolved["k"] >= 0):
        raise ClirkitError(f"RRF k must be an integer >= 0, got {resolved['k']!r}", fix="the usual value is 60")
    if method != "rrf" and resolved["norm"] not in NORMS:
        raise ClirkitError(f"unknown score normalisation {resolved['norm']!r}", fix=f"use one of: {', '.join(NORMS)}")
    if weights is not None:
        if len(weights) != n_runs:
            raise ClirkitError(f"{len(weights)} weights for {n_runs} runs", fix="give one weight per run, in order")
        if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
            raise ClirkitError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}",
                               fix="e.g. --weights 1,0.5")
    return resolved


def ranked(docs: dict[str, float]) -> list[str]:
    """Document ids best first: descending score, ties in the order ``docs`` lists them."""
    return sorted(docs, key=lambda d: -docs[d])  # sorted() is stable


def _ranx_run(run: RunDict, qids: list[str]):
    """A ranx ``Run`` with every query of ``qids`` (those ``run`` lacks are empty)."""
    from ranx import Run

    full = {q: run.get(q) or {} for q in qids}
    if any(full.values()):
        return Run(full)
    # ranx's constructor sizes its id strings from the documents, so a run without any is built by hand
    from numba import types
    from numba.typed import Dict

    out = Run()
    for q in qids:
        out.run[q] = Dict.empty(key_type=types.unicode_type, value_type=types.float64)
    return out


def fuse_runs(runs: list[RunDict], method: str, weights: list[float] | None = None,
              params: dict[str, Any] | None = None) -> RunDict:
    """Fuse runs ``{qid: {doc_id: score}}`` with ranx.

    Args:
        runs: two or more runs over the same queries.
        method: ``rrf``, ``combsum`` or ``combmnz``.
        weights: one weight per run (ranx's weighted variants), or None for the plain method.
        params: ``{"k": 60}`` for RRF; ``{"norm": "min-max"}`` for CombSUM/CombMNZ, the ranx
            score normalisation applied to each run first (``none`` to fuse raw scores).

    Returns:
        The fused run, every query of any input, documents scored by the fusion.

    References:
        Cormack, Clarke, Buettcher. Reciprocal Rank Fusion Outperforms Condorcet and Individual
        Rank Learning Methods. SIGIR 2009 (RRF). Fox, Shaw. Combination of Multiple Searches.
        TREC-2 1993 (CombSUM, CombMNZ). Bassani, Romelli. ranx.fuse and ranx.optimize_fusion:
        Fusion Toolkit for Information Retrieval. CIKM 2022.
    """
    resolved = check_fusion(len(runs), method, weights, params)
    qids = sorted(set().union(*runs))
    if not qids:
        return {}
    import warnings

    from numba.core.errors import NumbaTypeSafetyWarning

    with warnings.catch_warnings():
        # ranx's RRF casts its query count to int64 (harmless); the warning would reach every user
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        fused = _fuse(runs, qids, method, weights, resolved)
    return {q: {d: float(s) for d, s in fused.get(q, {}).items()} for q in qids}


def _fuse(runs: list[RunDict], qids: list[str], method: str, weights: Sequence[float] | None,
          resolved: dict[str, Any]) -> dict:
    from ranx import fuse

    if method == "rrf":
        # ranx ranks a query's documents in the order its Run holds them, which for tied scores
        # is not defined; scores that encode our ranks make the ranking exactly ours
        by_rank = [{q: {d: -float(i) for i, d in enumerate(ranked(docs))} for q, docs in r.items()} for r in runs]
        members = [_ranx_run(r, qids) for r in by_rank]
        k = resolved["k"]
        if weights is None:
            out = fuse(members, norm=None, method="rrf", params={"k": k})
        else:
            from ranx.fusion import rrf

            # weighted RRF: ranx's per-run RRF scores 1/(k + rank), then its weighted sum
            per_run = [rrf([m], k=k) for m in members]
            out = fuse(per_run, norm=None, method="wsum", params={"weights": [float(w) for w in weights]})
    else:
        members = [_ranx_run(r, qids) for r in runs]
        norm = None if resolved["norm"] == "none" else resolved["norm"]
        plain, weighted = {"combsum": ("sum", "wsum"), "combmnz": ("mnz", "wmnz")}[method]
        if weights is None:
            out = fuse(members, norm=norm, method=plain)
        else:
            out = fuse(members, norm=norm, method=weighted, params={"weights": [float(w) for w in weights]})
    return out.to_dict()


def cut(run: RunDict, k: int) -> RunDict:
    """The ``k`` best documents of each query (descending score, ties by document id)."""
    return {q: dict(sorted(docs.items(), key=lambda x: (-x[1], x[0]))[:k]) for q, docs in run.items()}


class FusionSearcher(Searcher):
    """A system that searches with every member and fuses their rankings (:func:`fuse_runs`).

    Every member sees the same query texts, so a perturbed query (an attack) reaches each
    member unchanged. Only ``search`` is offered: a rank fusion gives no score to a document
    outside the members' rankings, so the greedy attack's per-document scoring is refused.

    Args:
        members: the member searchers (only their ``search`` is called).
        method, weights, params: as for :func:`fuse_runs`.
        depth: documents each member retrieves per query (default: the ``k`` asked for).
    """

    def __init__(self, members: Sequence[Searcher], method: str = "rrf", weights: list[float] | None = None,
                 params: dict[str, Any] | None = None, depth: int | None = None) -> None:
        self.params = check_fusion(len(members), method, weights, params)
        self.members = list(members)
        self.method = method
        self.weights = weights
        self.depth = depth
        names = ", ".join(getattr(m, "name", type(m).__name__) for m in self.members)
        self.name = f"{method}({names})"
        self.doc_ids = list(getattr(self.members[0], "doc_ids", []))

    def search(self, queries: dict[str, str], k: int) -> RunDict:
        """Search every member with ``queries`` and fuse; the ``k`` best fused documents per query."""
        depth = max(k, self.depth or 0)
        runs = [m.search(queries, depth) for m in self.members]
        fused = fuse_runs(runs, self.method, self.weights, self.params)
        return cut({q: fused.get(q, {}) for q in queries}, k)

    def encode(self, texts: list[str]):
        raise ClirkitError(GREEDY_UNSUPPORTED)

    def score(self, reps, rows):
        raise ClirkitError(GREEDY_UNSUPPORTED)

    def top(self, reps, k: int):
        raise ClirkitError(GREEDY_UNSUPPORTED)
