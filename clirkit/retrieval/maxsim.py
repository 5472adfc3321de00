"""ColBERT late interaction (MaxSim), written once for eval, both attacks and distillation's dev
evaluation.

``score(q, d) = sum over q's tokens of the max inner product with d's tokens`` (Khattab &
Zaharia, "ColBERT", SIGIR 2020). Computing it for many documents is a few large matrix
products: documents are grouped by token count, so each group is a dense ``[n, L, dim]``
tensor with no padding and no mask, queries are stacked, and one product per (query batch,
document chunk) gives every similarity, reduced by a contiguous max over ``L`` and a sum over
each query's tokens. Chunks bound the memory (:data:`MAX_BLOCK` floats per product).

Three ways to pick the documents scored (``maxsim_mode``):

- ``exhaustive``: the exact top ``k`` of every document (:func:`maxsim_top`): a bfloat16 pass
  over the whole corpus bounds every score from both sides (its rounding error is bounded
  rigorously), and only the documents whose upper bound reaches the ``k``-th best lower bound
  are scored exactly in float32. The result equals scoring every document in float32.
- ``rerank``: the dense (single-vector) top ``rerank_k``, re-scored exactly.
- ``token-ann``: the documents of each query token's nearest document tokens in an approximate
  FAISS index over all document tokens (ColBERTv2/PLAID's candidate generation, Santhanam et
  al., NAACL 2022 and CIKM 2022), re-scored exactly. Its recall against exhaustive MaxSim on a
  sample of queries is measured and reported (:attr:`MaxSimSearcher.record`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clirkit.errors import ClirkitError
from clirkit.retrieval.base import Rep, RunDict, Searcher, run_from_top, top_rows
from clirkit.retrieval.dense import faiss_top

if TYPE_CHECKING:
    from clirkit.models import Encoder
    from clirkit.retrieval.store import DenseIndex

log = logging.getLogger("clirkit")
#: floats in one similarity block (query tokens x document tokens): 64 MB in float32
MAX_BLOCK = 1 << 24
#: corpora up to this size are searched exhaustively under maxsim_mode "auto"
EXHAUSTIVE_MAX_DOCS = 20_000
#: token-ann: nearest document tokens fetched per query token, inverted lists probed
TOKEN_NEIGHBOURS = 64
TOKEN_NPROBE = 16
#: token-ann: queries of the first search re-scored exhaustively to measure the recall
RECALL_SAMPLE = 16


@dataclass
class PackedDocs:
    """Documents' token embeddings grouped by token count: ``groups`` holds, per count ``L``, the
    documents' positions (in the order given) and their tokens as one ``[n, L, dim]`` array."""

    groups: list[tuple[np.ndarray, np.ndarray]]
    n_docs: int
    dim: int
    _low: LowPrecision | None = field(default=None, repr=False)

    def low(self) -> LowPrecision:
        """The bfloat16 copy :func:`maxsim_top` filters with, built on first use."""
        if self._low is None:
            self._low = LowPrecision.build(self)
        return self._low

    @classmethod
    def from_offsets(cls, tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None = None,
                     dtype=np.float32) -> PackedDocs:
        """Pack documents ``rows`` (all by default) of a concatenated token array with ``offsets``."""
        rows = np.arange(len(offsets) - 1) if rows is None else np.asarray(rows, dtype=np.int64)
        starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
        groups = []
        for length in np.unique(lengths[lengths > 0]):
            pos = np.flatnonzero(lengths == length)
            take = (starts[pos][:, None] + np.arange(length)).ravel()
            order = np.argsort(take, kind="stable")  # memmaps read faster in file order
            block = np.empty((len(take), tokens.shape[1]), dtype=dtype)
            block[order] = tokens[take[order]]
            groups.append((pos, block.reshape(len(pos), int(length), -1)))
        return cls(groups, len(rows), tokens.shape[1])

    @classmethod
    def from_list(cls, docs: list[np.ndarray], dtype=np.float32) -> PackedDocs:
        """Pack a list of ``[L_i, dim]`` arrays."""
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        dim = next((d.shape[1] for d in docs if d.ndim == 2), 0)
        flat = np.concatenate([np.asarray(d, dtype=dtype).reshape(-1, dim) for d in docs]) if docs else \
            np.zeros((0, dim), dtype)
        return cls.from_offsets(flat, np.concatenate(([0], np.cumsum(lengths))), dtype=dtype)


def maxsim_packed(queries: list[np.ndarray], docs: PackedDocs, dtype=np.float32) -> np.ndarray:
    """``len(queries) x docs.n_docs`` MaxSim scores; ``-inf`` for an empty query or document."""
    out = np.full((len(queries), docs.n_docs), -np.inf, dtype=dtype)
    live = [i for i, q in enumerate(queries) if len(q)]
    if not live or not docs.groups:
        return out
    lengths = np.array([len(queries[i]) for i in live])
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    q = np.concatenate([np.asarray(queries[i], dtype=dtype) for i in live])
    live_idx = np.array(live)[:, None]
    for pos, block in docs.groups:
        n, length, dim = block.shape
        step = max(1, MAX_BLOCK // (len(q) * length))
        for s in range(0, n, step):
            b = block[s:s + step]
            sims = q @ b.reshape(-1, dim).T
            best = sims.reshape(len(q), len(b), length).max(axis=2)
            out[live_idx, pos[s:s + step]] = np.add.reduceat(best, starts, axis=0)
    return out


def maxsim_scores(q_tokens: list[np.ndarray], doc_tokens: list[np.ndarray], dtype=np.float32) -> np.ndarray:
    """MaxSim of every query against every document, both given as lists of token matrices.

    Args:
        q_tokens: per query a ``[m_i, dim]`` array (L2-normalised for cosine MaxSim).
        doc_tokens: per document a ``[L_j, dim]`` array.
        dtype: float32, or float64 for exactly reproducible scores.

    Returns:
        ``[len(q_tokens), len(doc_tokens)]`` scores; ``-inf`` where a query or document is empty.
    """
    return _batched(q_tokens, PackedDocs.from_list(doc_tokens, dtype), dtype)


def _batched(queries: list[np.ndarray], docs: PackedDocs, dtype) -> np.ndarray:
    """:func:`maxsim_packed` over query batches small enough for the output and blocks."""
    out = np.full((len(queries), docs.n_docs), -np.inf, dtype=dtype)
    per_batch = max(1, min(256, (MAX_BLOCK * 2) // max(1, docs.n_docs)))
    for s in range(0, len(queries), per_batch):
        out[s:s + per_batch] = maxsim_packed(queries[s:s + per_batch], docs, dtype)
    return out


#: unit roundoff of a bfloat16 product's output, rounded to nearest (2^-9), doubled for safety
BF16_OUT = 2.0 ** -8
#: float32 unit roundoff, for the accumulation inside the bfloat16 product
F32_EPS = 2.0 ** -24


@dataclass
class LowPrecision:
    """A corpus in bfloat16, position-major (per length ``L``: ``[L, dim, n]``, so the max over a
    document's tokens is an elementwise max of ``L`` products, never a strided reduction),
    with the largest token norm and the largest bfloat16 rounding error norm of its tokens."""

    groups: list[tuple[np.ndarray, object]]
    dtype: object
    max_norm: float
    max_err: float

    @classmethod
    def build(cls, docs: PackedDocs) -> LowPrecision:
        import torch

        # without native bf16 products (AVX512-BF16/AMX) torch emulates them slower than float32
        dtype = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
        groups, max_norm, max_err = [], 0.0, 0.0
        for pos, block in docs.groups:
            t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
            low = t.to(dtype)
            max_norm = max(max_norm, float(t.norm(dim=2).max()))
            max_err = max(max_err, float((t - low.float()).norm(dim=2).max()))
            groups.append((pos, low.permute(1, 2, 0).contiguous()))
        return cls(groups, dtype, max_norm, max_err)


def packed_tokens(index: DenseIndex) -> PackedDocs:
    """The index's document token embeddings as float32, grouped by length, built once per loaded
    index: exhaustive MaxSim reads the whole corpus for every query batch, and converting the
    float16 memory map each time would cost more than the scoring."""
    if "packed" not in index.derived:
        if index.tokens is None or index.token_offsets is None:
            raise ClirkitError("this index has no token embeddings", fix="index with --scoring maxsim")
        index.derived["packed"] = PackedDocs.from_offsets(index.tokens, index.token_offsets)
    return index.derived["packed"]


def maxsim_bounds(queries: list[np.ndarray], low: LowPrecision, n_docs: int,
                  chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of every query's MaxSim with every document, from one bfloat16 pass.

    With ``q = q~ + e_q`` and ``d = d~ + e_d`` (their bfloat16 roundings and errors),
    ``|<q, d> - <q~, d~>| <= |q~| |e_d| + |e_q| |d|``; the product accumulates exact bfloat16
    products in float32 (error ``<= 384 eps32 |q~| |d~|``) and rounds its output to bfloat16
    (``<= 2^-8 |output|``, which is monotone in the output, so it bounds the max over a document's
    tokens as well). Summed over the query's tokens (in float64), the bounds hold for the exact
    score. They are widened by the rounding error of the float32 re-scoring (:func:`_rescore`),
    so that they hold for the float32 MaxSim the top ``k`` is ranked by, and a document whose
    float32 score ties the ``k``-th is never pruned: each token's inner product is off by at most
    ``gamma_dim |q_i| max|d|`` and the float32 sum of the ``m`` token maxima by at most
    ``gamma_(m-1) sum |max_i|``, with ``gamma_n = n u / (1 - n u) <= 1.01 n u`` (Higham, "Accuracy
    and Stability of Numerical Algorithms", 2002, ch. 3).

    Returns:
        ``(lower, upper)``, each ``[len(queries), n_docs]`` float64; ``-inf`` for empty queries or
        documents.
    """
    import torch

    lower = np.full((len(queries), n_docs), -np.inf, dtype=np.float64)
    upper = lower.copy()
    live = [i for i, q in enumerate(queries) if len(q)]
    if not live or not low.groups:
        return lower, upper
    lengths = np.array([len(queries[i]) for i in live])
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    q = torch.from_numpy(np.concatenate([np.asarray(queries[i], dtype=np.float32) for i in live]))
    ql = q.to(low.dtype)
    q_norm = ql.float().norm(dim=1).double().numpy()
    q_err = (q - ql.float()).norm(dim=1).double().numpy()
    dim = q.shape[1]
    out_eps = BF16_OUT if low.dtype == torch.bfloat16 else F32_EPS
    # |exact - this pass| per query token: rounding of the inputs, float32 accumulation
    per_token = q_norm * low.max_err + q_err * low.max_norm + 1.01 * dim * F32_EPS * q_norm * low.max_norm
    slack = np.add.reduceat(per_token, starts)[:, None] + rescore_margin(
        [q.numpy()[a:a + m] for a, m in zip(starts, lengths)], low.max_norm)[:, None]
    live_idx = np.array(live)[:, None]
    # One thread: the pass is many mid-sized bfloat16 products and elementwise maxima, which on a
    # 2-core CPU ran 5-10x slower with 2 torch threads than with 1 (bench/bench_maxsim.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _bound_pass(ql, low, starts, slack, live_idx, out_eps, chunk, lower, upper)
    finally:
        torch.set_num_threads(threads)
    return lower, upper


def rescore_margin(queries: list[np.ndarray], max_doc_norm: float) -> np.ndarray:
    """Per query, a bound on how far :func:`_rescore`'s float32 MaxSim can be from the exact one
    against any document whose tokens have norms ``<= max_doc_norm``.

    ``sum_i (gamma_dim + gamma_(m-1) (1 + gamma_dim)) |q_i| max|d| <= 1.01 u (dim + m) sum_i |q_i| max|d|``
    for ``m`` query tokens ``q_i`` of dimension ``dim`` and float32 unit roundoff ``u`` (Higham
    2002, ch. 3; the factor 1.01 covers ``gamma_n <= 1.01 n u`` for ``n u <= 0.0099``).
    """
    out = np.zeros(len(queries), dtype=np.float64)
    for i, q in enumerate(queries):
        if len(q):
            q = np.asarray(q, dtype=np.float64)
            out[i] = 1.01 * F32_EPS * (q.shape[1] + len(q)) * np.linalg.norm(q, axis=1).sum() * max_doc_norm
    return out


def _bound_pass(ql, low: LowPrecision, starts: np.ndarray, slack: np.ndarray, live_idx: np.ndarray,
                out_eps: float, chunk: int, lower: np.ndarray, upper: np.ndarray) -> None:
    """:func:`maxsim_bounds`' product and max over every document group, filling ``lower``/``upper``."""
    import torch

    with torch.inference_mode():
        for pos, block in low.groups:
            for s in range(0, block.shape[2], chunk):
                best = ql @ block[0, :, s:s + chunk]
                for t in range(1, block.shape[0]):
                    torch.maximum(best, ql @ block[t, :, s:s + chunk], out=best)
                best = best.float().numpy().astype(np.float64)  # float64 sums: no rounding to bound
                approx = np.add.reduceat(best, starts, axis=0)
                err = slack + out_eps * np.add.reduceat(np.abs(best), starts, axis=0)
                lower[live_idx, pos[s:s + chunk]] = approx - err
                upper[live_idx, pos[s:s + chunk]] = approx + err


def maxsim_top(queries: list[np.ndarray], docs: PackedDocs, k: int,
               batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's exact top ``k`` by float32 MaxSim over ``docs``, without scoring every document.

    A threshold algorithm (Fagin, Lotem & Naor, "Optimal aggregation algorithms for middleware",
    JCSS 2003) over the bounds of :func:`maxsim_bounds`: a document whose upper bound is below the
    ``k``-th largest lower bound cannot be in the top ``k``; the rest are scored in float32 and
    ranked as :func:`~clirkit.retrieval.base.top_rows` ranks the full score matrix.

    Returns:
        ``(rows, scores, n_scored)``: rows and scores of shape ``[len(queries), min(k, n_docs)]``
        (empty queries: rows ``-1``, scores ``-inf``), and per query the documents scored exactly.
    """
    width = min(k, docs.n_docs)
    rows = np.full((len(queries), width), -1, dtype=np.int64)
    scores = np.full((len(queries), width), -np.inf, dtype=np.float32)
    scored = np.zeros(len(queries), dtype=np.int64)
    if width == 0:
        return rows, scores, scored
    low = docs.low()
    for b in range(0, len(queries), batch):
        lower, upper = maxsim_bounds(queries[b:b + batch], low, docs.n_docs)
        tau = np.partition(lower, docs.n_docs - width, axis=1)[:, docs.n_docs - width]
        for i, q in enumerate(queries[b:b + batch], start=b):
            if len(q) == 0:
                continue
            keep = upper[i - b] >= tau[i - b]
            exact = _rescore(np.asarray(q, dtype=np.float32), docs, keep)
            r, sc = top_rows(exact[None], width)
            rows[i], scores[i], scored[i] = r[0], sc[0], int(keep.sum())
    return rows, scores, scored


def _rescore(q: np.ndarray, docs: PackedDocs, keep: np.ndarray) -> np.ndarray:
    """float32 MaxSim of one query with the documents ``keep`` (a mask); ``-inf`` elsewhere."""
    out = np.full(docs.n_docs, -np.inf, dtype=np.float32)
    for pos, block in docs.groups:
        sel = np.flatnonzero(keep[pos])
        if len(sel) == 0:
            continue
        part = block if len(sel) == len(pos) else block[sel]
        n, length, dim = part.shape
        step = max(1, MAX_BLOCK // (len(q) * length))
        for s in range(0, n, step):
            b = part[s:s + step]
            best = (q @ b.reshape(-1, dim).T).reshape(len(q), len(b), length).max(axis=2)
            out[pos[sel[s:s + step]]] = best.sum(axis=0)
    return out


@dataclass
class MaxSimRep:
    """A query for MaxSim: its token vectors, its (translated) text, and its dense vector when
    encoded (re-ranking needs it for the candidates)."""

    tokens: np.ndarray
    text: str
    dense: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens)


class TokenANN:
    """An inverted-file FAISS index over every document token (Jégou, Douze & Schmid, "Product
    quantization for nearest neighbor search", TPAMI 2011, for IVF); a query token's nearest
    document tokens name candidate documents, as in ColBERTv2/PLAID."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seed: int = 0) -> None:
        import faiss

        n_tok, dim = tokens.shape
        nlist = max(1, min(65536, int(4 * math.sqrt(n_tok))))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n_tok, size=min(n_tok, 64 * nlist), replace=False))
        self.index.train(np.ascontiguousarray(tokens[sample], dtype=np.float32))
        for s in range(0, n_tok, 1 << 18):
            self.index.add(np.ascontiguousarray(tokens[s:s + (1 << 18)], dtype=np.float32))
        self.index.nprobe = min(nlist, TOKEN_NPROBE)
        self.doc_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        self.params = {"nlist": nlist, "nprobe": self.index.nprobe, "neighbours": TOKEN_NEIGHBOURS}

    def candidates(self, q_tokens: np.ndarray) -> np.ndarray:
        """Rows of the documents holding any query token's nearest document tokens."""
        _, ids = self.index.search(np.ascontiguousarray(q_tokens, dtype=np.float32), TOKEN_NEIGHBOURS)
        return np.unique(self.doc_of[ids[ids >= 0]])


class MaxSimSearcher(Searcher):
    """Late-interaction retrieval over an index's stored document token embeddings.

    Args:
        encoder: the query encoder.
        index: an index built with ``scoring="maxsim"`` (it holds token embeddings).
        mode: ``exhaustive``, ``rerank``, ``token-ann``, or ``auto`` (exhaustive up to
            :data:`EXHAUSTIVE_MAX_DOCS` documents, rerank beyond).
        rerank_k: dense candidates re-ranked in ``rerank`` mode.
        batch_size: encoder batch size; ``None``: each call's texts in one batch.
    """

    def __init__(self, encoder: Encoder, index: DenseIndex, mode: str = "auto", rerank_k: int = 100,
                 batch_size: int | None = 64, name: str | None = None) -> None:
        if index.tokens is None or index.token_offsets is None:
            raise ClirkitError("this index has no token embeddings", fix="index with --scoring maxsim")
        if mode == "auto":
            mode = "exhaustive" if len(index.doc_ids) <= EXHAUSTIVE_MAX_DOCS else "rerank"
        self.encoder, self.index, self.mode, self.rerank_k = encoder, index, mode, rerank_k
        self.batch_size = batch_size
        self.doc_ids = index.doc_ids
        self.name = name or encoder.name
        self.search_encodes = 0
        self.record: dict = {}
        self._ann: TokenANN | None = None
        self.scored = np.zeros(0, dtype=np.int64)

    def _bs(self, n: int) -> int:
        return self.batch_size or max(1, n)

    def encode(self, texts: list[str]) -> list[Rep]:
        tokens = self.encoder.encode_tokens(texts, batch_size=self._bs(len(texts)))
        return [MaxSimRep(t, text) for t, text in zip(tokens, texts)]

    def _dense(self, reps: list[MaxSimRep]) -> np.ndarray:
        missing = [r for r in reps if r.dense is None]
        if missing:
            self.search_encodes += len(missing)
            for r, e in zip(missing, self.encoder.encode([r.text for r in missing],
                                                         batch_size=self.batch_size or 64)):
                r.dense = e
        return np.stack([r.dense for r in reps])

    def score(self, reps: list[Rep], rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        packed = PackedDocs.from_offsets(self.index.tokens, self.index.token_offsets, rows, np.float64)
        return _batched([r.tokens for r in reps], packed, np.float64)

    def _rescore(self, reps: list[MaxSimRep], cands: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact MaxSim of each query over its own candidate rows; the best ``k``."""
        width = min(k, max((len(c) for c in cands), default=0))
        rows = np.full((len(reps), width), -1, dtype=np.int64)
        scores = np.full((len(reps), width), -np.inf, dtype=np.float32)
        for i, (rep, c) in enumerate(zip(reps, cands)):
            if len(rep) == 0 or len(c) == 0:
                continue
            c = np.sort(c)
            s = maxsim_packed([rep.tokens], PackedDocs.from_offsets(self.index.tokens, self.index.token_offsets, c))
            r, sc = top_rows(s, width)
            rows[i, :r.shape[1]], scores[i, :r.shape[1]] = c[r[0]], sc[0]
        return rows, scores

    def top(self, reps: list[Rep], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "exhaustive":
            rows, scores, scored = maxsim_top([r.tokens for r in reps], packed_tokens(self.index), k)
            self.scored = scored  # documents scored exactly per query (the bench reports the pruning)
            return rows, scores
        if self.mode == "rerank":
            cand_rows, _ = faiss_top(self.index, self._dense(reps), self.rerank_k)
            return self._rescore(reps, [c[c >= 0] for c in cand_rows], k)
        if self.mode == "token-ann":
            ann = self.token_ann()
            return self._rescore(reps, [ann.candidates(r.tokens) if len(r) else np.zeros(0, np.int64)
                                        for r in reps], k)
        raise ValueError(f"unknown maxsim mode {self.mode!r}")

    def token_ann(self) -> TokenANN:
        if self._ann is None:
            log.info("building the token index over %d document tokens", len(self.index.tokens))
            self._ann = TokenANN(self.index.tokens, self.index.token_offsets)
        return self._ann

    def search(self, queries: dict[str, str], k: int) -> RunDict:
        qids = list(queries)
        reps = self.encode([queries[q] for q in qids])
        if self.mode == "rerank":  # the dense vectors in one batched pass, as a dense search would
            for r, e in zip(reps, self.encoder.encode([r.text for r in reps], batch_size=self._bs(len(reps)))):
                r.dense = e
        rows, scores = self.top(reps, k)
        if self.mode == "token-ann" and "token_ann" not in self.record:
            self.record["token_ann"] = {**self.token_ann().params,
                                        **token_ann_recall(self, reps[:RECALL_SAMPLE], rows[:RECALL_SAMPLE], k)}
        return run_from_top(qids, rows, scores, self.doc_ids)


def token_ann_recall(searcher: MaxSimSearcher, reps: list[MaxSimRep], rows: np.ndarray, k: int) -> dict:
    """Recall@k of ``rows`` (token-ann results) against exhaustive MaxSim, over these queries."""
    exact, _ = top_rows(_batched([r.tokens for r in reps], packed_tokens(searcher.index), np.float32), k)
    hits = [len(set(a[a >= 0].tolist()) & set(b.tolist())) / max(1, len(b)) for a, b in zip(rows, exact)]
    return {"recall_vs_exhaustive": float(np.mean(hits)) if hits else float("nan"), "recall_at": int(exact.shape[1]),
            "recall_queries": len(hits)}
