"""WikiCLIR readers: Schamoni et al. 2014 (de->en) and Sasaki et al. 2018 (en->25 languages)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from clirkit.data.formats import load_dataset
from clirkit.data.wikiclir import WikiClirConfig, prepare_wikiclir
from clirkit.errors import ClirkitError

FIX = Path(__file__).parent / "fixtures"
SCHAMONI = FIX / "wikiclir_schamoni"
SASAKI = FIX / "wikiclir_sasaki"


def _card(path: Path) -> dict:
    return json.loads((path / "dataset.json").read_text(encoding="utf-8"))


def test_schamoni_test_split_three_column_qrels(tmp_path):
    out = prepare_wikiclir(WikiClirConfig(variant="schamoni", data_dir=SCHAMONI, out=tmp_path / "o"))
    ds = load_dataset(out, "test")
    assert ds.queries == {"q:de:201": "ist der höchste Berg Afrikas.", "q:de:202": "ist ein Binnensee in Ostafrika."}
    assert ds.qrels["q:de:201"] == {"d:en:6001": 3, "d:en:6002": 2}
    assert ds.qrels["q:de:202"] == {"d:en:6003": 3, "d:en:6004": 2, "d:en:6005": 2}
    card = _card(out)
    assert card["counts"] == {"documents": 5, "queries": 2, "qrels_test": 5}
    assert card["languages"] == ["de", "en"] and card["variant"] == "schamoni" and card["split"] == "test"
    assert card["licence"].startswith("CC BY-SA 4.0")
    assert card["stats"]["grades"] == {"2": 3, "3": 2}
    # query 203's only judgement names a document missing from test.docs: the query is not written
    assert card["stats"]["judged_documents_missing_from_collection"] == 1
    assert card["stats"]["queries_written"] == 2


def test_schamoni_dev_split_four_column_trec_qrels(tmp_path):
    out = prepare_wikiclir(WikiClirConfig(variant="schamoni", lang="de", split="dev", data_dir=SCHAMONI,
                                          out=tmp_path / "o"))
    ds = load_dataset(out, "dev")
    assert ds.qrels == {"q:de:101": {"d:en:5001": 3, "d:en:5002": 2}, "q:de:102": {"d:en:5003": 3, "d:en:5004": 2}}


def test_schamoni_unknown_split_lists_found_ones(tmp_path):
    with pytest.raises(ClirkitError, match="use --split with one of: dev, test"):
        prepare_wikiclir(WikiClirConfig(variant="schamoni", split="train", data_dir=SCHAMONI, out=tmp_path / "o"))


def test_schamoni_is_german_only(tmp_path):
    with pytest.raises(ClirkitError, match="German queries only"):
        prepare_wikiclir(WikiClirConfig(variant="schamoni", lang="fr", data_dir=SCHAMONI, out=tmp_path / "o"))


def test_schamoni_needs_local_files(tmp_path):
    with pytest.raises(ClirkitError, match="--data-dir"):
        prepare_wikiclir(WikiClirConfig(variant="schamoni", out=tmp_path / "o"))


def test_sasaki_swahili_release_layout(tmp_path):
    out = prepare_wikiclir(WikiClirConfig(lang="sw", data_dir=SASAKI, out=tmp_path / "o"))
    ds = load_dataset(out, "all")
    assert set(ds.queries) == {"q:en:12", "q:en:25", "q:en:31", "q:en:58"}  # 47 (Manila) is judged only for tl
    assert ds.queries["q:en:12"] == "Nairobi is the capital and largest city of Kenya."
    assert ds.queries["q:en:58"] == "Lake Victoria is one of the African Great Lakes."  # trailing tab tolerated
    assert ds.qrels["q:en:12"] == {"d:sw:12": 2, "d:sw:77": 1}
    docs = {d: t for d, t, _ in ds.iter_corpus()}
    assert docs["d:sw:12"] == "Nairobi Nairobi ni mji mkuu wa Kenya."  # title + text, the first of a duplicated id
    card = _card(out)
    assert card["counts"] == {"documents": 6, "queries": 4, "qrels_all": 6}
    assert card["stats"]["documents_duplicate_ids_skipped"] == 1
    assert card["languages"] == ["en", "sw"] and card["doc_lang"] == "sw" and card["split"] == "all"
    assert card["grades"]["2"] == "the cross-lingual mate"


def test_sasaki_query_field_and_split_files(tmp_path):
    out = prepare_wikiclir(WikiClirConfig(lang="sw", split="test1", query_field="title",
                                          data_dir=SASAKI / "wiki-clir" / "swahili", out=tmp_path / "o"))
    ds = load_dataset(out, "test1")
    assert ds.queries == {"q:en:31": "Mount Kilimanjaro"}
    assert ds.qrels == {"q:en:31": {"d:sw:31": 2, "d:sw:80": 1}}
    with pytest.raises(ClirkitError, match="use --split all, test1"):
        prepare_wikiclir(WikiClirConfig(lang="sw", split="dev", data_dir=SASAKI, out=tmp_path / "p"))


def test_sasaki_tagalog(tmp_path):
    out = prepare_wikiclir(WikiClirConfig(lang="TL", query_field="title_first_sentence", data_dir=SASAKI / "wiki-clir",
                                          out=tmp_path / "o"))
    ds = load_dataset(out, "all")
    assert ds.queries == {"q:en:47": "Manila Manila is the capital of the Philippines."}


def test_sasaki_unknown_language_lists_known_ones(tmp_path):
    with pytest.raises(ClirkitError) as e:
        prepare_wikiclir(WikiClirConfig(lang="xx", data_dir=SASAKI, out=tmp_path / "o"))
    assert "unknown language 'xx'" in str(e.value) and "sw" in str(e.value) and "tl" in str(e.value)
    with pytest.raises(ClirkitError, match="needs the document language"):
        prepare_wikiclir(WikiClirConfig(data_dir=SASAKI, out=tmp_path / "o"))


def test_sasaki_missing_language_folder(tmp_path):
    with pytest.raises(ClirkitError, match="no german/ and english/ folders"):
        prepare_wikiclir(WikiClirConfig(lang="de", data_dir=SASAKI, out=tmp_path / "o"))


def test_sasaki_without_data_dir_or_ir_datasets(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(ClirkitError, match="not installed.*--data-dir"):
        prepare_wikiclir(WikiClirConfig(lang="sw", out=tmp_path / "o"))


def _fake_irds(monkeypatch, *, fail: bool) -> None:
    class _DS:
        def qrels_iter(self):
            if fail:
                raise OSError("network is unreachable")
            yield types.SimpleNamespace(query_id="1", doc_id="9", relevance=2)

        def queries_iter(self):
            yield types.SimpleNamespace(query_id="1", title="Nairobi", first_sent="Nairobi is a city.")

        def docs_iter(self):
            yield types.SimpleNamespace(doc_id="9", title="Nairobi", text="Nairobi ni mji.")

    monkeypatch.setitem(sys.modules, "ir_datasets", types.SimpleNamespace(load=lambda dsid: _DS()))


def test_sasaki_ir_datasets_path(monkeypatch, tmp_path):
    _fake_irds(monkeypatch, fail=False)
    ds = load_dataset(prepare_wikiclir(WikiClirConfig(lang="sw", out=tmp_path / "o")), "all")
    assert ds.queries == {"q:en:1": "Nairobi is a city."} and ds.qrels == {"q:en:1": {"d:sw:9": 2}}


def test_sasaki_ir_datasets_offline(monkeypatch, tmp_path):
    _fake_irds(monkeypatch, fail=True)
    with pytest.raises(ClirkitError, match="could not provide 'wikiclir/sw'.*--data-dir"):
        prepare_wikiclir(WikiClirConfig(lang="sw", out=tmp_path / "o"))
