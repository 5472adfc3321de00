import pytest

from clirkit.data.formats import DatasetWriter, iter_bitext, load_dataset, read_card
from clirkit.errors import ClirkitError
from tests.conftest import write_beir


def test_writer_is_atomic_and_writes_card(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, "ds") as w:
        w.add_doc("d1", "hello world", "en")
        w.add_query("q1", "hi", "tl")
        w.add_qrel("test", "q1", "d1", 2)
        w.add_bitext("train", "p1", "a\tb", "c\nd")
        w.finish(source="unit test", licence="CC0")
    card = read_card(out)
    assert card["counts"] == {"documents": 1, "queries": 1, "qrels_test": 1, "bitext_train": 1}
    assert set(card["sha256"]) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "bitext/train.tsv"}
    # tabs/newlines inside a bitext side are folded so the TSV stays 3 columns
    assert list(iter_bitext(out / "bitext" / "train.tsv")) == [("p1", "a b", "c d")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_writer_failure_leaves_nothing_and_never_overwrites(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, "ds") as w:
            w.add_doc("d1", "x", "en")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(ClirkitError, match="already exists"):
        DatasetWriter(out, "ds")


def test_load_dataset_reads_fixture(beir5):
    ds = load_dataset(beir5)
    assert ds.queries["q1"] == "cat on a mat"
    assert ds.qrels["q1"] == {"d1": 2, "d3": 1}
    assert ds.doc_ids() == ["d1", "d2", "d3", "d4", "d5"]


def test_malformed_jsonl_names_file_and_line(beir5):
    with open(beir5 / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(ClirkitError) as e:
        load_dataset(beir5)
    assert "queries.jsonl:4:" in e.value.one_line()


def test_qrels_unknown_document_is_an_error(tmp_path):
    root = write_beir(tmp_path / "b", qrels=[("q1", "d9", 1)], card={"name": "b"})
    with pytest.raises(ClirkitError, match=r"test.tsv:2: qrels name unknown document id 'd9'"):
        load_dataset(root)


def test_qrels_unknown_query_is_an_error(tmp_path):
    root = write_beir(tmp_path / "b", qrels=[("q7", "d1", 1)], card={"name": "b"})
    with pytest.raises(ClirkitError, match="unknown query id 'q7'"):
        load_dataset(root)


def test_empty_corpus_is_an_error(tmp_path):
    root = write_beir(tmp_path / "b", docs=[], qrels=[], card={"name": "b"})
    with pytest.raises(ClirkitError, match="corpus is empty"):
        load_dataset(root)


def test_bad_qrels_header_and_columns(beir5):
    (beir5 / "qrels" / "test.tsv").write_text("qid\tdocid\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(ClirkitError, match="test.tsv:1: bad header"):
        load_dataset(beir5)
    (beir5 / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(ClirkitError, match="test.tsv:2: expected 3 tab-separated columns, found 2"):
        load_dataset(beir5)


def test_invalid_utf8_names_line(beir5):
    with open(beir5 / "corpus.jsonl", "ab") as f:
        f.write(b'{"_id": "d6", "text": "\xff\xfe"}\n')
    with pytest.raises(ClirkitError, match=r"corpus.jsonl:6: invalid UTF-8"):
        load_dataset(beir5)


def test_unknown_split_lists_known(beir5):
    with pytest.raises(ClirkitError, match="use one of the splits: test"):
        load_dataset(beir5, split="dev")


def test_missing_card_says_how_to_prepare(tmp_path):
    root = write_beir(tmp_path / "nocard")
    with pytest.raises(ClirkitError, match="clirkit prepare beir"):
        load_dataset(root)
