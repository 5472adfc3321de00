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

The streaming readers and the "judged set first, then the collection" writer it shares with
WikiCLIR live in :mod:`clirkit.data.formats`; ir_datasets access goes through :mod:`clirkit.data.download`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from clirkit.config import Config
from clirkit.data.download import guard_irds, load_irds
from clirkit.data.formats import DatasetWriter
from clirkit.data.sources import find_file, iter_id_text, read_trec_qrels, write_retrieval
from clirkit.errors import ClirkitError

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
        q_ds, d_ds = load_irds(q_id), load_irds(d_id)
        qrels = {}
        for r in guard_irds(q_ds.qrels_iter, q_id):
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)

        def docs() -> Iterator[tuple[str, str, str]]:
            for d in guard_irds(d_ds.docs_iter, d_id):
                yield d.doc_id, "", d.text

        queries = ((q.query_id, q.text) for q in guard_irds(q_ds.queries_iter, q_id))
        source = {"ir_datasets": {"queries_qrels": q_id, "docs": d_id}}
        triples = None
    with DatasetWriter(out, f"mmarco-{cfg.query_lang}-{cfg.doc_lang}", prepared_with=cfg) as w:
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
