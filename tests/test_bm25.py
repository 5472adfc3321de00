import json
import logging
import math
import os
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clirkit import analysis
from clirkit.analysis import Analyzer, tokenize
from clirkit.config import IndexConfig
from clirkit.data.formats import load_dataset
from clirkit.errors import ClirkitError
from clirkit.retrieval.bm25 import INDEX_DIR, BM25Searcher, document_analyzer, ensure_bm25_index
from clirkit.rundir import find_stored, read_json, start_run

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


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_a_document_sharing_no_query_term_is_never_ranked(method):
    docs = [("a", "cat dog"), ("b", "cat"), ("c", "cat fish"), ("d", "bird")]
    searcher = BM25Searcher.build(docs, _plain(), method=method, show_progress=False)
    assert "" not in searcher.retriever.vocab_dict  # no empty token: every column is a real term
    run = searcher.search({"cat": "cat", "fish": "fish", "none": "zebra"}, 4)
    # BM25L and BM25+ give "bird" a non-occurrence score > 0; Robertson's clamped idf gives "cat",
    # a term of 3 documents in 4, weight 0: matching is not a score
    assert set(run["cat"]) == {"a", "b", "c"} and list(run["fish"]) == ["c"] and run["none"] == {}
    rows, scores = searcher.top(searcher.encode(["fish"]), 3, matches_only=True)
    assert rows.tolist() == [[2, -1, -1]] and scores[0, 0] > 0 and np.isneginf(scores[0, 1:]).all()
    # without matches_only every document is a candidate, with the score BM25 gives it
    rows, scores = searcher.top(searcher.encode(["fish"]), 4)
    np.testing.assert_array_equal(scores, searcher.score(searcher.encode(["fish"]), rows))
    assert sorted(rows[0].tolist()) == [0, 1, 2, 3]


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


# --------------------------------------------------------------------------- bm25 as a system


def _cli_run(runs_dir, *args) -> Path:
    from typer.testing import CliRunner

    from clirkit.cli import app

    r = CliRunner().invoke(app, ["--runs-dir", str(runs_dir), *map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]


def test_eval_model_bm25_is_the_bm25_searchers_run_and_its_measures(beir5, runs_dir):
    import ir_measures

    from clirkit.fuse import read_run

    run = _cli_run(runs_dir, "eval", "--model", "bm25", "--dataset", beir5, "--bm25-k1", "0.9", "--bm25-b", "0.4",
                   "--scoring", "maxsim")
    ds = load_dataset(beir5)
    direct = BM25Searcher.build(((d, t) for d, t, _ in ds.iter_corpus()), document_analyzer(ds), k1=0.9, b=0.4,
                                show_progress=False).search(ds.queries, 1000)
    got = read_run(run / "run.trec")
    assert {q: list(d) for q, d in got.items()} == {q: list(ranked_ids(d)) for q, d in direct.items() if d}
    assert all(got[q][d] == pytest.approx(s, abs=1e-6) for q, docs in direct.items() for d, s in docs.items())
    agg = pd.read_csv(run / "metrics" / "aggregate.csv")
    expected = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], ds.qrels, direct)
    assert agg["nDCG@10"].iloc[0] == pytest.approx(next(iter(expected.values())))
    assert agg["scoring"].iloc[0] == "bm25"
    config, manifest = read_json(run / "config.json"), read_json(run / "manifest.json")
    assert config["scoring"] == "dense"  # maxsim does not apply to bm25: normalised, documented
    assert manifest["bm25"]["k1"] == 0.9 and manifest["bm25"]["analyzer"]["stemmer"] == "snowball:english"
    assert manifest["bm25"]["analyzer"]["language"] == "en"


def ranked_ids(docs: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(docs.items(), key=lambda x: (-x[1], x[0]))]


def test_bm25_with_lexicon_translation_matches_only_after_translating(tmp_path, runs_dir):
    from clirkit.fuse import read_run
    from tests.conftest import DOCS, write_beir

    ds = write_beir(tmp_path / "foreign", docs=DOCS, queries=[("q1", "pusa banig")], qrels=[("q1", "d1", 1)],
                    card={"name": "foreign", "languages": {"query": "tl", "document": "en"}})
    lex = tmp_path / "lex.tsv"
    lex.write_text("foreign\tenglish\tscore\npusa\tcat\t1\nbanig\tmat\t1\n")
    plain = _cli_run(runs_dir, "eval", "--model", "bm25", "--dataset", ds)
    translated = _cli_run(runs_dir, "eval", "--model", "bm25", "--dataset", ds, "--query-translation",
                          f"lexicon:{lex}")
    assert read_run(plain / "run.trec") == {}  # no Tagalog word is in the English index
    assert ranked_ids(read_run(translated / "run.trec")["q1"])[0] == "d1"
    assert pd.read_csv(translated / "metrics" / "aggregate.csv")["RR@10"].iloc[0] == 1.0
    # the second run reused the first run's index
    assert read_json(translated / "manifest.json")["bm25"]["reused_from"] == str(plain)


def test_bm25_reuse_is_off_inside_reproduce(beir5, tmp_path):
    from clirkit.rundir import fresh_run

    ds = load_dataset(beir5)
    cfg = IndexConfig(dataset=beir5, runs_dir=tmp_path / "runs")
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        key = ensure_bm25_index(ds, run, document_analyzer(ds)).manifest["key"]
    assert find_stored(cfg.runs_dir, INDEX_DIR, key) is not None
    with fresh_run():
        assert find_stored(cfg.runs_dir, INDEX_DIR, key) is None


def test_bm25_options_are_user_errors(beir5, runs_dir):
    from clirkit.config import EvalConfig, build

    with pytest.raises(ClirkitError, match="bm25_b"):
        build(EvalConfig, model="bm25", dataset=beir5, bm25_b=1.5)
    with pytest.raises(ClirkitError, match="no --query-model"):
        build(EvalConfig, model="bm25", query_model="minilm", dataset=beir5)
    assert build(EvalConfig, model="minilm", scoring="maxsim").scoring == "maxsim"  # encoders keep it
