"""The canonical dataset layout (BEIR-compatible) and the bitext table, read and written.

A prepared dataset is a folder readable by ``beir.datasets.data_loader.GenericDataLoader``::

    corpus.jsonl        {"_id", "title", "text", "lang"}
    queries.jsonl       {"_id", "text", "lang"}
    qrels/<split>.tsv   header ``query-id corpus-id score``
    bitext/<split>.tsv  optional: header ``id src tgt`` (the pair's two sides)
    dataset.json        the card: name, source, licence, languages, counts, sha256 (and size,
                        mtime_ns) of files

Writers stream (nothing is held whole in memory) into a temporary sibling folder that is
renamed into place only when complete, so a failure never leaves a half-written dataset and
an existing dataset is never overwritten.

It also holds the streaming readers and helpers every source module shares: ``id \\t text``
files (:func:`iter_id_text`), TREC qrels (:func:`read_trec_qrels`), finding a release file in a
folder (:func:`find_file`) and the "judged set first, then the collection" retrieval writer
(:func:`write_retrieval`) used by mMARCO and WikiCLIR.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import json
import lzma
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clirkit import __version__
from clirkit.errors import ClirkitError
from clirkit.progress import track
from clirkit.seeding import set_seed

CARD = "dataset.json"
QRELS_HEADER = ("query-id", "corpus-id", "score")
BITEXT_HEADER = ("id", "src", "tgt")

csv.field_size_limit(sys.maxsize)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_stat(path: str | Path) -> dict[str, int]:
    """What the dataset card records to recognise an unchanged file: ``size`` and ``mtime_ns``."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def trusted_sha256(dataset_dir: str | Path) -> dict[str, str]:
    """The card's sha256 of every file of a prepared dataset whose size and modification time
    are still those the card recorded (``{relative path: sha256}``); files that changed, and
    every file of a card without ``files`` records (prepared before they existed), are left out.

    Trusting (size, mtime) is what make and rsync do: a file rewritten in place gets a new
    mtime, so only a deliberate ``touch -d`` back to the old time with the same size escapes.
    """
    dataset_dir = Path(dataset_dir)
    try:
        card = json.loads((dataset_dir / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    digests, stats = card.get("sha256") or {}, card.get("files") or {}
    out = {}
    for rel, digest in digests.items():
        try:
            if stats.get(rel) == file_stat(dataset_dir / rel):
                out[rel] = digest
        except OSError:
            continue
    return out


_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256, this process


def file_digest(path: str | Path) -> str:
    """sha256 of a file without reading it when it can be trusted: from its dataset card (see
    :func:`trusted_sha256`; the card is looked for up to two folders above the file), or from an
    earlier call in this process for the same unchanged file; otherwise :func:`sha256_file`.

    Every input hash of a run (``Run.add_inputs``, the index key) goes through here, so an eval
    of a prepared 8.8M-passage corpus does not reread gigabytes at every start.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    for folder in path.parents[:3]:
        if (folder / CARD).is_file():
            digest = trusted_sha256(folder).get(path.relative_to(folder).as_posix())
            if digest is not None:
                _DIGESTS[key] = digest
                return digest
            break
    _DIGESTS[key] = digest = sha256_file(path)
    return digest


def open_text(path: Path):
    """Open a UTF-8 text file for reading, mapping a missing file to a ClirkitError."""
    if not path.is_file():
        raise ClirkitError("file not found", path=path, fix="check the path or run `clirkit prepare` first")
    return open(path, encoding="utf-8", newline="")


def open_binary(path: str | Path):
    """Open a file for binary reading, decompressing ``.gz``, ``.xz`` and ``.bz2`` by suffix."""
    path = Path(path)
    if not path.is_file():
        raise ClirkitError("file not found", path=path, fix="check the path or run `clirkit prepare` first")
    opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
    return opener(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 file, possibly compressed (see :func:`open_binary`).

    A byte-order mark and CR line ends are dropped; invalid UTF-8 names the line, and a truncated
    or falsely named compressed file is a :class:`ClirkitError`, not a traceback.
    """
    with open_binary(path) as f:
        try:
            for n, raw in enumerate(f, 1):
                try:
                    # "utf-8-sig" on line 1 drops a byte-order mark (Windows-made TSVs carry one).
                    yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise ClirkitError(f"invalid UTF-8 ({e.reason} at byte {e.start})", path=path, line=n,
                                       fix="re-encode the file as UTF-8") from None
        except (OSError, EOFError, lzma.LZMAError) as e:  # truncated or not really compressed
            raise ClirkitError(f"cannot read ({e})", path=path, fix="check that the file is complete") from None


def iter_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` from a JSON-lines file, checking required string fields."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ClirkitError(f"malformed JSON ({e.msg})", path=path, line=n,
                               fix="each line must be one JSON object") from None
        if not isinstance(rec, dict):
            raise ClirkitError("expected a JSON object", path=path, line=n, fix="each line must be one JSON object")
        for key in required:
            if not isinstance(rec.get(key), str):
                raise ClirkitError(f"missing or non-string field {key!r}", path=path, line=n,
                                   fix=f"every record needs {', '.join(required)}")
        yield n, rec


def iter_tsv(path: str | Path, header: tuple[str, ...] | None = None, ncols: int | None = None
             ) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` from a tab-separated file.

    Args:
        path: the file.
        header: if given, the first line must be exactly this header (and is skipped).
        ncols: if given, every row must have this many fields.
    """
    it = iter_lines(path)
    if header is not None:
        first = next(it, None)
        got = tuple(first[1].split("\t")) if first else ()
        if got != header:
            raise ClirkitError(f"bad header {' '.join(got)!r}", path=path, line=1,
                               fix=f"the first line must be {' '.join(header)!r} (tab-separated)")
    ncols = ncols if ncols is not None else (len(header) if header else None)
    for n, line in it:
        if not line.strip():
            continue
        fields = line.split("\t")
        if ncols is not None and len(fields) != ncols:
            raise ClirkitError(f"expected {ncols} tab-separated columns, found {len(fields)}", path=path,
                               line=n, fix="check the file's format")
        yield n, fields


# --------------------------------------------------------------------------- reading


@dataclass
class Dataset:
    """A loaded canonical dataset (small enough to hold: queries, qrels; corpus streamed on demand)."""

    path: Path
    card: dict[str, Any]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_lang: dict[str, str] = field(default_factory=dict)
    split: str = "test"

    @property
    def corpus_path(self) -> Path:
        return self.path / "corpus.jsonl"

    def iter_corpus(self) -> Iterator[tuple[str, str, str]]:
        """Yield ``(doc_id, text_to_encode, lang)``; title and text joined as BEIR does."""
        for _, rec in iter_jsonl(self.corpus_path, ("_id",)):
            title = rec.get("title") or ""
            text = rec.get("text") or ""
            yield rec["_id"], f"{title} {text}".strip() if title else text, rec.get("lang", "")

    def doc_ids(self) -> list[str]:
        return [d for d, _, _ in self.iter_corpus()]

    def bitext_path(self, split: str) -> Path:
        return self.path / "bitext" / f"{split}.tsv"


def read_card(path: str | Path) -> dict[str, Any]:
    """The dataset card of a prepared dataset folder."""
    path = Path(path)
    card_path = path / CARD
    if not card_path.is_file():
        raise ClirkitError(f"no {CARD} in {path}", path=path,
                           fix="point at a folder made by `clirkit prepare` "
                               "(or import one with `clirkit prepare beir DIR`)")
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ClirkitError(f"malformed JSON ({e.msg})", path=card_path, line=e.lineno) from None


def read_queries(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """Queries ``{id: text}`` and ``{id: lang}`` from ``queries.jsonl``; duplicate ids are an error."""
    queries: dict[str, str] = {}
    langs: dict[str, str] = {}
    for n, rec in iter_jsonl(path, ("_id", "text")):
        if rec["_id"] in queries:
            raise ClirkitError(f"duplicate query id {rec['_id']!r}", path=path, line=n, fix="ids must be unique")
        queries[rec["_id"]] = rec["text"]
        langs[rec["_id"]] = rec.get("lang", "")
    return queries, langs


def relevance_grade(value: str, path: str | Path, line: int) -> int:
    """A qrels relevance grade; anything but an integer is a user error naming the file and line."""
    try:
        return int(value)
    except ValueError:
        raise ClirkitError(f"relevance {value!r} is not an integer", path=path, line=line,
                           fix="relevance grades are integers") from None


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Qrels ``{qid: {docid: grade}}`` from a BEIR ``qrels/<split>.tsv``."""
    qrels: dict[str, dict[str, int]] = {}
    for n, (qid, did, score) in iter_tsv(path, header=QRELS_HEADER):
        qrels.setdefault(qid, {})[did] = relevance_grade(score, path, n)
    return qrels


def load_dataset(path: str | Path, split: str = "test", *, check_ids: bool = True) -> Dataset:
    """Load and validate a canonical dataset.

    Args:
        path: the dataset folder.
        split: which ``qrels/<split>.tsv`` to use.
        check_ids: verify that every judged query and document exists (one pass over the corpus).

    Raises:
        ClirkitError: missing files, malformed lines, unknown ids, empty corpus.
    """
    path = Path(path)
    if not path.is_dir():
        raise ClirkitError("dataset folder not found", path=path,
                           fix="run `clirkit prepare ...` or pass the folder of a prepared dataset")
    card = read_card(path)
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        raise ClirkitError(f"no qrels for split {split!r}", path=qrels_path,
                           fix=f"use one of the splits: {', '.join(have) or '(none)'}")
    queries, langs = read_queries(path / "queries.jsonl")
    qrels = read_qrels(qrels_path)
    ds = Dataset(path=path, card=card, queries=queries, qrels=qrels, query_lang=langs, split=split)
    if check_ids:
        validate_ids(ds)
    return ds


def validate_ids(ds: Dataset) -> None:
    """Every judged query and document must exist; the corpus must not be empty."""
    doc_ids: set[str] = set()
    for n, rec in iter_jsonl(ds.corpus_path, ("_id",)):
        if rec["_id"] in doc_ids:
            raise ClirkitError(f"duplicate document id {rec['_id']!r}", path=ds.corpus_path, line=n,
                               fix="ids must be unique")
        doc_ids.add(rec["_id"])
    if not doc_ids:
        raise ClirkitError("the corpus is empty", path=ds.corpus_path, fix="prepare a dataset with documents")
    qrels_path = ds.path / "qrels" / f"{ds.split}.tsv"
    for n, (qid, did, _) in iter_tsv(qrels_path, header=QRELS_HEADER):
        if qid not in ds.queries:
            raise ClirkitError(f"qrels name unknown query id {qid!r}", path=qrels_path, line=n,
                               fix="every query-id must be in queries.jsonl")
        if did not in doc_ids:
            raise ClirkitError(f"qrels name unknown document id {did!r}", path=qrels_path, line=n,
                               fix="every corpus-id must be in corpus.jsonl")


def iter_bitext(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(id, src, tgt)`` from a bitext table (TSV with header ``id src tgt``, or Parquet)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.is_file():
            raise ClirkitError("file not found", path=path, fix="check the path")
        table = pq.read_table(path)
        missing = {"src", "tgt"} - set(table.column_names)
        if missing:
            raise ClirkitError(f"missing columns {sorted(missing)}", path=path, fix="bitext needs columns id, src, tgt")
        ids = table.column("id").to_pylist() if "id" in table.column_names else range(table.num_rows)
        for i, s, t in zip(ids, table.column("src").to_pylist(), table.column("tgt").to_pylist()):
            yield str(i), s, t
        return
    for _, (i, s, t) in iter_tsv(path, header=BITEXT_HEADER):
        yield i, s, t


# --------------------------------------------------------------------------- writing


def _jsonl(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


def _clean(text: str) -> str:
    """Tabs and newlines would break the TSV/line formats; fold them to spaces."""
    return " ".join(text.split())


class DatasetWriter:
    """Stream a canonical dataset into ``out`` atomically.

    Use as a context manager; on success the card is written and the temporary folder renamed
    to ``out``; on an exception the temporary folder is removed and ``out`` is untouched.

    Args:
        out: the final folder; it must not exist yet.
        name: dataset name for the card.
    """

    def __init__(self, out: str | Path, name: str) -> None:
        self.out = Path(out)
        self.name = name
        if self.out.exists():
            raise ClirkitError("output folder already exists", path=self.out,
                               fix="choose another --out or delete the old dataset")
        self.counts: dict[str, int] = {"documents": 0, "queries": 0}
        self._files: dict[str, Any] = {}
        self._tmp: Path | None = None

    def __enter__(self) -> DatasetWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        return self

    def _file(self, rel: str, header: tuple[str, ...] | None = None):
        f = self._files.get(rel)
        if f is None:
            assert self._tmp is not None, "use DatasetWriter as a context manager"
            p = self._tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[rel] = open(p, "w", encoding="utf-8", newline="")
            if header:
                f.write("\t".join(header) + "\n")
        return f

    def add_doc(self, doc_id: str, text: str, lang: str, title: str = "") -> None:
        self._file("corpus.jsonl").write(_jsonl({"_id": doc_id, "title": title, "text": text, "lang": lang}))
        self.counts["documents"] += 1

    def add_query(self, query_id: str, text: str, lang: str) -> None:
        self._file("queries.jsonl").write(_jsonl({"_id": query_id, "text": text, "lang": lang}))
        self.counts["queries"] += 1

    def add_qrel(self, split: str, query_id: str, doc_id: str, score: int) -> None:
        self._file(f"qrels/{split}.tsv", QRELS_HEADER).write(f"{query_id}\t{doc_id}\t{int(score)}\n")
        key = f"qrels_{split}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def add_bitext(self, split: str, pair_id: str, src: str, tgt: str) -> None:
        self._file(f"bitext/{split}.tsv", BITEXT_HEADER).write(f"{pair_id}\t{_clean(src)}\t{_clean(tgt)}\n")
        key = f"bitext_{split}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def write_extra(self, rel: str, text: str) -> None:
        """A small extra file (e.g. a licence notice) hashed into the card like the others."""
        assert self._tmp is not None
        p = self._tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")

    def finish(self, **card: Any) -> dict[str, Any]:
        """Close the files and return the card (written on successful exit)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        assert self._tmp is not None
        paths = [p for p in sorted(self._tmp.rglob("*")) if p.is_file()]
        files = {p.relative_to(self._tmp).as_posix(): sha256_file(p) for p in paths}
        self._card = {
            "name": self.name,
            **card,
            "counts": self.counts,
            "sha256": files,
            # size and mtime (kept by the rename into place) let later runs trust "sha256"
            # instead of rereading the files: see trusted_sha256
            "files": {p.relative_to(self._tmp).as_posix(): file_stat(p) for p in paths},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "clirkit_version": __version__,
        }
        return self._card

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        for f in self._files.values():
            f.close()
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if not hasattr(self, "_card"):
            self.finish()
        if self.counts["documents"] == 0 and self.counts["queries"] == 0 and not any(
                k.startswith("bitext_") for k in self.counts):
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ClirkitError("nothing to write: no documents, queries or bitext", path=self.out,
                               fix="check the input files")
        (self._tmp / CARD).write_text(json.dumps(self._card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if self.out.exists():  # someone else made it meanwhile: never overwrite
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ClirkitError("output folder already exists", path=self.out, fix="choose another --out")
        os.replace(self._tmp, self.out)


# --------------------------------------------------------------------------- source readers and the retrieval writer


class IdSet:
    """A set of string ids that stays small for numeric ids.

    Canonical non-negative integers up to 9 digits go into a bitmap (MS MARCO's 8.8M passage ids
    take ~1.1 MB instead of ~600 MB as Python strings); anything else goes into a plain set.
    """

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[str] = set()

    @staticmethod
    def _as_int(key: str) -> int | None:
        if key.isascii() and key.isdigit() and len(key) <= 9 and (key == "0" or key[0] != "0"):
            return int(key)
        return None

    def add(self, key: str) -> bool:
        """Add ``key``; return False if it was already there."""
        i = self._as_int(key)
        if i is None:
            if key in self._other:
                return False
            self._other.add(key)
            return True
        byte, bit = divmod(i, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        mask = 1 << bit
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        return True


def split_id_text(line: str, path: Path, n: int, what: str) -> tuple[str, str]:
    """Split an ``id \\t text`` line at its first tab.

    Later tabs stay in the text (they happen in translated passages) and trailing tabs or spaces
    are dropped; no csv quoting, since quotes inside fields are ordinary characters here.
    """
    key, sep, text = line.partition("\t")
    key = key.strip()
    if not sep or not key:
        raise ClirkitError(f"expected '<id>\\t<{what}>', found {'no tab' if not sep else 'an empty id'}",
                           path=path, line=n, fix=f"each line must be an id, a tab and the {what}")
    return key, text.strip()


def read_trec_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read qrels with 4 columns ``qid iter docid rel`` (TREC) or 3 columns ``qid docid rel``.

    Columns may be separated by tabs or spaces (both occur in real releases); the column count is
    decided per line. Returns ``{qid: {docid: grade}}``; a repeated pair keeps its last grade.
    """
    qrels: dict[str, dict[str, int]] = {}
    for n, line in iter_lines(path):
        cols = line.split()
        if not cols:
            continue
        if len(cols) == 4:
            qid, _, did, rel = cols
        elif len(cols) == 3:
            qid, did, rel = cols
        else:
            raise ClirkitError(f"expected 3 (qid docid rel) or 4 (qid 0 docid rel) columns, found {len(cols)}",
                               path=path, line=n, fix="check that this is a qrels file")
        qrels.setdefault(qid, {})[did] = relevance_grade(rel, path, n)
    return qrels


def iter_id_text(path: Path, what: str) -> Iterator[tuple[str, str]]:
    """Stream ``(id, text)`` pairs from an ``id \\t text`` file (blank lines skipped)."""
    for n, line in iter_lines(path):
        if line.strip():
            yield split_id_text(line, path, n, what)


def write_retrieval(
    w: DatasetWriter,
    *,
    split: str,
    qrels: dict[str, dict[str, int]],
    docs: Callable[[], Iterable[tuple[str, str, str]]],
    queries: Iterable[tuple[str, str]],
    doc_id: Callable[[str], str],
    query_id: Callable[[str], str],
    doc_lang: str,
    query_lang: str,
    max_docs: int | None = None,
    fill: str = "first",
    seed: int = 0,
) -> dict[str, Any]:
    """Stream a retrieval collection into ``w`` with its judgements held as the only in-memory state.

    Order of work: (1) the judged passage ids come from ``qrels`` (already read); (2) the collection
    is streamed once (twice for ``fill="random"``), writing every passage or, with ``max_docs``,
    every judged passage plus ``max_docs - #judged`` others; (3) the queries are streamed and only
    those with at least one judgement on a written passage are kept; (4) those judgements are written.
    Duplicate ids in the sources are skipped (first one wins) and counted.

    Args:
        w: an open DatasetWriter.
        split: the qrels split name to write (``qrels/<split>.tsv``).
        qrels: ``{raw qid: {raw docid: grade}}``.
        docs: a callable returning a fresh iterable of ``(raw docid, title, text)``.
        queries: iterable of ``(raw qid, text)``.
        doc_id, query_id: map raw ids to namespaced ids.
        doc_lang, query_lang: language codes stored on each record.
        max_docs: passage budget (judged passages are always kept, even beyond it).
        fill: "first" (file order) or "random" (seeded reservoir sample of the non-judged passages).
        seed: seed of the random fill.

    Returns:
        Statistics for the dataset card.
    """
    judged: dict[str, bool] = {d: False for rels in qrels.values() for d in rels}  # docid -> written?
    budget = None if max_docs is None else max(0, max_docs - len(judged))
    chosen: set[int] | None = None
    if budget is not None and fill == "random":
        # Reservoir sampling (Vitter's Algorithm R) over the non-judged passages, remembering only
        # their ordinals, so the sample is uniform without knowing the collection size in advance.
        rng = set_seed(seed).py
        reservoir: list[int] = []
        seen_ids = IdSet()
        k = 0
        for did, _, _ in track(docs(), "sampling passages"):
            if did in judged or not seen_ids.add(did):
                continue
            if k < budget:
                reservoir.append(k)
            else:
                j = rng.randrange(k + 1)
                if j < budget:
                    reservoir[j] = k
            k += 1
        chosen = set(reservoir)
    written = IdSet()
    n_docs = n_dup = n_other = ordinal = 0
    for did, title, text in track(docs(), "writing passages"):
        if not written.add(did):
            n_dup += 1
            continue
        if did in judged:
            judged[did] = True
        else:
            keep = budget is None or (ordinal in chosen if chosen is not None else n_other < budget)
            ordinal += 1
            if not keep:
                continue
            n_other += 1
        w.add_doc(doc_id(did), text, doc_lang, title=title)
        n_docs += 1
    written_q: list[str] = []
    done_q: set[str] = set()
    n_qdup = 0
    for qid, text in queries:
        rels = qrels.get(qid)
        if rels is None:
            continue
        if qid in done_q:
            n_qdup += 1
            continue
        if any(judged[d] for d in rels):
            w.add_query(query_id(qid), text, query_lang)
            written_q.append(qid)
        done_q.add(qid)
    grades: dict[str, int] = {}
    n_qrels = n_missing_doc = 0
    for qid in written_q:
        for did, grade in qrels[qid].items():
            if not judged[did]:
                n_missing_doc += 1
                continue
            w.add_qrel(split, query_id(qid), doc_id(did), grade)
            grades[str(grade)] = grades.get(str(grade), 0) + 1
            n_qrels += 1
    missing_q = [q for q in qrels if q not in done_q]
    return {
        "documents_written": n_docs,
        "documents_duplicate_ids_skipped": n_dup,
        "judged_documents": len(judged),
        "judged_documents_missing_from_collection": sum(1 for v in judged.values() if not v),
        "judged_queries": len(qrels),
        "judged_queries_missing_from_query_file": len(missing_q),
        "queries_written": len(written_q),
        "queries_duplicate_ids_skipped": n_qdup,
        "qrels_written": n_qrels,
        "qrels_dropped_missing_document": n_missing_doc,
        "grades": dict(sorted(grades.items())),
        "max_docs": max_docs,
        "fill": fill if max_docs is not None else None,
        "seed": seed if max_docs is not None and fill == "random" else None,
    }


def find_file(root: Path, names: Iterable[str], subdirs: Iterable[str], *, max_depth: int = 5) -> Path | None:
    """Find the first of ``names`` in the given sub-folders of ``root``, else by a bounded walk.

    The walk prefers a unique hit, then a unique hit under a ``google`` folder (mMARCO v2 over the
    v1 ``helsinki`` translation); several candidates otherwise is a ClirkitError naming them.
    """
    names = list(names)
    subdirs = list(subdirs)
    for name in names:
        for sub in subdirs:
            p = root / sub / name if sub else root / name
            if p.is_file():
                return p
    wanted = set(names)
    hits: dict[str, list[Path]] = {}
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f in wanted:
                hits.setdefault(f, []).append(Path(dirpath) / f)
    for name in names:
        found = sorted(hits.get(name, []))
        if len(found) == 1:
            return found[0]
        google = [p for p in found if "google" in p.parts]
        if len(google) == 1:
            return google[0]
        if found:
            raise ClirkitError(f"{len(found)} files named {name!r} under {root}", path=root,
                               fix="point --data-dir at the one folder to use: "
                                   + ", ".join(str(p.parent) for p in found))
    return None
