import json
import logging
import math
import os
import unicodedata

import numpy as np
import pytest

from clirkit import analysis
from clirkit.analysis import Analyzer, tokenize
from clirkit.config import IndexConfig
from clirkit.data.formats import load_dataset
from clirkit.errors import ClirkitError
from clirkit.retrieval.bm25 import BM25Searcher, document_analyzer, ensure_bm25_index
from clirkit.rundir import read_json, start_run

TOY = [("t1", "apple banana apple"), ("t2", "banana cherry"), ("t3", "apple cherry cherry date elder")]


def lucene_bm25(docs: list[list[str]], query: list[str], k1: float, b: float) -> list[float]:
    """Lucene's BM25 written out from the formula, independently of bm25s.

    Lucene 8+ (LUCENE-8563) and bm25s's "lucene" drop the constant factor (k1 + 1) of the
    classic numerator tf * (k1 + 1): the ranking is the same, the scores are divided by k1 + 1.
    """
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for d in docs:
        s = 0.0
        for t in query:
            df = sum(t in doc for doc in docs)
            tf = d.count(t)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def _plain() -> Analyzer:
    return Analyzer("en", stem=False, stopwords=False)


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (2.0, 0.0)])
def test_scores_equal_hand_computed_lucene_bm25(k1, b):
    searcher = BM25Searcher.build(TOY, _plain(), k1=k1, b=b, show_progress=False)
    tokens = [t.split() for _, t in TOY]
    for query in ("apple", "cherry date", "apple banana cherry", "banana banana"):
        expected = lucene_bm25(tokens, query.split(), k1, b)
        got = searcher.score(searcher.encode([query]), np.arange(3))[0]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_k1_and_b_change_the_scores():
    reps = lambda s: s.encode(["apple cherry"])  # noqa: E731
    base = BM25Searcher.build(TOY, _plain(), show_progress=False)
    for other in (BM25Searcher.build(TOY, _plain(), k1=0.5, show_progress=False),
                  BM25Searcher.build(TOY, _plain(), b=0.0, show_progress=False)):
        a, c = base.score(reps(base), np.arange(3)), other.score(reps(other), np.arange(3))
        assert np.abs(a - c).max() > 1e-3
    assert base.name != BM25Searcher.build(TOY, _plain(), k1=0.5, show_progress=False).name


def test_score_equals_top_and_matches_bm25s():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    docs = [(f"d{i}", " ".join(rng.choice(words, size=rng.integers(1, 15)))) for i in range(300)]
    searcher = BM25Searcher.build(docs, _plain(), show_progress=False)
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(20)] + ["w1 w1 w2", "nothing here"]
    reps = searcher.encode(queries)
    rows, scores = searcher.top(reps, 25)
    assert rows.shape == scores.shape == (len(queries), 25) and scores.dtype == np.float64
    np.testing.assert_array_equal(searcher.score(reps, rows), scores)  # per-query rows, bit-equal
    for i, rep in enumerate(reps):
        np.testing.assert_array_equal(searcher.score([rep], rows[i])[0], scores[i])
        full = searcher.score([rep], np.arange(len(docs)))[0]
        # sorted by score descending, ties by row ascending, and nothing better left out
        assert all((a > c) or (a == c and r < s) for a, c, r, s in
                   zip(scores[i], scores[i][1:], rows[i], rows[i][1:], strict=False))
        assert full.max() == scores[i][0] and np.sort(full)[::-1][24] == scores[i][-1]
        np.testing.assert_allclose(full, searcher.retriever.get_scores(queries[i].split()), rtol=1e-6)
    assert not scores[-1].any() and list(rows[-1]) == list(range(25))  # no match: zeros in row order
    assert searcher.search({"q": "nothing here"}, 10) == {"q": {}}


def test_beir5_ranks_d1_first_and_reuses_the_stored_index(beir5, tmp_path, monkeypatch):
    ds = load_dataset(beir5)
    analyzer = document_analyzer(ds)
    assert analyzer.describe()["stemmer"] == "snowball:english"
    cfg = IndexConfig(dataset=beir5, runs_dir=tmp_path / "runs")
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        first = ensure_bm25_index(ds, run, analyzer, k1=1.2, b=0.75)
        run_a = run.final
    ranked = first.search(ds.queries, 5)
    assert next(iter(ranked["q1"])) == "d1"
    assert max(ranked["q2"], key=ranked["q2"].get) == "d4"
    manifest = read_json(run_a / "bm25" / "manifest.json")
    assert manifest["k1"] == 1.2 and manifest["method"] == "lucene" and manifest["analyzer"] == analyzer.describe()

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt instead of reused")

    monkeypatch.setattr(BM25Searcher, "build", no_build)
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        second = ensure_bm25_index(ds, run, analyzer, k1=1.2, b=0.75)
        run_b = run.final
    assert read_json(run_b / "manifest.json")["bm25"]["reused_from"] == str(run_a)
    assert os.stat(run_a / "bm25" / "doc_ids.txt").st_ino == os.stat(run_b / "bm25" / "doc_ids.txt").st_ino
    assert second.search(ds.queries, 5) == ranked
    # other parameters are another index: it must be built (and build is disabled here)
    with pytest.raises(AssertionError, match="rebuilt"), start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        ensure_bm25_index(ds, run, analyzer, k1=0.9, b=0.75)


def test_document_language_analyses_translated_queries(beir5):
    card = json.loads((beir5 / "dataset.json").read_text(encoding="utf-8"))
    card["languages"] = {"query": "tl", "document": "en"}
    (beir5 / "dataset.json").write_text(json.dumps(card), encoding="utf-8")
    assert document_analyzer(load_dataset(beir5)).stemmer_name == "english"


def test_english_stemming_and_no_tagalog_stemmer_with_one_warning(caplog, monkeypatch):
    docs = [("a", "He runs every morning."), ("b", "She walks slowly.")]
    stemmed = BM25Searcher.build(docs, Analyzer("en"), show_progress=False)
    assert list(stemmed.search({"q": "running"}, 2)["q"]) == ["a"]
    unstemmed = BM25Searcher.build(docs, Analyzer("en", stem=False), show_progress=False)
    assert unstemmed.search({"q": "running"}, 2) == {"q": {}}

    monkeypatch.setattr(analysis, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="clirkit"):
        tl = Analyzer("tl")
        Analyzer("tgl-PH", stem=True)
        Analyzer("tl")
    assert tl.stemmer_name is None and tl.describe()["stemmer"] is None and tl.describe()["stopwords"] is None
    assert tl("Tumatakbo ang mga bata") == ["tumatakbo", "ang", "mga", "bata"]
    warnings = [r.getMessage() for r in caplog.records if "stemmer" in r.getMessage()]
    assert warnings == ["no Snowball stemmer for language 'tl': BM25 terms are not stemmed",
                        "no Snowball stemmer for language 'tgl': BM25 terms are not stemmed"]


def test_language_codes_map_to_snowball():
    assert Analyzer("fr").stemmer_name == Analyzer("fra").stemmer_name == "french"
    assert Analyzer("pt-BR").stemmer_name == "portuguese" and Analyzer("ru")("бегущие")[0] != "бегущие"
    assert Analyzer("sw", stem=False).stemmer_name is None
    assert Analyzer("en")("The cats are running") == ["cat", "run"]  # stopwords from bm25s, Porter2


def test_tokenise_any_script():
    assert tokenize("کتاب\u200cها را خواندم.") == ["کتاب\u200cها", "را", "خواندم"]  # ZWNJ stays inside
    vi = "Tôi yêu tiếng Việt!"
    assert tokenize(vi) == tokenize(unicodedata.normalize("NFD", vi)) == ["tôi", "yêu", "tiếng", "việt"]
    assert tokenize("Москва — СТОЛИЦА") == ["москва", "столица"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs and virama inside the word
    assert tokenize("我爱北京 한국어 ＡＢＣ") == ["我", "爱", "北", "京", "한국어", "abc"]  # NFKC folds full width


def test_user_errors():
    with pytest.raises(ClirkitError, match="unknown BM25 variant"):
        BM25Searcher.build(TOY, _plain(), method="bm26", show_progress=False)
    with pytest.raises(ClirkitError, match="b must be"):
        BM25Searcher.build(TOY, _plain(), b=1.5, show_progress=False)
    with pytest.raises(ClirkitError, match="empty"):
        BM25Searcher.build([], _plain(), show_progress=False)
