"""WikiCLIR: cross-lingual retrieval collections built from Wikipedia inter-language links.

Two releases share the name; ``variant`` picks one.

``schamoni`` -- Schamoni, Hieber, Sokolov, Riezler. "Learning Translational and Knowledge-based
Similarities from Relevance Rankings for Cross-Language Retrieval." ACL 2014. German queries
(first sentences of German articles, title removed), English Wikipedia documents (first 200
words). https://www.cl.uni-heidelberg.de/statnlpgroup/wikiclir/ -- each split (train, dev, test)
comes as three files::

    <split>.queries   DE-page-id \\t first sentence
    <split>.docs      EN-page-id \\t article (200 words max)
    <split>.qrels     DE-page-id \\t EN-page-id \\t level     (the page documents 3 columns;
                                                             4-column TREC "qid 0 docid rel" is
                                                             accepted too, tab- or space-separated)

Level 3 is the English cross-lingual mate, 2 an article linked both ways with the mate.
Splits are discovered from the folder: a file's split is the last ``.``/``_``/``-`` separated
token of its stem (``dev.queries`` -> dev, ``wikiclir-test1.qrels`` -> test1).

``sasaki`` -- Sasaki, Sun, Schamoni, Duh, Inui. "Cross-lingual Learning-to-Rank with Shared
Representations." NAACL 2018. English queries, documents in 25 languages (incl. sw, tl).
https://www.cs.jhu.edu/~kevinduh/a/wikiclir2018/ -- the ``wiki-clir`` release folder holds::

    english/wiki_en.queries                  qid \\t title \\t first sentence
    <language>/wiki_<lang>.documents         docid \\t title \\t text
    <language>/en2<lang>.rel                 qid docid rel   (3 columns, as ir_datasets reads it;
                                                             4-column TREC accepted too)

with ``<language>`` the English name (``swahili``, ``norwegian_(bokmal)``, ``simple_english``...).
Grade 2 is the cross-lingual mate, 1 an article linked both ways with it. ``split="all"`` (the
default) uses ``en2<lang>.rel`` whole, as ``ir_datasets`` id ``wikiclir/<lang>`` does; if the
language folder also holds per-split query/qrels files (e.g. ``dev``, ``test1``), ``split`` picks
them by name. Without ``data_dir`` the ``ir_datasets`` id is used when the package and the data
are available.

Ids are namespaced with the Wikipedia edition: ``q:<lang>:<page id>``, ``d:<lang>:<page id>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from clirkit.config import Config
from clirkit.data.download import guard_irds, load_irds
from clirkit.data.formats import DatasetWriter, iter_lines
from clirkit.data.sources import find_file, iter_id_text, read_trec_qrels, write_retrieval
from clirkit.errors import ClirkitError

#: Sasaki et al. 2018 languages: ISO code (ir_datasets id) -> (release folder, file suffix).
SASAKI_LANGUAGES: dict[str, tuple[str, str]] = {
    "ar": ("arabic", "ar"), "ca": ("catalan", "ca"), "cs": ("czech", "cs"), "de": ("german", "de"),
    "en-simple": ("simple_english", "simple"), "es": ("spanish", "es"), "fi": ("finnish", "fi"),
    "fr": ("french", "fr"), "it": ("italian", "it"), "ja": ("japanese", "ja"), "ko": ("korean", "ko"),
    "nl": ("dutch", "nl"), "nn": ("norwegian_(nynorsk)", "nn"), "no": ("norwegian_(bokmal)", "no"),
    "pl": ("polish", "pl"), "pt": ("portuguese", "pt"), "ro": ("romanian", "ro"), "ru": ("russian", "ru"),
    "sv": ("swedish", "sv"), "sw": ("swahili", "sw"), "tl": ("tagalog", "tl"), "tr": ("turkish", "tr"),
    "uk": ("ukrainian", "uk"), "vi": ("vietnamese", "vi"), "zh": ("chinese", "zh"),
}
#: Schamoni et al. 2014 is German queries -> English documents only.
SCHAMONI_LANGUAGES = ("de",)

GRADES = {
    "schamoni": {"3": "the English cross-lingual mate", "2": "links to the mate and is linked by it"},
    "sasaki": {"2": "the cross-lingual mate", "1": "links to the mate and is linked by it"},
}
LICENCE = {
    "schamoni": "CC BY-SA 4.0 (as stated on the WikiCLIR page; Wikipedia text)",
    "sasaki": "Wikipedia text, CC BY-SA (Wikipedia's licence; the release states no other)",
}
CITATION = {
    "schamoni": "Schamoni, Hieber, Sokolov, Riezler. ACL 2014",
    "sasaki": "Sasaki, Sun, Schamoni, Duh, Inui. NAACL 2018",
}


class WikiClirConfig(Config):
    """Options of ``clirkit prepare wikiclir``."""

    variant: Literal["schamoni", "sasaki"] = Field(
        "sasaki", description="schamoni = Schamoni et al. 2014 (German queries, English documents); "
                              "sasaki = Sasaki et al. 2018 (English queries, documents in 25 languages).")
    lang: str | None = Field(
        None, description="sasaki: the document language (e.g. sw, tl, de, en-simple; required); "
                          "schamoni: the query language, only de.")
    data_dir: Path | None = Field(
        None, description="Folder with the release files (schamoni: the .queries/.docs/.qrels files; "
                          "sasaki: the wiki-clir folder or its parent). sasaki without it uses ir_datasets.")
    split: str | None = Field(
        None, description="schamoni: train, dev, test... as found in the folder (default test); "
                          "sasaki: all (default, the whole en2<lang>.rel) or a split whose files exist.")
    query_field: Literal["first_sentence", "title", "title_first_sentence"] = Field(
        "first_sentence", description="sasaki only: which fields of wiki_en.queries form the query text.")
    out: Path | None = Field(None, description="Output folder (default data/wikiclir-<variant>-<lang>-<split>).")


def _check_lang(cfg: WikiClirConfig) -> str:
    if cfg.variant == "schamoni":
        lang = (cfg.lang or "de").lower()
        if lang not in SCHAMONI_LANGUAGES:
            raise ClirkitError(f"unknown language {cfg.lang!r} for WikiCLIR (Schamoni)",
                               fix="Schamoni et al. 2014 has German queries only: use --lang de "
                                   "(or --variant sasaki for other languages)")
        return lang
    if cfg.lang is None:
        raise ClirkitError("WikiCLIR (Sasaki) needs the document language",
                           fix=f"pass --lang, one of: {', '.join(sorted(SASAKI_LANGUAGES))}")
    lang = cfg.lang.lower()
    if lang == "simple":
        lang = "en-simple"
    if lang not in SASAKI_LANGUAGES:
        raise ClirkitError(f"unknown language {cfg.lang!r} for WikiCLIR (Sasaki)",
                           fix=f"use one of: {', '.join(sorted(SASAKI_LANGUAGES))}")
    return lang


def _split_token(path: Path, folder: Path | None = None) -> str:
    """The split a file belongs to: its sub-folder's name (``dev/x.rel``) or its stem's last token."""
    rel = path.relative_to(folder).parts if folder is not None else (path.name,)
    if len(rel) > 1:
        return rel[0].lower()
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return re.split(r"[._-]", stem)[-1].lower()


def _discover(folder: Path, suffixes: tuple[str, ...], max_depth: int = 2) -> dict[str, dict[str, list[Path]]]:
    """``{split: {suffix: [files]}}`` for files below ``folder`` whose suffix is in ``suffixes``."""
    found: dict[str, dict[str, list[Path]]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in suffixes and len(p.relative_to(folder).parts) <= max_depth:
            found.setdefault(_split_token(p, folder), {}).setdefault(p.suffix, []).append(p)
    return found


def _one(files: list[Path], what: str, split: str) -> Path:
    if len(files) > 1:
        raise ClirkitError(f"{len(files)} {what} files for split {split!r}: {', '.join(map(str, files))}",
                           path=files[0].parent, fix="keep one per split in the folder")
    return files[0]


# --------------------------------------------------------------------------- Schamoni et al. 2014


def _schamoni_files(data_dir: Path, split: str | None) -> tuple[str, dict[str, Path]]:
    if not data_dir.is_dir():
        raise ClirkitError("WikiCLIR folder not found", path=data_dir,
                           fix="download WikiCLIR from https://www.cl.uni-heidelberg.de/statnlpgroup/wikiclir/ "
                               "and pass the unpacked folder as --data-dir")
    found = _discover(data_dir, (".queries", ".docs", ".qrels"))
    complete = sorted(s for s, kinds in found.items() if {".queries", ".docs", ".qrels"} <= set(kinds))
    split = (split or "test").lower()
    if split not in complete:
        raise ClirkitError(f"no complete split {split!r} (.queries, .docs and .qrels) in {data_dir}", path=data_dir,
                           fix=f"use --split with one of: {', '.join(complete) or '(none found)'}")
    kinds = found[split]
    return split, {k.lstrip("."): _one(v, k, split) for k, v in kinds.items()}


def _prepare_schamoni(cfg: WikiClirConfig, lang: str) -> Path:
    if cfg.data_dir is None:
        raise ClirkitError("WikiCLIR (Schamoni) is read from local files only",
                           fix="download it from https://www.cl.uni-heidelberg.de/statnlpgroup/wikiclir/ "
                               "and pass --data-dir")
    split, files = _schamoni_files(Path(cfg.data_dir), cfg.split)
    qrels = read_trec_qrels(files["qrels"])
    out = cfg.out or Path("data") / f"wikiclir-schamoni-{lang}-{split}"

    def docs() -> Iterator[tuple[str, str, str]]:
        for did, text in iter_id_text(files["docs"], "article"):
            yield did, "", text

    with DatasetWriter(out, f"wikiclir-schamoni-{lang}-en", prepared_with=cfg) as w:
        stats = write_retrieval(
            w, split=split, qrels=qrels, docs=docs, queries=iter_id_text(files["queries"], "query"),
            doc_id=lambda d: f"d:en:{d}", query_id=lambda q: f"q:de:{q}", doc_lang="en", query_lang="de")
        w.finish(**_card(cfg, "schamoni", split, ["de", "en"], "de", "en",
                         {"files": {k: str(v) for k, v in files.items()}}, stats))
    return out


# --------------------------------------------------------------------------- Sasaki et al. 2018


def _sasaki_root(data_dir: Path, folder: str) -> Path:
    for root in (data_dir, data_dir / "wiki-clir", data_dir.parent):
        if (root / folder).is_dir() and (root / "english").is_dir():
            return root
    raise ClirkitError(f"no {folder}/ and english/ folders in {data_dir}", path=data_dir,
                       fix="download wiki-clir.tar.gz from https://www.cs.jhu.edu/~kevinduh/a/wikiclir2018/, "
                           "unpack it and pass the wiki-clir folder (or its parent) as --data-dir")


def _sasaki_queries(path: Path, field: str) -> Iterator[tuple[str, str]]:
    """Stream ``(qid, text)`` from ``wiki_en.queries`` (``qid \\t title \\t first sentence``)."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        while len(cols) > 3 and not cols[-1].strip():  # trailing tabs
            cols.pop()
        if len(cols) == 2:  # a title-only query file: id \t text
            cols.append("")
        if len(cols) != 3 or not cols[0].strip():
            raise ClirkitError(f"expected 3 tab-separated columns (qid, title, first sentence), found {len(cols)}",
                               path=path, line=n, fix="check that this is wiki_en.queries")
        qid, title, first = (c.strip() for c in cols)
        if field == "title":
            text = title
        elif field == "first_sentence":
            text = first or title
        else:
            text = f"{title} {first}".strip()
        yield qid, text


def _sasaki_docs(path: Path) -> Iterator[tuple[str, str, str]]:
    """Stream ``(docid, title, text)`` from ``wiki_<lang>.documents``."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        did, sep, rest = line.partition("\t")
        title, sep2, text = rest.partition("\t")
        if not sep or not did.strip():
            raise ClirkitError("expected 3 tab-separated columns (docid, title, text)", path=path, line=n,
                               fix="check that this is a wiki_<lang>.documents file")
        if not sep2:  # a docid \t text line: no title column
            title, text = "", title
        yield did.strip(), title.strip(), text.strip()


def _sasaki_local(cfg: WikiClirConfig, lang: str) -> tuple[str, dict, Iterable, Any, dict]:
    folder, sfx = SASAKI_LANGUAGES[lang]
    root = _sasaki_root(Path(cfg.data_dir), folder)  # type: ignore[arg-type]
    lang_dir = root / folder
    docs_path = find_file(lang_dir, [f"wiki_{sfx}.documents"], [""], max_depth=2)
    all_rel = lang_dir / f"en2{sfx}.rel"
    queries_path = root / "english" / "wiki_en.queries"
    split = (cfg.split or "all").lower()
    if split == "all":
        qrels_path = all_rel
    else:
        found = _discover(lang_dir, (".rel", ".qrel", ".qrels", ".queries"))
        found.pop(_split_token(all_rel, lang_dir), None)  # "en2sw.rel" is the whole set, not a split
        kinds = found.get(split, {})
        rels = [p for k in (".rel", ".qrel", ".qrels") for p in kinds.get(k, [])]
        if not rels:
            have = sorted(s for s, k in found.items() if {".rel", ".qrel", ".qrels"} & set(k))
            raise ClirkitError(f"no qrels for split {split!r} in {lang_dir}", path=lang_dir,
                               fix=f"use --split all{''.join(', ' + s for s in have)}")
        qrels_path = _one(rels, "qrels", split)
        if kinds.get(".queries"):
            queries_path = _one(kinds[".queries"], "queries", split)
    needed = ((docs_path, f"wiki_{sfx}.documents"), (qrels_path, qrels_path.name), (queries_path, "wiki_en.queries"))
    for p, what in needed:
        if p is None or not Path(p).is_file():
            raise ClirkitError(f"missing {what}", path=lang_dir if p is None else p,
                               fix="the release folder must hold english/wiki_en.queries and "
                                   f"{folder}/wiki_{sfx}.documents, {folder}/en2{sfx}.rel")
    qrels = read_trec_qrels(qrels_path)
    files = {"queries": str(queries_path), "docs": str(docs_path), "qrels": str(qrels_path)}
    return split, qrels, _sasaki_queries(queries_path, cfg.query_field), (lambda: _sasaki_docs(docs_path)), \
        {"files": files}


def _sasaki_irds(cfg: WikiClirConfig, lang: str) -> tuple[str, dict, Iterable, Any, dict]:
    split = (cfg.split or "all").lower()
    if split != "all":
        raise ClirkitError(f"ir_datasets' wikiclir/{lang} has no split {split!r} (only the whole set)",
                           fix="use --split all, or pass --data-dir with the release files")
    dsid = f"wikiclir/{lang}"
    ds = load_irds(dsid)
    qrels: dict[str, dict[str, int]] = {}
    for r in guard_irds(ds.qrels_iter, dsid):
        qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)

    def queries() -> Iterator[tuple[str, str]]:
        for q in guard_irds(ds.queries_iter, dsid):
            title, first = getattr(q, "title", ""), getattr(q, "first_sent", getattr(q, "text", ""))
            text = {"title": title, "first_sentence": first or title}.get(cfg.query_field, f"{title} {first}".strip())
            yield q.query_id, text

    def docs() -> Iterator[tuple[str, str, str]]:
        for d in guard_irds(ds.docs_iter, dsid):
            yield d.doc_id, getattr(d, "title", ""), d.text

    return split, qrels, queries(), docs, {"ir_datasets": dsid}


def _prepare_sasaki(cfg: WikiClirConfig, lang: str) -> Path:
    reader = _sasaki_local if cfg.data_dir is not None else _sasaki_irds
    split, qrels, queries, docs, source = reader(cfg, lang)
    doc_lang = "en" if lang == "en-simple" else lang
    out = cfg.out or Path("data") / f"wikiclir-sasaki-{lang}-{split}"
    with DatasetWriter(out, f"wikiclir-sasaki-en-{lang}", prepared_with=cfg) as w:
        stats = write_retrieval(
            w, split=split, qrels=qrels, docs=docs, queries=queries,
            doc_id=lambda d: f"d:{lang}:{d}", query_id=lambda q: f"q:en:{q}", doc_lang=doc_lang, query_lang="en")
        w.finish(**_card(cfg, "sasaki", split, sorted({"en", doc_lang}), "en", lang, source, stats))
    return out


def _card(cfg: WikiClirConfig, variant: str, split: str, languages: list[str], ql: str, dl: str,
          source: dict, stats: dict) -> dict[str, Any]:
    return {
        "source": {"dataset": f"WikiCLIR ({variant})", "citation": CITATION[variant], **source},
        "licence": LICENCE[variant],
        "languages": languages,
        "query_lang": ql,
        "doc_lang": dl,
        "variant": variant,
        "split": split,
        "grades": GRADES[variant],
        "id_namespaces": {"queries": f"q:{ql}:<page id>", "documents": f"d:{dl}:<page id>"},
        "filters": {"queries": f"only queries judged in {split} on a written document",
                    "query_field": cfg.query_field if variant == "sasaki" else None},
        "stats": stats,
        "config": cfg.resolved(),
    }


def prepare_wikiclir(cfg: WikiClirConfig) -> Path:
    """Prepare a WikiCLIR collection (Schamoni et al. 2014, or Sasaki et al. 2018) in the canonical layout.

    Streams the documents and queries; only the judgements (and the ids of judged documents) are
    held in memory. Only queries judged in the split on a written document are kept.

    Returns:
        The written dataset folder.

    Raises:
        ClirkitError: unknown language, missing files or split, malformed lines, ir_datasets unavailable.
    """
    lang = _check_lang(cfg)
    if cfg.variant == "schamoni":
        return _prepare_schamoni(cfg, lang)
    return _prepare_sasaki(cfg, lang)
