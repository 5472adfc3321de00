"""The prepare sources' shared toolbox: readers of the id/text and TREC files they ship, a compact
id set, and the writer of a retrieval collection (corpus, queries, qrels) in the canonical layout
(:mod:`clirkit.data.formats`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from clirkit.data.formats import DatasetWriter, iter_lines, relevance_grade
from clirkit.errors import ClirkitError
from clirkit.progress import track
from clirkit.seeding import set_seed


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
