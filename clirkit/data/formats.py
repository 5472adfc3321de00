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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clirkit import __version__
from clirkit.errors import ClirkitError

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
    if check_ids and not ids_checked_at_prepare(path, card, split):
        validate_ids(ds)
    return ds


def ids_checked_at_prepare(path: Path, card: dict[str, Any], split: str) -> bool:
    """True when ``prepare`` checked the ids of ``split`` (the card says so) and the corpus,
    queries and qrels are still the files it checked (size and mtime, as :func:`trusted_sha256`):
    then loading the dataset need not read the whole corpus again."""
    needed = {"corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"}
    return split in (card.get("ids_checked") or []) and needed <= trusted_sha256(path).keys()


def validate_ids(ds: Dataset) -> None:
    """Every judged query and document must exist; the corpus must not be empty."""
    check_ids(ds.corpus_path, ds.queries, [ds.path / "qrels" / f"{ds.split}.tsv"])


def check_ids(corpus_path: Path, queries: Mapping[str, Any], qrels_paths: list[Path]) -> None:
    """One pass over the corpus: ids are unique, the corpus is not empty, and every query and
    document the qrels files judge exists."""
    doc_ids: set[str] = set()
    for n, rec in iter_jsonl(corpus_path, ("_id",)):
        if rec["_id"] in doc_ids:
            raise ClirkitError(f"duplicate document id {rec['_id']!r}", path=corpus_path, line=n,
                               fix="ids must be unique")
        doc_ids.add(rec["_id"])
    if not doc_ids:
        raise ClirkitError("the corpus is empty", path=corpus_path, fix="prepare a dataset with documents")
    for qrels_path in qrels_paths:
        for n, (qid, did, _) in iter_tsv(qrels_path, header=QRELS_HEADER):
            if qid not in queries:
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


def prepare_record(cfg: Any) -> dict[str, Any]:
    """How a dataset was prepared, as its card's ``prepared_with`` records it: every resolved
    field of the ``clirkit prepare`` configuration but ``out`` (where it went, not how it was
    made). A grid compares it with its ``[[prepare]]`` entry before reusing the folder."""
    return {k: v for k, v in cfg.resolved().items() if k != "out"}


class DatasetWriter:
    """Stream a canonical dataset into ``out`` atomically.

    Use as a context manager; on success the card is written and the temporary folder renamed
    to ``out``; on an exception the temporary folder is removed and ``out`` is untouched.

    Args:
        out: the final folder; it must not exist yet.
        name: dataset name for the card.
        prepared_with: the prepare configuration (a :class:`clirkit.config.Config`), recorded in
            the card as ``prepared_with`` (:func:`prepare_record`).
    """

    def __init__(self, out: str | Path, name: str, prepared_with: Any = None) -> None:
        self.out = Path(out)
        self.name = name
        self.prepared_with = prepare_record(prepared_with) if prepared_with is not None else None
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
        qrels = sorted((self._tmp / "qrels").glob("*.tsv"))
        if (self._tmp / "corpus.jsonl").is_file() and qrels:
            # checked once here, so that loading the dataset later need not read the corpus again
            check_ids(self._tmp / "corpus.jsonl", read_queries(self._tmp / "queries.jsonl")[0], qrels)
            card = {**card, "ids_checked": [p.stem for p in qrels]}
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
            **({"prepared_with": self.prepared_with} if self.prepared_with is not None else {}),
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
