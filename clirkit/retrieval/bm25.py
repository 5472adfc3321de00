"""BM25 retrieval on bm25s's eager sparse index, with a language-aware analyzer.

bm25s (Lù, 2024, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring",
arXiv:2407.03618) precomputes every (term, document) BM25 weight into a CSC matrix, so a query's
scores are the sum of its terms' columns. The default variant is Lucene's (Robertson &
Zaragoza, 2009; Kamphuis et al., ECIR 2020 "Which BM25 do you mean?"):

    score(q, d) = sum_{t in q} ln(1 + (N - df_t + 0.5) / (df_t + 0.5))
                  * tf_td / (tf_td + k1 * (1 - b + b * |d| / avgdl))

(Lucene 8+, LUCENE-8563, dropped the classic numerator's constant factor ``k1 + 1``: same
ranking, scores divided by ``k1 + 1`` compared with the textbook formula.)

A query term repeated counts once per occurrence, as in a Lucene BooleanQuery.

Documents and queries go through the same :class:`~clirkit.analysis.Analyzer`, the one of the
*document* language (the dataset card's ``languages.document``): the index's terms are that
analyzer's output, so queries translated into the document language (query_translation) meet
them, and untranslated queries meet them only through shared strings (names, numbers).

``<run>/bm25/`` holds bm25s's own files (``retriever.save``), ``doc_ids.txt`` and
``manifest.json``; an index is identified by a key over the corpus sha256, the analyzer's
description, k1, b and the variant, and any completed run holding one with the same key is
reused (hard-linked) instead of rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from clirkit.analysis import Analyzer
from clirkit.data.formats import Dataset, file_digest
from clirkit.errors import ClirkitError
from clirkit.progress import progress
from clirkit.retrieval.base import Searcher, run_from_top, top_rows
from clirkit.rundir import Run, find_stored, freeze_tree, link_tree, write_json

log = logging.getLogger("clirkit")
FORMAT_VERSION = 1
INDEX_DIR = "bm25"
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")

Rep = np.ndarray  # a query as the vocabulary ids of its analysed terms (out-of-vocabulary terms dropped)


def bm25_key(corpus_sha: str, analyzer: Analyzer, k1: float, b: float, method: str) -> str:
    """The identity of a BM25 index: corpus, analysis chain and scoring parameters."""
    blob = json.dumps([FORMAT_VERSION, corpus_sha, analyzer.describe(), float(k1), float(b), method], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_params(k1: float, b: float, method: str) -> None:
    """Reject parameters bm25s would misuse silently or fail on with a traceback."""
    if method not in METHODS:
        raise ClirkitError(f"unknown BM25 variant {method!r}", fix=f"use one of: {', '.join(METHODS)}")
    if not k1 >= 0:
        raise ClirkitError(f"BM25 k1 must be >= 0, got {k1}", fix="the usual range is 0.9-1.5")
    if not 0 <= b <= 1:
        raise ClirkitError(f"BM25 b must be in [0, 1], got {b}", fix="the usual value is 0.75")


def _sorted_columns(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSC arrays with each term's documents in increasing order (searchsorted needs it)."""
    n = len(indices)
    if n < 2:
        return data, indices
    ascending = np.diff(indices) > 0
    ends = indptr[1:-1] - 1  # last entry of each column but the final one
    ascending[ends[(ends >= 0) & (ends < n - 1)]] = True
    if ascending.all():
        return data, indices
    col = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((indices, col))
    return np.asarray(data)[order], np.asarray(indices)[order]


class BM25Searcher(Searcher):
    """Sparse BM25 retrieval over one corpus (the :class:`~clirkit.retrieval.Searcher` interface).

    Args:
        retriever: an indexed ``bm25s.BM25``.
        doc_ids: the corpus ids, row ``i`` of the index being ``doc_ids[i]``.
        analyzer: the analysis applied to the documents; queries get the same.
        manifest: what was recorded with the index (key, parameters), if loaded from disk.
    """

    def __init__(self, retriever, doc_ids: list[str], analyzer: Analyzer, manifest: dict | None = None) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.analyzer = analyzer
        self.manifest = manifest or {}
        self.k1, self.b, self.method = retriever.k1, retriever.b, retriever.method
        self.name = f"bm25-{self.method}(k1={self.k1:g},b={self.b:g},{analyzer.language or 'und'})"
        s = retriever.scores
        self._indptr = np.asarray(s["indptr"])
        self._data, self._indices = _sorted_columns(s["data"], s["indices"], self._indptr)
        self._nonocc = getattr(retriever, "nonoccurrence_array", None)
        # indexes stored before create_empty_token=False hold bm25s's "" entry, a column the matrix lacks
        self._vocab = {t: i for t, i in retriever.vocab_dict.items() if t}
        if len(doc_ids) != s["num_docs"]:
            raise ClirkitError(f"the BM25 index has {s['num_docs']} rows but {len(doc_ids)} document ids",
                               fix="delete the damaged index folder and rebuild it")

    # ----------------------------------------------------------------- building and storage

    @classmethod
    def build(cls, docs: Iterable[tuple[str, str]], analyzer: Analyzer, k1: float = 1.5, b: float = 0.75,
              method: str = "lucene", show_progress: bool = True) -> BM25Searcher:
        """Analyse ``(doc_id, text)`` pairs and index them with bm25s.

        Terms are mapped to ids while streaming, so only id lists (not strings) are held.
        """
        import bm25s

        check_params(k1, b, method)
        vocab: dict[str, int] = {}
        doc_ids: list[str] = []
        token_ids: list[list[int]] = []
        with progress() as bar:
            task = bar.add_task("analysing documents", total=None, info="", visible=show_progress)
            for doc_id, text in docs:
                doc_ids.append(doc_id)
                token_ids.append([vocab.setdefault(t, len(vocab)) for t in analyzer(text)])
                bar.update(task, advance=1)
        if not doc_ids:
            raise ClirkitError("the corpus is empty", fix="prepare a dataset with documents")
        if not vocab:  # bm25s cannot build a matrix without columns
            raise ClirkitError(f"no document has a term under the analyzer {analyzer.describe()}",
                               fix="check the corpus text and its language")
        retriever = bm25s.BM25(k1=k1, b=b, method=method)
        # no "" token: bm25s would give it an id past the matrix's columns (our analyzer never yields "")
        retriever.index((token_ids, vocab), create_empty_token=False, show_progress=False)
        return cls(retriever, doc_ids, analyzer)

    def save(self, path: Path, manifest: dict) -> None:
        """bm25s's files, ``doc_ids.txt`` and ``manifest.json`` (written last: it marks completion)."""
        path.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(path), show_progress=False)
        with open(path / "doc_ids.txt", "w", encoding="utf-8") as f:
            f.write("".join(f"{d}\n" for d in self.doc_ids))
        write_json(path / "manifest.json", manifest)
        self.manifest = manifest

    @classmethod
    def load(cls, path: Path, analyzer: Analyzer) -> BM25Searcher:
        """A stored index; ``analyzer`` must be the one it was built with (checked on the manifest)."""
        import bm25s

        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("analyzer") != analyzer.describe():
            raise ClirkitError(f"the BM25 index was built with analyzer {manifest.get('analyzer')}, "
                               f"not {analyzer.describe()}", path=path, fix="build an index for this analyzer")
        retriever = bm25s.BM25.load(str(path), mmap=True, show_progress=False)
        doc_ids = (path / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        return cls(retriever, doc_ids, analyzer, manifest)

    # ----------------------------------------------------------------- the Searcher interface

    def encode(self, texts: list[str]) -> list[Rep]:
        """Each text as the int64 vocabulary ids of its analysed terms, in order, repeats kept."""
        vocab = self._vocab
        return [np.array([vocab[t] for t in self.analyzer(text) if t in vocab], dtype=np.int64) for text in texts]

    def _scores_all(self, rep: Rep) -> np.ndarray:
        scores = np.zeros(len(self.doc_ids), dtype=np.float64)
        for t in rep:
            s, e = self._indptr[t], self._indptr[t + 1]
            scores[self._indices[s:e]] += self._data[s:e]  # one entry per document within a column
        if self._nonocc is not None and len(rep):
            scores += float(np.sum(self._nonocc[rep], dtype=np.float64))
        return scores

    def _matched(self, rep: Rep) -> np.ndarray:
        """The rows holding at least one of the query's terms (their columns' entries), ascending.

        A score cannot tell: BM25L and BM25+ give every document the non-occurrence part of each
        query term, and Robertson's clamped idf gives a term in most documents weight 0.
        """
        mask = np.zeros(len(self.doc_ids), dtype=bool)
        for t in rep:
            mask[self._indices[self._indptr[t]:self._indptr[t + 1]]] = True
        return np.flatnonzero(mask)

    def _scores_rows(self, rep: Rep, rows: np.ndarray) -> np.ndarray:
        # the same float64 additions in the same term order as _scores_all, so the numbers are equal
        scores = np.zeros(len(rows), dtype=np.float64)
        for t in rep:
            s, e = self._indptr[t], self._indptr[t + 1]
            col = self._indices[s:e]
            pos = np.minimum(np.searchsorted(col, rows), max(len(col) - 1, 0))
            hit = col[pos] == rows if len(col) else np.zeros(len(rows), bool)
            scores[hit] += self._data[s:e][pos[hit]]
        if self._nonocc is not None and len(rep):
            scores += float(np.sum(self._nonocc[rep], dtype=np.float64))
        return scores

    def score(self, reps: list[Rep], rows: np.ndarray) -> np.ndarray:
        """BM25 scores of documents ``rows`` for each query: ``(len(reps), n_rows)`` float64.

        ``rows`` is one list of rows shared by every query, or one row per query
        (``(len(reps), n_rows)``). The numbers equal those :meth:`top` returns for the same rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        per_query = rows.ndim == 2
        if per_query and len(rows) != len(reps):
            raise ValueError(f"{len(rows)} row lists for {len(reps)} queries")
        out = np.zeros((len(reps), rows.shape[-1]), dtype=np.float64)
        for i, rep in enumerate(reps):
            out[i] = self._scores_rows(rep, rows[i] if per_query else rows)
        return out

    def top(self, reps: list[Rep], k: int, matches_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query, by score descending then row ascending.

        Args:
            reps: queries from :meth:`encode`.
            k: rows per query.
            matches_only: rank only the documents holding at least one query term (as Lucene
                returns only matches); otherwise every document is a candidate, those matching
                no term with the score BM25 gives them (0, or BM25L's and BM25+'s non-occurrence
                part), filling the list in row order.

        Returns:
            ``(rows, scores)``, int64 and float64 arrays of shape ``(len(reps), min(k, n_docs))``;
            with ``matches_only``, a query with fewer matches is padded with row -1 and score -inf.
        """
        n = len(self.doc_ids)
        k = min(k, n)
        rows = np.full((len(reps), k), -1, dtype=np.int64)
        scores = np.full((len(reps), k), -np.inf, dtype=np.float64)
        for i, rep in enumerate(reps):
            s = self._scores_all(rep)
            pool = self._matched(rep) if matches_only else np.arange(n)
            best = pool[top_rows(s[pool][None, :], k)[0][0]]
            rows[i, :len(best)], scores[i, :len(best)] = best, s[best]
        return rows, scores

    def search(self, queries: dict[str, str], k: int) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}`` of the top ``k`` documents, as ir_measures reads a run.

        Only documents holding at least one query term are ranked (``top(matches_only=True)``),
        so a query may get fewer than ``k`` documents or none.
        """
        qids = list(queries)
        rows, scores = self.top(self.encode([queries[q] for q in qids]), k, matches_only=True)
        return run_from_top(qids, rows, scores, self.doc_ids)


# --------------------------------------------------------------------- the cached index


def document_analyzer(ds: Dataset, stem: bool = True, stopwords: bool = True) -> Analyzer:
    """The analyzer of the dataset's document language (card ``languages.document``).

    BM25 analyses queries with it too, whatever their language: see the module docstring.
    """
    return Analyzer((ds.card.get("languages") or {}).get("document"), stem=stem, stopwords=stopwords)


def _stored_key(folder: Path) -> str | None:
    m = folder / "manifest.json"
    return json.loads(m.read_text(encoding="utf-8")).get("key") if m.is_file() else None


def ensure_bm25_index(ds: Dataset, run: Run, analyzer: Analyzer, k1: float = 1.5, b: float = 0.75,
                      method: str = "lucene") -> BM25Searcher:
    """The BM25 index of ``ds``'s corpus in ``<run>/bm25``: hard-linked from an earlier completed
    run with the same key, built otherwise. The key and whether it was reused go to the run's
    manifest under ``bm25``. A second call in the same run (an attack builds each system's
    searcher more than once) loads what the first one stored."""
    check_params(k1, b, method)
    corpus_sha = file_digest(ds.corpus_path)
    key = bm25_key(corpus_sha, analyzer, k1, b, method)
    dest = run.path / INDEX_DIR
    if _stored_key(dest) == key:
        return BM25Searcher.load(dest, analyzer)
    if dest.exists():
        raise ClirkitError("this run already holds a BM25 index with other parameters", path=dest,
                           fix="use one set of bm25_* options per run")
    found = find_stored(run.runs_dir, INDEX_DIR, key)
    if found is not None:
        log.info("reusing BM25 index %s (key %s)", found, key)
        link_tree(found, dest)
        searcher = BM25Searcher.load(dest, analyzer)
        reused = str(found.parent)
    else:
        log.info("building BM25 index (key %s): %s", key, analyzer.describe())
        start = time.perf_counter()
        searcher = BM25Searcher.build(((d, t) for d, t, _ in ds.iter_corpus()), analyzer, k1, b, method)
        seconds = time.perf_counter() - start
        searcher.save(dest, {
            "key": key, "format": FORMAT_VERSION, "dataset": str(ds.path), "corpus_sha256": corpus_sha,
            "analyzer": analyzer.describe(), "k1": k1, "b": b, "method": method, "count": len(searcher.doc_ids),
            "vocabulary": len(searcher._vocab), "build_seconds": round(seconds, 3),
        })
        freeze_tree(dest)
        reused = None
    run.record(bm25={"key": key, "reused_from": reused, "analyzer": analyzer.describe(), "k1": k1, "b": b,
                     "method": method})
    return searcher
