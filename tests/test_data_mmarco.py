"""mMARCO reader: unicamp-dl layout (nested and flat), cross-lingual pairing, max_docs, ir_datasets path."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from clirkit.data.formats import load_dataset
from clirkit.data.mmarco import MMarcoConfig, prepare_mmarco
from clirkit.data.sources import IdSet, read_trec_qrels
from clirkit.errors import ClirkitError

FIX = Path(__file__).parent / "fixtures" / "mmarco"
JUDGED = {"d:2", "d:7", "d:9", "d:11"}


def _card(path: Path) -> dict:
    return json.loads((path / "dataset.json").read_text(encoding="utf-8"))


def _doc_ids(path: Path) -> list[str]:
    return [json.loads(line)["_id"] for line in (path / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]


def test_cross_lingual_nested_layout(tmp_path):
    out = prepare_mmarco(MMarcoConfig(query_lang="de", doc_lang="en", data_dir=FIX, out=tmp_path / "mm"))
    ds = load_dataset(out, "dev")  # validates every judged id
    assert ds.queries == {"q:1000": "was ist die hauptstadt von kenia", "q:1001": "wie lange kocht man ein ei",
                          "q:1002": "welche länder grenzen an den victoriasee"}
    assert set(ds.query_lang.values()) == {"de"}
    assert ds.qrels == {"q:1000": {"d:2": 1}, "q:1001": {"d:7": 1, "d:9": 1}, "q:1002": {"d:11": 1}}
    docs = {d: (t, lang) for d, t, lang in ds.iter_corpus()}
    assert len(docs) == 12 and all(lang == "en" for _, lang in docs.values())
    assert "d:0" in docs  # the BOM did not leak into the first id
    assert docs["d:5"][0] == 'A "quoted" passage: the term "byte" means eight bits.'  # quotes kept, trailing tab gone
    assert not any("\r" in t for t, _ in docs.values())
    card = _card(out)
    assert card["counts"] == {"documents": 12, "queries": 3, "qrels_dev": 4}
    assert card["languages"] == ["de", "en"] and card["query_lang"] == "de" and card["doc_lang"] == "en"
    assert card["stats"]["judged_queries_missing_from_query_file"] == 1  # qid 9999 has no query text
    assert "Apache-2.0" in card["licence"] and "MS MARCO" in card["licence"]
    assert card["training_triples"]["path"].endswith("triples.train.ids.small.tsv")


def test_flat_layout_language_names_and_codes(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(FIX / "data/google/collections/german_collection.tsv", flat / "de_collection.tsv")  # ISO-code name
    shutil.copy(FIX / "data/google/queries/dev/english_queries.dev.small.tsv", flat)
    shutil.copy(FIX / "data/qrels.dev.small.tsv", flat)
    out = prepare_mmarco(MMarcoConfig(query_lang="English", doc_lang="de", data_dir=flat, out=tmp_path / "o"))
    ds = load_dataset(out, "dev")
    assert ds.queries["q:1000"] == "what is the capital of kenya"
    assert dict((d, t) for d, t, _ in ds.iter_corpus())["d:2"] == "Die Hauptstadt Kenias ist Nairobi."
    assert "training_triples" not in _card(out)


def test_dev_full_falls_back_to_full_query_file(tmp_path):
    # dev uses *_queries.dev.small.tsv when present; only judged queries are written either way
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in ("data/google/collections/english_collection.tsv", "data/google/queries/dev/german_queries.dev.tsv",
              "data/qrels.dev.small.tsv"):
        shutil.copy(FIX / f, flat)
    out = prepare_mmarco(MMarcoConfig(query_lang="de", doc_lang="en", data_dir=flat, out=tmp_path / "o"))
    assert set(load_dataset(out, "dev").queries) == {"q:1000", "q:1001", "q:1002"}  # 1003 is unjudged


def test_max_docs_first_keeps_every_judged_passage(tmp_path):
    out = prepare_mmarco(MMarcoConfig(query_lang="de", doc_lang="en", data_dir=FIX, max_docs=6, out=tmp_path / "o"))
    ids = _doc_ids(out)
    assert len(ids) == 6 and JUDGED <= set(ids)
    assert ids == ["d:0", "d:1", "d:2", "d:7", "d:9", "d:11"]  # first non-judged in file order, file order kept
    load_dataset(out, "dev")
    card = _card(out)
    assert card["filters"]["max_docs"] == 6 and card["filters"]["fill"] == "first"


def test_max_docs_random_is_seeded_and_keeps_judged(tmp_path):
    def run(seed: int, name: str) -> list[str]:
        cfg = MMarcoConfig(query_lang="de", doc_lang="en", data_dir=FIX, max_docs=6, fill="random", seed=seed,
                           out=tmp_path / name)
        return _doc_ids(prepare_mmarco(cfg))

    a, b = run(3, "a"), run(3, "b")
    assert a == b and len(a) == 6 and JUDGED <= set(a)
    assert len({tuple(run(s, f"s{s}")) for s in range(6)}) > 1  # the seed matters


def test_max_docs_below_judged_count_keeps_judged(tmp_path):
    out = prepare_mmarco(MMarcoConfig(query_lang="en", doc_lang="en", data_dir=FIX, max_docs=2, out=tmp_path / "o"))
    assert set(_doc_ids(out)) == JUDGED
    load_dataset(out, "dev")


def test_unknown_language_lists_known_ones():
    with pytest.raises(ClirkitError) as e:
        MMarcoConfig(query_lang="sw")
    assert "unknown mMARCO language 'sw'" in str(e.value) and "de (german)" in str(e.value)


def test_missing_qrels_names_the_file(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(FIX / "data/google/collections/english_collection.tsv", flat)
    shutil.copy(FIX / "data/google/queries/dev/english_queries.dev.small.tsv", flat)
    with pytest.raises(ClirkitError, match="qrels.dev.small.tsv"):
        prepare_mmarco(MMarcoConfig(data_dir=flat, out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_malformed_collection_line_names_file_and_line(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(FIX / "data/google/queries/dev/english_queries.dev.small.tsv", flat)
    shutil.copy(FIX / "data/qrels.dev.small.tsv", flat)
    (flat / "english_collection.tsv").write_text("0\tfine\n1 no tab here\n", encoding="utf-8")
    with pytest.raises(ClirkitError) as e:
        prepare_mmarco(MMarcoConfig(data_dir=flat, out=tmp_path / "o"))
    assert f"{flat / 'english_collection.tsv'}:2:" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_read_trec_qrels_accepts_three_and_four_columns(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("1\t0\t7\t1\n2 9 2\n\n", encoding="utf-8")
    assert read_trec_qrels(p) == {"1": {"7": 1}, "2": {"9": 2}}
    p.write_text("1\t7\n", encoding="utf-8")
    with pytest.raises(ClirkitError, match=r"q.tsv:1: expected 3 .* or 4"):
        read_trec_qrels(p)


def test_idset_numeric_and_string_ids():
    s = IdSet()
    assert s.add("5") and not s.add("5") and s.add("05") and not s.add("05") and s.add("doc-1")
    assert s.add("123456789") and not s.add("123456789")


class _Rec(types.SimpleNamespace):
    pass


def _fake_irds(monkeypatch, *, fail: bool = False) -> list[str]:
    loaded: list[str] = []

    class _DS:
        def __init__(self, dsid):
            self.dsid = dsid

        def qrels_iter(self):
            yield _Rec(query_id="1", doc_id="10", relevance=1)

        def queries_iter(self):
            yield _Rec(query_id="1", text="hoe kook je een ei")

        def docs_iter(self):
            if fail:
                raise ConnectionError("Temporary failure in name resolution")
            yield _Rec(doc_id="10", text="Boil the egg for nine minutes.")
            yield _Rec(doc_id="11", text="Unrelated.")

    def load(dsid):
        loaded.append(dsid)
        return _DS(dsid)

    monkeypatch.setitem(sys.modules, "ir_datasets", types.SimpleNamespace(load=load))
    return loaded


def test_ir_datasets_path_when_available(monkeypatch, tmp_path):
    loaded = _fake_irds(monkeypatch)
    out = prepare_mmarco(MMarcoConfig(query_lang="nl", doc_lang="en", out=tmp_path / "o"))
    assert loaded == ["mmarco/v2/dt/dev/small", "msmarco-passage"]  # ir_datasets spells Dutch "dt"
    ds = load_dataset(out, "dev")
    assert ds.queries == {"q:1": "hoe kook je een ei"} and ds.qrels == {"q:1": {"d:10": 1}}


def test_ir_datasets_offline_is_a_clean_error(monkeypatch, tmp_path):
    _fake_irds(monkeypatch, fail=True)
    with pytest.raises(ClirkitError, match="--data-dir"):
        prepare_mmarco(MMarcoConfig(query_lang="de", doc_lang="de", out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_ir_datasets_missing_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # import fails
    with pytest.raises(ClirkitError, match="not installed.*--data-dir"):
        prepare_mmarco(MMarcoConfig(out=tmp_path / "o"))
