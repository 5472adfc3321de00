"""The retrieval layer: dense search equals brute-force numpy, batched MaxSim equals a naive
loop, re-ranking scores equal exhaustive scores on the candidates, token-ann reports its recall."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from clirkit.retrieval import DenseSearcher, MaxSimSearcher, maxsim_scores, retrieve
from clirkit.retrieval.base import top_rows
from clirkit.retrieval.maxsim import MaxSimRep, PackedDocs, maxsim_bounds, maxsim_packed, maxsim_top
from clirkit.retrieval.store import DenseIndex


def naive_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    if len(q) == 0 or len(d) == 0:
        return -np.inf
    return float(sum(max(float(qi @ dj) for dj in d) for qi in q.astype(np.float64)))


def unit(rng, n, dim=8):
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class FakeEncoder:
    """Texts are 'v<i>' (row i of a fixed table), tokens are rows of another table."""

    name = "fake"

    def __init__(self, vecs, toks):
        self.vecs, self.toks = vecs, toks

    def encode(self, texts, batch_size=64):
        return np.stack([self.vecs[int(t[1:])] for t in texts])

    def encode_tokens(self, texts, batch_size=64):
        return [self.toks[int(t[1:])] for t in texts]


def make_index(rng, lengths, dim=8):
    emb = unit(rng, len(lengths), dim)
    flat = faiss.IndexFlatIP(dim)
    flat.add(emb)
    tokens = unit(rng, int(sum(lengths)), dim).astype(np.float16)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    index = DenseIndex(path=None, manifest={"dim": dim}, doc_ids=[f"d{i}" for i in range(len(lengths))],
                       faiss_index=flat, tokens=tokens, token_offsets=offsets)
    index.__dict__["embeddings"] = emb  # the property reads a file; the test keeps them in memory
    return index, emb


@pytest.fixture(autouse=True)
def _embeddings_property(monkeypatch):
    monkeypatch.setattr(DenseIndex, "embeddings", property(lambda self: self.__dict__["embeddings"]))


def test_maxsim_packed_equals_naive_with_empty_queries_and_documents(monkeypatch):
    rng = np.random.default_rng(0)
    docs = [unit(rng, n) for n in (3, 1, 0, 7, 3, 12, 1)]
    queries = [unit(rng, m) for m in (4, 0, 9, 1)]
    monkeypatch.setattr("clirkit.retrieval.maxsim.MAX_BLOCK", 40)  # many chunks: the loop boundaries matter
    got = maxsim_scores(queries, docs)
    want = np.array([[naive_maxsim(q, d) for d in docs] for q in queries])
    assert np.isneginf(got[1]).all() and np.isneginf(got[:, 2]).all()
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], atol=1e-5)
    assert np.array_equal(np.isfinite(got), finite)
    exact = maxsim_scores(queries, docs, dtype=np.float64)
    np.testing.assert_allclose(exact[finite], want[finite], atol=1e-12)


def test_float64_scores_barely_depend_on_batching():
    # the greedy attack's monotonicity rests on rescoring a pair giving the same score to far
    # below its tolerance (BLAS may round differently by matrix shape, never by 1e-12)
    from clirkit.attack.greedy import GREEDY_TOL

    rng = np.random.default_rng(1)
    docs = [unit(rng, n) for n in (5, 2, 5, 9)]
    queries = [unit(rng, m) for m in (3, 6)]
    together = maxsim_scores(queries, docs, np.float64)
    alone = np.array([maxsim_scores([q], [d], np.float64)[0, 0] for q in queries for d in docs]).reshape(2, 4)
    assert np.abs(together - alone).max() < 1e-12 < GREEDY_TOL


def test_dense_searcher_equals_brute_force():
    rng = np.random.default_rng(2)
    index, emb = make_index(rng, [2] * 40)
    qv = unit(rng, 5)
    s = DenseSearcher(FakeEncoder(qv, None), index)
    rows, scores = s.top(s.encode([f"v{i}" for i in range(5)]), 7)
    want = np.argsort(-(qv @ emb.T), axis=1, kind="stable")[:, :7]
    assert np.array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(qv @ emb.T, want, axis=1), atol=1e-6)
    np.testing.assert_allclose(s.score(s.encode(["v0"]), np.array([9, 3])),
                               [[qv[0].astype(np.float64) @ emb[9], qv[0].astype(np.float64) @ emb[3]]], atol=1e-12)


def test_maxsim_modes_agree_with_naive():
    rng = np.random.default_rng(3)
    lengths = [3, 1, 0, 5, 2, 4, 4, 6] * 5
    index, _ = make_index(rng, lengths)
    qtoks = [unit(rng, 3), unit(rng, 0), unit(rng, 5)]
    enc = FakeEncoder(unit(rng, 3), qtoks)
    texts = {"a": "v0", "b": "v1", "c": "v2"}
    docs = [np.asarray(index.tokens[index.token_offsets[i]:index.token_offsets[i + 1]]) for i in range(len(lengths))]
    full = np.array([[naive_maxsim(q, d) for d in docs] for q in qtoks])

    ex = MaxSimSearcher(enc, index, "exhaustive").search(texts, 6)
    assert ex["b"] == {}  # an empty query retrieves nothing
    best = np.argsort(-full[0], kind="stable")[:6]
    assert list(ex["a"]) == [f"d{i}" for i in best]
    np.testing.assert_allclose(list(ex["a"].values()), full[0, best], atol=1e-5)

    rr = MaxSimSearcher(enc, index, "rerank", rerank_k=10)
    run = rr.search(texts, 100)
    cands, _ = rr.top([MaxSimRep(qtoks[2], "v2", enc.vecs[2])], 100)
    dense = np.argsort(-(enc.vecs[2] @ index.embeddings.T), kind="stable")[:10]
    assert set(run["c"]) == {f"d{i}" for i in dense}  # exactly the dense top 10, rescored
    for d, s in run["c"].items():
        assert s == pytest.approx(full[2, int(d[1:])], abs=1e-5)
    assert set(cands[0].tolist()) == set(dense.tolist()) and rr.search_encodes == 0  # dense vectors given
    rr.top([MaxSimRep(qtoks[2], "v2")], 5)  # the greedy attack's reps: top() encodes the dense vector
    assert rr.search_encodes == 1

    ann = MaxSimSearcher(enc, index, "token-ann")
    run = ann.search(texts, 5)
    rec = ann.record["token_ann"]
    assert 0 <= rec["recall_vs_exhaustive"] <= 1 and rec["recall_queries"] == 3
    for d, s in run["c"].items():
        assert s == pytest.approx(full[2, int(d[1:])], abs=1e-5)


def test_retrieve_drops_identical_ids_after_fetching_one_more():
    rng = np.random.default_rng(4)
    index, emb = make_index(rng, [1] * 6)
    index.doc_ids[0] = "q"
    s = DenseSearcher(FakeEncoder(emb, None), index)  # query v0 is document 0 itself
    run = retrieve(s, {"q": "v0"}, 3, ignore_identical_ids=True)
    assert "q" not in run["q"] and len(run["q"]) == 3
    # a query whose own document is not among its k + 1 best still gets exactly k, the best k
    far = int(np.argmin(emb @ emb[1]))  # the document least like query v1
    index.doc_ids[far] = "far"
    both = retrieve(s, {"q": "v0", "far": "v1"}, 3, ignore_identical_ids=True)
    assert both["q"] == run["q"]
    assert list(both["far"]) == list(s.search({"far": "v1"}, 3)["far"]) and "far" not in both["far"]
    # a corpus of 6 with k = 5: 5 results once its own is dropped, and never more than the corpus allows
    assert len(retrieve(s, {"q": "v0"}, 5, ignore_identical_ids=True)["q"]) == 5
    assert len(retrieve(s, {"q": "v0"}, 9, ignore_identical_ids=True)["q"]) == 5


def test_top_rows_breaks_ties_by_column_at_the_cut():
    scores = np.array([[1.0, 3.0, 2.0, 2.0, 2.0]])
    rows, vals = top_rows(scores, 3)
    assert rows.tolist() == [[1, 2, 3]] and vals.tolist() == [[3.0, 2.0, 2.0]]


def test_packed_docs_select_rows_in_given_order():
    rng = np.random.default_rng(5)
    toks = unit(rng, 10)
    offsets = np.array([0, 2, 5, 10])
    q = unit(rng, 3)
    packed = PackedDocs.from_offsets(toks, offsets, np.array([2, 0]))
    got = maxsim_packed([q], packed)[0]
    np.testing.assert_allclose(got, [naive_maxsim(q, toks[5:10]), naive_maxsim(q, toks[0:2])], atol=1e-5)


def naive_top(queries, docs, k):
    """Reference top k: float64 naive MaxSim of every pair, stable sort (ties by row)."""
    full = np.array([[naive_maxsim(q, d) for d in docs] for q in queries])
    best = np.argsort(-full, axis=1, kind="stable")[:, :min(k, len(docs))]
    return full, best


@pytest.mark.parametrize("k", [1, 3, 10, 40, 500])
def test_maxsim_top_equals_naive_top_k(k):
    rng = np.random.default_rng(6)
    docs = [unit(rng, n, 16) for n in rng.integers(0, 9, 60)]  # some documents are empty
    docs[7] = docs[3].copy()  # an exact tie, broken by row as a full sort breaks it
    docs[12] = np.zeros((0, 16), np.float32)
    queries = [unit(rng, m, 16) for m in (5, 0, 1, 12)]
    full, best = naive_top(queries, docs, k)
    rows, scores, scored = maxsim_top(queries, PackedDocs.from_list(docs), k, batch=3)
    assert rows.shape == (4, min(k, len(docs)))
    assert (rows[1] == -1).all() and np.isneginf(scores[1]).all()  # an empty query retrieves nothing
    for i in (0, 2, 3):
        assert rows[i].tolist() == best[i].tolist()
        finite = np.isfinite(full[i, best[i]])
        np.testing.assert_allclose(scores[i][finite], full[i, best[i]][finite], atol=1e-5)
        assert np.isneginf(scores[i][~finite]).all()  # k beyond the non-empty documents: empty ones last
    if k <= 3:
        assert scored[0] < 20  # the bounds prune: most documents are never scored in float32


def _gamma(n: int) -> float:
    u = 2.0 ** -24
    return n * u / (1 - n * u)


@pytest.mark.parametrize("bf16", [True, False])
def test_maxsim_bounds_hold_for_every_float32_rescoring(monkeypatch, bf16):
    """The bounds must cover the float32 re-scoring's rounding too (Higham's gamma_n), or a document
    whose float32 score ties the k-th lower bound is pruned. Long tokens make that error large."""
    import torch

    if not bf16:  # the float32 pass (CPUs without native bfloat16), whose bounds are the tightest
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    rng = np.random.default_rng(8)
    dim = 32
    docs = [100 * unit(rng, n, dim) for n in (1, 4, 0, 9, 4, 6)]
    queries = [100 * unit(rng, m, dim) for m in (3, 12, 1)]
    full = np.array([[naive_maxsim(q, d) for d in docs] for q in queries])
    lower, upper = maxsim_bounds(queries, PackedDocs.from_list(docs).low(), len(docs))
    big = max(float(np.linalg.norm(d, axis=1).max()) for d in docs if len(d))
    for i, q in enumerate(queries):
        norms = np.linalg.norm(q.astype(np.float64), axis=1)
        m = len(q)
        # the worst float32 error of the re-scoring: inner products, then the sum of m token maxima
        worst = float(((_gamma(dim) + _gamma(m - 1) * (1 + _gamma(dim))) * norms * big).sum())
        ok = np.isfinite(full[i])
        assert (lower[i][ok] <= full[i][ok] - worst).all() and (full[i][ok] + worst <= upper[i][ok]).all()
    # and the top k is still exactly float32 MaxSim's, ties broken by row
    docs[5] = docs[3].copy()
    packed = PackedDocs.from_list(docs)
    want_rows, want_scores = top_rows(maxsim_packed(queries, packed), 2)
    rows, scores, _ = maxsim_top(queries, packed, 2)
    assert rows.tolist() == want_rows.tolist()
    np.testing.assert_array_equal(scores, want_scores)


def test_maxsim_bounds_hold_for_the_exact_scores():
    rng = np.random.default_rng(7)
    docs = [unit(rng, n, 32) for n in (1, 4, 0, 9, 4)]
    queries = [unit(rng, m, 32) for m in (3, 7)]
    full = np.array([[naive_maxsim(q, d) for d in docs] for q in queries])
    lower, upper = maxsim_bounds(queries, PackedDocs.from_list(docs).low(), len(docs))
    finite = np.isfinite(full)
    assert np.array_equal(np.isfinite(lower), finite)
    assert (lower[finite] <= full[finite]).all() and (full[finite] <= upper[finite]).all()
    assert (upper[finite] - lower[finite]).max() < 0.1  # and they are tight enough to prune
