from pathlib import Path

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


def _prepared(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, "ds") as w:
        w.add_doc("d1", "one document", "en")
        w.add_doc("d2", "another document", "en")
        w.add_query("q1", "a query", "en")
        w.add_qrel("test", "q1", "d1", 1)
    return out


def _count_reads(monkeypatch):
    import clirkit.data.formats as formats

    reads = []
    real = formats.sha256_file
    monkeypatch.setattr(formats, "sha256_file", lambda p, *a: reads.append(Path(p).name) or real(p, *a))
    monkeypatch.setattr(formats, "_DIGESTS", {})
    return reads


def test_card_records_size_and_mtime_of_every_hashed_file(tmp_path):
    out = _prepared(tmp_path)
    card = read_card(out)
    assert set(card["files"]) == set(card["sha256"]) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    st = (out / "qrels/test.tsv").stat()
    assert card["files"]["qrels/test.tsv"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def test_unchanged_files_are_trusted_without_reading(tmp_path, monkeypatch):
    from clirkit.data.formats import file_digest, sha256_file, trusted_sha256

    out = _prepared(tmp_path)
    card = read_card(out)
    reads = _count_reads(monkeypatch)
    assert trusted_sha256(out) == card["sha256"]
    assert file_digest(out / "corpus.jsonl") == card["sha256"]["corpus.jsonl"]
    assert file_digest(out / "qrels" / "test.tsv") == card["sha256"]["qrels/test.tsv"]
    assert reads == []
    assert card["sha256"]["corpus.jsonl"] == sha256_file(out / "corpus.jsonl")  # the card was right


def test_changed_file_is_rehashed(tmp_path, monkeypatch):
    import os

    from clirkit.data.formats import file_digest, sha256_file, trusted_sha256

    out = _prepared(tmp_path)
    old = read_card(out)["sha256"]["corpus.jsonl"]
    reads = _count_reads(monkeypatch)
    corpus = out / "corpus.jsonl"
    st = corpus.stat()
    corpus.write_text(corpus.read_text(encoding="utf-8").replace("one", "ONE"), encoding="utf-8")  # same size
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert "corpus.jsonl" not in trusted_sha256(out)
    new = file_digest(corpus)
    assert new != old and new == sha256_file(corpus)
    assert reads == ["corpus.jsonl"]
    assert file_digest(corpus) == new and reads == ["corpus.jsonl"]  # unchanged since: memoised


def test_card_without_file_records_means_rehash(tmp_path, monkeypatch):
    import json

    from clirkit.data.formats import file_digest

    out = _prepared(tmp_path)
    card = read_card(out)
    del card["files"]
    (out / "dataset.json").write_text(json.dumps(card), encoding="utf-8")
    reads = _count_reads(monkeypatch)
    assert file_digest(out / "corpus.jsonl") == card["sha256"]["corpus.jsonl"]
    assert reads == ["corpus.jsonl"]


def test_prepare_checks_ids_once_and_loading_trusts_it(tmp_path, monkeypatch):
    """The writer checks every judged id once; loading an unchanged dataset does not read the corpus again,
    loading a changed one does (and still catches a bad id)."""
    import os

    import clirkit.data.formats as formats

    out = _prepared(tmp_path)
    assert read_card(out)["ids_checked"] == ["test"]
    calls = []
    real = formats.check_ids
    monkeypatch.setattr(formats, "check_ids", lambda *a: calls.append(a[0].name) or real(*a))
    load_dataset(out)
    assert calls == []
    qrels = out / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tmissing\t1\n", encoding="utf-8")
    os.utime(qrels, ns=(qrels.stat().st_atime_ns, qrels.stat().st_mtime_ns + 10**9))
    with pytest.raises(ClirkitError, match="unknown document id 'missing'"):
        load_dataset(out)
    assert calls == ["corpus.jsonl"]


def test_writer_refuses_qrels_naming_a_missing_document(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(ClirkitError, match="unknown document id 'd9'"):
        with DatasetWriter(out, "ds") as w:
            w.add_doc("d1", "one document", "en")
            w.add_query("q1", "a query", "en")
            w.add_qrel("test", "q1", "d9", 1)
            w.finish(source="unit test")
    assert not out.exists()
