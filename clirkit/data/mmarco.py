"""mMARCO: MS MARCO passage ranking machine-translated into 13 languages, prepared cross-lingually.

Reference:
    Bonifacio, Jeronymo, Abonizio, Campiotti, Fadaee, Lotufo, Nogueira. "mMARCO: A Multilingual
    Version of the MS MARCO Passage Ranking Dataset." arXiv:2108.13897 (2021).

The translations keep MS MARCO's ids, so a query in one language and a passage in another pair
up through the shared id: queries come from the ``query_lang`` file, passages from the
``doc_lang`` collection, judgements from the (language-independent) MS MARCO qrels.

Files read (the unicamp-dl release, https://huggingface.co/datasets/unicamp-dl/mmarco, whose
v2 files live under ``data/google/`` and name languages in English, e.g. ``german``)::

    collections/{language}_collection.tsv            pid \\t passage
    queries/dev/{language}_queries.dev.small.tsv     qid \\t query   (6,980 judged dev queries)
    queries/dev/{language}_queries.dev.tsv           qid \\t query   (full dev)
    queries/train/{language}_queries.train.tsv       qid \\t query
    qrels.dev.small.tsv                              qid \\t 0 \\t pid \\t 1   (TREC-style)
    qrels.dev.tsv                                    same, full dev
    triples.train.ids.small.tsv                      qid \\t positive pid \\t negative pid

Both that nested layout (rooted at ``data/``, ``data/google/`` or the mmarco folder itself) and a
flat folder holding the same file names are accepted; ``{lang}_collection.tsv`` with the ISO code
is accepted too. ``qrels.train.tsv`` is not part of mMARCO: take it from MS MARCO for ``train``.

This module also holds the streaming "judged set first, then the collection" writer that the
WikiCLIR reader shares (:func:`write_retrieval`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from clirkit.config import Config
from clirkit.data.formats import DatasetWriter, iter_lines
from clirkit.errors import ClirkitError
from clirkit.seeding import set_seed

#: ISO 639-1 code -> the English language name the unicamp-dl files use.
LANGUAGES: dict[str, str] = {
    "ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french",
    "hi": "hindi", "id": "indonesian", "it": "italian", "ja": "japanese", "nl": "dutch",
    "pt": "portuguese", "ru": "russian", "vi": "vietnamese", "zh": "chinese",
}
# ir_datasets spells Dutch "dt" in its mmarco/v2 ids.
_IRDS_CODE = {"nl": "dt"}

LICENCE = ("Apache-2.0 as stated on the unicamp-dl/mmarco dataset card; the underlying MS MARCO "
           "passages and queries are under Microsoft's MS MARCO terms (non-commercial research)")
CITATION = "Bonifacio et al. 2021, mMARCO, arXiv:2108.13897"

# split -> (query-file suffixes to try in order, query sub-folder, qrels file name)
_SPLITS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "dev": (("dev.small", "dev"), "dev", "qrels.dev.small.tsv"),
    "dev-full": (("dev",), "dev", "qrels.dev.tsv"),
    "train": (("train",), "train", "qrels.train.tsv"),
}
_ROOTS = ("", "data", "google", "data/google")


def normalise_language(value: str) -> str:
    """Map an ISO 639-1 code or an English language name to the mMARCO code; unknown -> ClirkitError."""
    v = value.strip().lower()
    if v == "dt":  # ir_datasets' spelling of Dutch
        v = "nl"
    if v in LANGUAGES:
        return v
    for code, name in LANGUAGES.items():
        if v == name:
            return code
    known = ", ".join(f"{c} ({n})" for c, n in sorted(LANGUAGES.items()))
    raise ClirkitError(f"unknown mMARCO language {value!r}", fix=f"use one of: {known}")


class MMarcoConfig(Config):
    """Options of ``clirkit prepare mmarco``."""

    query_lang: str = Field("en", description="Language of the queries (ISO 639-1 code or English name, e.g. de).")
    doc_lang: str = Field("en", description="Language of the passages (ISO 639-1 code or English name).")
    data_dir: Path | None = Field(
        None, description="Folder with the unicamp-dl mMARCO files (flat or nested as on the hub); "
                          "if omitted, ir_datasets ids mmarco/v2/<lang>/... are used when available.")
    split: Literal["dev", "dev-full", "train"] = Field(
        "dev", description="dev = the 6,980-query qrels.dev.small.tsv (the usual evaluation); "
                           "dev-full = qrels.dev.tsv; train = MS MARCO's qrels.train.tsv.")
    max_docs: int | None = Field(
        None, ge=1, description="Keep at most this many passages, always including every judged one.")
    fill: Literal["first", "random"] = Field(
        "first", description="How max_docs fills up after the judged passages: the first ones in file "
                             "order, or a seeded uniform sample (reservoir; one extra pass over the collection).")
    seed: int = Field(0, ge=0, description="Seed of the random fill (0 is a seed).")
    out: Path | None = Field(None, description="Output folder (default data/mmarco-<q>-<d>-<split>[-<max_docs>]).")

    @field_validator("query_lang", "doc_lang")
    @classmethod
    def _known_language(cls, v: str) -> str:
        return normalise_language(v)


# --------------------------------------------------------------------------- shared helpers


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
        try:
            grade = int(rel)
        except ValueError:
            raise ClirkitError(f"relevance {rel!r} is not an integer", path=path, line=n,
                               fix="the last column must be an integer grade") from None
        qrels.setdefault(qid, {})[did] = grade
    return qrels


def iter_id_text(path: Path, what: str) -> Iterator[tuple[str, str]]:
    """Stream ``(id, text)`` pairs from an ``id \\t text`` file (blank lines skipped)."""
    for n, line in iter_lines(path):
        if line.strip():
            yield split_id_text(line, path, n, what)


def progress(iterable: Iterable, description: str) -> Iterable:
    """Wrap long loops in a rich progress display when stderr is a terminal (silent in tests and logs)."""
    try:
        from rich.console import Console
        from rich.progress import track
    except ImportError:  # rich is a CLI nicety, never a requirement of the data layer
        return iterable
    console = Console(stderr=True)
    if not console.is_terminal:
        return iterable
    return track(iterable, description=description, console=console, transient=True)


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
        for did, _, _ in progress(docs(), "sampling passages"):
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
    for did, title, text in progress(docs(), "writing passages"):
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


# --------------------------------------------------------------------------- mMARCO


def _default_out(cfg: MMarcoConfig) -> Path:
    tail = f"-{cfg.max_docs}" if cfg.max_docs is not None else ""
    return Path("data") / f"mmarco-{cfg.query_lang}-{cfg.doc_lang}-{cfg.split}{tail}"


def _local_files(cfg: MMarcoConfig, root: Path) -> dict[str, Path | None]:
    if not root.is_dir():
        raise ClirkitError("mMARCO folder not found", path=root,
                           fix="download the unicamp-dl/mmarco files "
                               "(https://huggingface.co/datasets/unicamp-dl/mmarco) and pass the folder as --data-dir")
    suffixes, qdir, qrels_name = _SPLITS[cfg.split]
    ql, dl = cfg.query_lang, cfg.doc_lang
    coll_names = [f"{LANGUAGES[dl]}_collection.tsv", f"{dl}_collection.tsv"]
    if dl == "en":
        coll_names.append("collection.tsv")  # the original MS MARCO name
    query_names = [f"{pre}_queries.{s}.tsv" for s in suffixes for pre in (LANGUAGES[ql], ql)]
    if ql == "en":
        query_names += [f"queries.{s}.tsv" for s in suffixes]
    collection = find_file(root, coll_names, [f"{r}/collections".strip("/") for r in _ROOTS] + [""])
    queries = find_file(root, query_names, [f"{r}/queries/{qdir}".strip("/") for r in _ROOTS] + [""])
    qrels = find_file(root, [qrels_name], list(_ROOTS))
    triples = find_file(root, ["triples.train.ids.small.tsv"], list(_ROOTS))
    missing = [(what, names) for what, names, p in (("collection", coll_names, collection),
                                                    ("queries", query_names, queries),
                                                    ("qrels", [qrels_name], qrels)) if p is None]
    if missing:
        what, names = missing[0]
        extra = " (qrels.train.tsv comes from MS MARCO, https://microsoft.github.io/msmarco/)" if cfg.split == "train" \
            and what == "qrels" else ""
        raise ClirkitError(f"no mMARCO {what} file for split {cfg.split!r} in {root}", path=root,
                           fix=f"the folder must hold one of {', '.join(names)} (flat or nested as on the hub){extra}")
    return {"collection": collection, "queries": queries, "qrels": qrels, "triples": triples}


def _irds(dsid: str):
    """Load an ir_datasets dataset, or explain in one line why it cannot be used here."""
    try:
        import ir_datasets
    except ImportError:
        raise ClirkitError("no --data-dir given and ir_datasets is not installed",
                           fix="download the files and pass --data-dir DIR (or pip install ir_datasets)") from None
    try:
        return ir_datasets.load(dsid)
    except Exception as e:  # unknown id, missing download metadata, ...
        raise ClirkitError(f"ir_datasets cannot load {dsid!r} ({type(e).__name__}: {e})",
                           fix="download the files and pass --data-dir DIR") from None


def guard_irds(factory: Callable[[], Iterable], dsid: str) -> Iterator:
    """Iterate an ir_datasets iterator, turning download/network failures into one ClirkitError."""
    try:
        yield from factory()
    except ClirkitError:
        raise
    except Exception as e:  # ir_datasets downloads lazily, so being offline surfaces here
        raise ClirkitError(f"ir_datasets could not provide {dsid!r} ({type(e).__name__}: {e})",
                           fix="this machine may be offline or the data not downloaded: pass --data-dir DIR "
                               "with the release files") from None


def prepare_mmarco(cfg: MMarcoConfig) -> Path:
    """Prepare a (cross-lingual) mMARCO retrieval dataset in the canonical layout.

    Queries are read from the ``query_lang`` files and passages from the ``doc_lang`` collection;
    they pair through MS MARCO's shared ids (Bonifacio et al. 2021, arXiv:2108.13897). Only queries
    judged in ``split`` are written. Ids are namespaced ``q:<qid>`` and ``d:<pid>``.

    With ``max_docs`` the collection is subset in two streaming passes: the qrels first (the
    judged passage ids), then the collection, keeping every judged passage and filling up to
    ``max_docs`` with the first other passages in file order (``fill="first"``) or with a seeded
    uniform sample of them (``fill="random"``, one more pass). Output stays in file order.

    Returns:
        The written dataset folder.

    Raises:
        ClirkitError: unknown language, missing files, malformed lines, ir_datasets unavailable.
    """
    out = cfg.out or _default_out(cfg)
    source: dict[str, Any]
    if cfg.data_dir is not None:
        files = _local_files(cfg, Path(cfg.data_dir))
        qrels = read_trec_qrels(files["qrels"])

        def docs() -> Iterator[tuple[str, str, str]]:
            for pid, text in iter_id_text(files["collection"], "passage"):
                yield pid, "", text

        queries: Iterable[tuple[str, str]] = iter_id_text(files["queries"], "query")
        source = {"files": {k: str(v) for k, v in files.items() if v is not None and k != "triples"}}
        triples = files["triples"]
    else:
        qc = _IRDS_CODE.get(cfg.query_lang, cfg.query_lang)
        dc = _IRDS_CODE.get(cfg.doc_lang, cfg.doc_lang)
        tail = {"dev": "dev/small", "dev-full": "dev", "train": "train"}[cfg.split]
        q_id = f"msmarco-passage/{tail}" if qc == "en" else f"mmarco/v2/{qc}/{tail}"
        d_id = "msmarco-passage" if dc == "en" else f"mmarco/v2/{dc}"
        q_ds, d_ds = _irds(q_id), _irds(d_id)
        qrels = {}
        for r in guard_irds(q_ds.qrels_iter, q_id):
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)

        def docs() -> Iterator[tuple[str, str, str]]:
            for d in guard_irds(d_ds.docs_iter, d_id):
                yield d.doc_id, "", d.text

        queries = ((q.query_id, q.text) for q in guard_irds(q_ds.queries_iter, q_id))
        source = {"ir_datasets": {"queries_qrels": q_id, "docs": d_id}}
        triples = None
    with DatasetWriter(out, f"mmarco-{cfg.query_lang}-{cfg.doc_lang}") as w:
        stats = write_retrieval(
            w, split=cfg.split, qrels=qrels, docs=docs, queries=queries,
            doc_id=lambda d: f"d:{d}", query_id=lambda q: f"q:{q}",
            doc_lang=cfg.doc_lang, query_lang=cfg.query_lang,
            max_docs=cfg.max_docs, fill=cfg.fill, seed=cfg.seed)
        card: dict[str, Any] = {
            "source": {"dataset": "mMARCO v2 (unicamp-dl)", "citation": CITATION, **source},
            "licence": LICENCE,
            "languages": sorted({cfg.query_lang, cfg.doc_lang}),
            "query_lang": cfg.query_lang,
            "doc_lang": cfg.doc_lang,
            "variant": f"{cfg.query_lang}->{cfg.doc_lang}",
            "split": cfg.split,
            "id_namespaces": {"queries": "q:<MS MARCO qid>", "documents": "d:<MS MARCO pid>"},
            "filters": {
                "queries": f"only queries judged in {cfg.split} on a written passage",
                "max_docs": cfg.max_docs,
                "fill": stats["fill"],
                "seed": stats["seed"],
            },
            "stats": stats,
            "config": cfg.resolved(),
        }
        if triples is not None:
            # Recorded, not copied: the triples name train queries and passages that this
            # dataset may not contain; a trainer reads them with the same q:/d: namespaces.
            card["training_triples"] = {"path": str(triples), "format": "qid \\t positive pid \\t negative pid",
                                        "id_namespaces": "prefix q: and d: to match this dataset"}
        w.finish(**card)
    return out
