"""Parallel text (bitext) for distillation: read, clean, deduplicate, split, write ``bitext/{train,dev}.tsv``.

OPTICAL (Huang, Yu, Allan, WSDM 2023, arXiv:2301.12566) and sentence-level MSE distillation
(Reimers & Gurevych, EMNLP 2020, arXiv:2004.09813) need only sentence pairs whose English side
the frozen teacher encodes. This module turns the common release formats into the canonical
bitext table (header ``id src tgt``), where for a pair named ``en-sw`` ``src`` is always the
``en`` side and ``tgt`` the ``sw`` side, whatever the column order of the input.

Input formats (all may be gzip/xz/bz2-compressed; UTF-8; a BOM and CRLF line ends are tolerated):

* ``moses`` -- two line-aligned plain-text files, one sentence per line (OPUS "Moses" downloads,
  ``Corpus.en-sw.en`` / ``Corpus.en-sw.sw``). A file whose last suffix names a language of the
  pair is assigned to that side (the other file to the other side); a suffix naming another
  language, or both files one language, is refused; with no language suffix the first file is
  ``src`` (with a warning).
* ``tsv`` -- ``src \\t tgt`` per line; a first line ``src \\t tgt``, ``source \\t target`` or the two
  language codes is taken as a header (codes in the other order swap the columns; two codes of
  other languages are read as data with a warning: short word pairs such as ``to \\t sa`` look alike).
* ``wikimatrix`` -- WikiMatrix (Schwenk et al., EACL 2021, arXiv:1907.05791) ``margin \\t s1 \\t s2``;
  pairs with margin >= ``threshold`` (default 1.04, the paper's recommended cut) are kept. Column
  order follows the file name ``WikiMatrix.<l1>-<l2>.tsv`` (a name of other languages is
  refused), else the pair order (with a warning).
* ``ccaligned`` -- CCAligned sentence pairs (El-Kishky et al., EMNLP 2020), released as
  ``<l1>_XX-<l2>_YY.tsv.xz`` with columns ``sentence(l1) \\t sentence(l2) \\t LASER similarity``;
  most files are ``en_XX-<lang>`` but some are ``<lang>-en_XX``, so the order is read from the
  file name (another language than the pair's is refused; a non-ISO code such as ``cx_PH``
  opposite English is accepted), else English first (with a warning). ``threshold`` optionally
  filters on the similarity.
* ``tmx`` -- TMX 1.4 translation memories (``tu``/``tuv xml:lang``/``seg``), parsed with
  ``xml.etree.ElementTree.iterparse`` and cleared as it goes; ``xml:lang="en-US"`` matches ``en``
  by its primary subtag; inline markup codes (``bpt``, ``ept``, ``ph``, ``it``, ``ut``) are dropped.

Processing, in this order, with the count before and after each step in the card:

1. score threshold (wikimatrix / ccaligned only);
2. Unicode NFC normalisation and whitespace folding (every run of Unicode whitespace -> one
   space, ends stripped), then pairs with an empty side are dropped;
3. exact duplicates (same ``src`` and ``tgt`` after step 2) are dropped, first kept;
4. near duplicates are dropped: two pairs are near duplicates when both sides are equal after
   case folding, deleting every punctuation (Unicode category P*) and number (N*) character and
   folding whitespace again ("Hello, world 2!" ~ "hello world");
5. length: each side must have ``min_tokens`` to ``max_tokens`` tokens;
6. length ratio: longer side / shorter side (in tokens) <= ``max_ratio``.

A token is a whitespace-separated word, except that characters of scripts written without
spaces (CJK ideographs, kana, Hangul syllables, Thai, Lao, Khmer, Myanmar) count one each, so
the length filters do not wipe out Chinese or Thai. Deduplication keeps two 64-bit hashes per
surviving pair in memory (about 150 bytes each); the texts themselves stream through a temporary
file, which also lets the seeded train/dev split (``dev_size`` pairs or a fraction, drawn
uniformly without replacement) happen after filtering and deduplication, so no pair is in both.

``opus`` downloads an OPUS corpus (Tiedemann, LREC 2012) as its Moses zip instead of reading files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import tempfile
import unicodedata
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from clirkit.config import Config
from clirkit.data.download import check_url, fetch, open_url, safe_member_name
from clirkit.data.formats import DatasetWriter, iter_lines, open_binary
from clirkit.data.pairs import canonical, check_language_code, parse_pair
from clirkit.errors import ClirkitError
from clirkit.progress import track
from clirkit.seeding import set_seed

log = logging.getLogger("clirkit")

# --------------------------------------------------------------------------- config


class BitextConfig(Config):
    """Options of ``clirkit prepare bitext``."""

    pair: str = Field(..., description="Language pair <src>-<tgt> with ISO 639-1/3 codes, e.g. en-sw; "
                                       "src (the English/teacher side) is the one named first.")
    format: Literal["moses", "tsv", "wikimatrix", "tmx", "ccaligned"] = Field(
        "moses", description="Input format: moses (two line-aligned files), tsv (src<TAB>tgt), "
                             "wikimatrix (margin<TAB>s1<TAB>s2), tmx (TMX 1.4), ccaligned (s1<TAB>s2<TAB>score).")
    files: list[Path] = Field(default_factory=list, description="Input files (moses: exactly two; gz/xz/bz2 ok).")
    licence: str = Field(..., description="Licence of the corpus as its provider states it (free text, "
                                          "required; recorded in the dataset card).")
    opus: str | None = Field(None, description="Download this OPUS corpus (e.g. CCAligned, OpenSubtitles, "
                                               "Tatoeba) as its Moses zip instead of reading --files.")
    opus_version: str = Field("latest", description="OPUS release of --opus (e.g. v1); latest asks the OPUS API.")
    download_dir: Path = Field(Path("data/downloads"), description="Where --opus downloads are kept.")
    threshold: float | None = Field(None, description="Minimum score: WikiMatrix margin (default 1.04) or "
                                                      "CCAligned LASER similarity (default: none).")
    min_tokens: int = Field(1, ge=0, description="Minimum tokens per side.")
    max_tokens: int = Field(200, ge=1, description="Maximum tokens per side.")
    max_ratio: float = Field(3.0, ge=1.0, description="Maximum ratio longer/shorter side, in tokens.")
    dev_size: int | float | None = Field(
        None, ge=0, description="Dev pairs: a count (>= 1) or a fraction in (0, 1); 0 = no dev; default "
                                "min(1000, 10% of the filtered pairs), at least 1 when there are 2 or more.")
    seed: int = Field(0, ge=0, description="Seed of the train/dev split (0 is a seed).")
    out: Path | None = Field(None, description="Output folder (default data/bitext-<pair>).")

    @field_validator("pair")
    @classmethod
    def _pair(cls, v: str) -> str:
        src, tgt = parse_pair(v)
        return f"{src}-{tgt}"

    @field_validator("licence")
    @classmethod
    def _licence(cls, v: str) -> str:
        if not v.strip():
            raise ClirkitError("the licence is required",
                               fix="pass --licence with the corpus licence as its provider states it")
        return v.strip()

    @field_validator("dev_size")
    @classmethod
    def _dev_size(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, float) and not v.is_integer() and not 0 < v < 1:
            raise ClirkitError(f"dev_size {v} is neither a count nor a fraction in (0, 1)",
                               fix="pass e.g. --dev-size 1000 or --dev-size 0.05")
        return int(v) if isinstance(v, float) and v.is_integer() else v

    @model_validator(mode="after")
    def _inputs(self) -> BitextConfig:
        if self.opus is None:
            if not self.files:
                raise ClirkitError("no input files", fix="pass --files (or --opus CORPUS to download one)")
            if self.format == "moses" and len(self.files) != 2:
                raise ClirkitError(f"moses format needs exactly two files, got {len(self.files)}",
                                   fix="pass the two line-aligned files, e.g. Corpus.en-sw.en Corpus.en-sw.sw")
        if self.min_tokens > self.max_tokens:
            raise ClirkitError(f"min_tokens {self.min_tokens} > max_tokens {self.max_tokens}", fix="swap them")
        return self


# --------------------------------------------------------------------------- reading


def _strip_compression(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".gz", ".xz", ".bz2") else path


def _columns(line: str, path: Path, n: int, want: tuple[int, ...], what: str) -> list[str]:
    cols = line.split("\t")
    while len(cols) > min(want) and len(cols) not in want and cols[-1].strip() == "":
        cols.pop()  # trailing tabs
    if len(cols) not in want:
        raise ClirkitError(f"expected {' or '.join(map(str, want))} tab-separated columns ({what}), found {len(cols)}",
                           path=path, line=n, fix="check the --format and the file")
    return cols


def _known_code(code: str) -> bool:
    try:
        check_language_code(code)
    except ClirkitError:
        return False
    return True


def _moses_sides(files: list[Path], src: str, tgt: str) -> tuple[Path, Path]:
    """The (src, tgt) files of a Moses pair, from their last suffixes (``Corpus.en-sw.sw``).

    A suffix that is a language code must be one side of the pair, and the two must differ: a
    file of another language is refused rather than trained on as the wrong side. With one
    suffix naming a side, the other file is the other side; with none, the first file is ``src``.
    """
    cs, ct = canonical(src), canonical(tgt)
    codes = [_strip_compression(p).suffix.lstrip(".") for p in files]
    langs = [canonical(c) if _known_code(c) else None for c in codes]
    named = [lang for lang in langs if lang is not None]
    if any(lang not in (cs, ct) for lang in named) or len(set(named)) < len(named):
        raise ClirkitError(f"the Moses files end in {' and '.join('.' + c for c in codes)}, not in the two "
                           f"languages of the pair {src}-{tgt}", path=files[0],
                           fix=f"pass the .{src} and .{tgt} files of the pair (or --pair of these files)")
    if not named:
        log.warning("neither %s nor %s ends in a language code: taking the first as the %s side and the second "
                    "as the %s side", files[0], files[1], src, tgt)
    if langs[0] == ct or langs[1] == cs:
        return files[1], files[0]
    return files[0], files[1]


def _read_moses(files: list[Path], src: str, tgt: str) -> Iterator[tuple[str, str, float | None]]:
    return _moses_lines(*_moses_sides(files, src, tgt))  # the sides are checked before anything is read


def _moses_lines(a: Path, b: Path) -> Iterator[tuple[str, str, float | None]]:
    ia, ib = iter_lines(a), iter_lines(b)
    na = nb = 0
    while True:
        la, lb = next(ia, None), next(ib, None)
        if la is None or lb is None:
            if la is None and lb is None:
                return
            na += la is not None
            nb += lb is not None
            na += sum(1 for _ in ia)
            nb += sum(1 for _ in ib)
            raise ClirkitError(f"Moses files differ in length: {a} has {na} lines, {b} has {nb}", path=a,
                               fix="the two files must be line-aligned (same number of lines)")
        na += 1
        nb += 1
        yield la[1], lb[1], None


def _header_kind(cols: list[str], src: str, tgt: str) -> str | None:
    low = [c.strip().lower() for c in cols]
    if low in (["src", "tgt"], ["source", "target"]):
        return "same"
    canon = [canonical(c) for c in low]
    if canon == [canonical(src), canonical(tgt)]:
        return "same"
    if canon == [canonical(tgt), canonical(src)]:
        return "swap"
    if canon[0] != canon[1] and all(_known_code(c) for c in canon):
        return "other"  # a header naming two other languages: another corpus
    return None


def _read_tsv(files: list[Path], src: str, tgt: str) -> Iterator[tuple[str, str, float | None]]:
    for path in files:
        swap = False
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            cols = _columns(line, path, n, (2,), "src, tgt")
            if n == 1:
                kind = _header_kind(cols, src, tgt)
                if kind == "other":  # a header of another corpus, or a pair of short words ("to", "sa")
                    log.warning("%s:1: the first line %r looks like a header naming %s-%s, not the pair %s-%s; "
                                "read as a sentence pair (if the file is of another pair, it is the wrong file)",
                                path, line.strip(), cols[0].strip(), cols[1].strip(), src, tgt)
                elif kind is not None:
                    swap = kind == "swap"
                    continue
            yield (cols[1], cols[0], None) if swap else (cols[0], cols[1], None)


def _order_from_name(path: Path, src: str, tgt: str, pattern: str, default_swap: bool) -> bool:
    """Whether the file's two text columns are (tgt, src), judged from its name.

    A name of the pair in either order decides; a name of other languages is a ClirkitError.
    Without languages in the name, ``default_swap`` decides, and a warning says so.
    """
    m = re.search(pattern, _strip_compression(path).name)
    if not m:
        log.warning("%s: no language pair in the file name; taking its columns as %s", path,
                    f"{tgt}, {src}" if default_swap else f"{src}, {tgt}")
        return default_swap
    first, second = canonical(m.group(1)), canonical(m.group(2))
    cs, ct = canonical(src), canonical(tgt)
    if (first, second) == (ct, cs):
        return True
    if (first, second) == (cs, ct):
        return False
    # CCAligned names a few languages with non-ISO codes (cx_PH for Cebuano, cb_IQ, zz_TR): with
    # English on both sides and an unknown code opposite it, English fixes the order; a known code
    # of another language (de) is another corpus, never the pair's other side.
    if "en" in (first, second) and "en" in (cs, ct) and first != second:
        other = m.group(2) if first == "en" else m.group(1)
        if not _known_code(other):
            return (first == "en") != (cs == "en")
    raise ClirkitError(f"file name says {m.group(1)}-{m.group(2)}, not the pair {src}-{tgt}", path=path,
                       fix="pass files of the requested pair (or rename the file)")


def _score(text: str, path: Path, n: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ClirkitError(f"{what} {text!r} is not a number", path=path, line=n, fix="check the --format") from None


def _read_wikimatrix(files: list[Path], src: str, tgt: str) -> Iterator[tuple[str, str, float | None]]:
    # every file's order is settled (or refused) before any is read
    swaps = [_order_from_name(p, src, tgt, r"WikiMatrix\.([A-Za-z]+)-([A-Za-z]+)\.tsv$", False) for p in files]
    return _wikimatrix_lines(files, swaps)


def _wikimatrix_lines(files: list[Path], swaps: list[bool]) -> Iterator[tuple[str, str, float | None]]:
    for path, swap in zip(files, swaps):
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            margin, s1, s2 = _columns(line, path, n, (3,), "margin, sentence, sentence")
            score = _score(margin, path, n, "margin")
            yield (s2, s1, score) if swap else (s1, s2, score)


def _read_ccaligned(files: list[Path], src: str, tgt: str) -> Iterator[tuple[str, str, float | None]]:
    # CCAligned pairs everything with English, usually in the first column.
    english_first = canonical(tgt) == "en"
    swaps = [_order_from_name(p, src, tgt, r"(?:^|[^A-Za-z])([a-z]{2,3})_[A-Za-z]+-([a-z]{2,3})_[A-Za-z]+\.tsv$",
                              english_first) for p in files]
    return _ccaligned_lines(files, swaps)


def _ccaligned_lines(files: list[Path], swaps: list[bool]) -> Iterator[tuple[str, str, float | None]]:
    for path, swap in zip(files, swaps):
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            cols = _columns(line, path, n, (2, 3), "sentence, sentence[, LASER similarity]")
            score = _score(cols[2], path, n, "LASER similarity") if len(cols) == 3 else None
            yield (cols[1], cols[0], score) if swap else (cols[0], cols[1], score)


_INLINE_CODES = {"bpt", "ept", "it", "ph", "ut"}
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _seg_text(elem: ET.Element) -> str:
    parts = [elem.text or ""]
    for child in elem:
        if _local(child.tag) not in _INLINE_CODES:  # hi / sub hold text; the others hold native markup
            parts.append(_seg_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _read_tmx(files: list[Path], src: str, tgt: str, stats: dict[str, int]) -> Iterator[tuple[str, str, float | None]]:
    cs, ct = canonical(src), canonical(tgt)
    for path in files:
        with open_binary(path) as f:
            body = None
            try:
                for event, elem in ET.iterparse(f, events=("start", "end")):
                    tag = _local(elem.tag)
                    if event == "start":
                        if tag == "body":
                            body = elem
                        continue
                    if tag != "tu":
                        continue
                    segs: dict[str, str] = {}
                    for tuv in elem:
                        if _local(tuv.tag) != "tuv":
                            continue
                        lang = canonical(tuv.get(_XML_LANG) or tuv.get("lang") or "")
                        seg = next((c for c in tuv if _local(c.tag) == "seg"), None)
                        if seg is not None and lang not in segs:
                            segs[lang] = _seg_text(seg)
                    if cs in segs and ct in segs:
                        yield segs[cs], segs[ct], None
                    else:
                        stats["tmx_units_without_both_languages"] += 1
                    elem.clear()
                    if body is not None:
                        body.clear()  # drop finished units so memory stays flat
            except ET.ParseError as e:
                line = e.position[0] if getattr(e, "position", None) else None
                raise ClirkitError(f"malformed TMX/XML ({e.msg if hasattr(e, 'msg') else e})", path=path, line=line,
                                   fix="check that the file is a complete TMX document") from None
            except (OSError, EOFError, lzma.LZMAError) as e:
                raise ClirkitError(f"cannot read ({e})", path=path, fix="check that the file is complete") from None


# --------------------------------------------------------------------------- OPUS


def opus_moses_url(corpus: str, version: str, src: str, tgt: str) -> str:
    """The OPUS object-store URL of a corpus' Moses zip (languages sorted, as OPUS names them)."""
    a, b = sorted((src, tgt))
    return f"https://object.pouta.csc.fi/OPUS-{corpus}/{version}/moses/{a}-{b}.txt.zip"


def download_opus(corpus: str, version: str, src: str, tgt: str, dest: Path, timeout: float = 30.0
                  ) -> tuple[list[Path], str]:
    """Download and unpack an OPUS Moses zip; return the two files (src side first) and the URL.

    ``version="latest"`` asks the OPUS API (https://opus.nlpl.eu/opusapi/) for the newest release's URL.
    Downloads go through :func:`clirkit.data.download.fetch` (https only, ``CLIRKIT_ONLINE=1``,
    atomic); a zip with a member that could land outside its folder is refused before anything is
    extracted, and each wanted member is written under its base name in the zip's own folder
    inside ``dest`` (:func:`extract_moses_pair`).
    """
    a, b = sorted((src, tgt))
    if version == "latest":
        query = urllib.parse.urlencode({"corpus": corpus, "source": a, "target": b,
                                        "preprocessing": "moses", "version": "latest"})
        api = f"https://opus.nlpl.eu/opusapi/?{query}"
        with open_url(api, timeout) as r:
            try:
                found = json.loads(r.read().decode("utf-8")).get("corpora", [])
            except (ValueError, AttributeError):
                raise ClirkitError(f"unexpected answer from {api}",
                                   fix="pass --opus-version explicitly (e.g. v1)") from None
        urls = [c.get("url") for c in found if str(c.get("url", "")).endswith(".zip")]
        if not urls:
            raise ClirkitError(f"OPUS has no Moses download of {corpus} for {a}-{b}",
                               fix="check the corpus name and pair at https://opus.nlpl.eu")
        url = check_url(urls[0])
    else:
        url = opus_moses_url(corpus, version, src, tgt)
    zpath = dest / f"OPUS-{corpus}-{version}-{a}-{b}.txt.zip"
    if not zpath.is_file():
        fetch(url, zpath, timeout=timeout)
    return extract_moses_pair(zpath, src, tgt, dest), url


def extract_moses_pair(zpath: Path, src: str, tgt: str, dest: Path) -> list[Path]:
    """Extract the ``.src`` and ``.tgt`` members of an OPUS Moses zip (src first) into the zip's own
    folder, ``dest/<zip name without .zip>/``.

    Every zip gets its own folder, so two releases whose members share names (``CCAligned.en-sw.en``
    in v1 and in a later version) never overwrite, or stand in for, each other. Every member name
    is checked first (:func:`clirkit.data.download.safe_member_name`); a zip with any unsafe name
    is refused whole. Members are written to a temporary name inside that folder and renamed, so
    an interrupted extraction leaves no partial file.
    """
    folder = dest / zpath.name.removesuffix(".zip")
    try:
        with zipfile.ZipFile(zpath) as z:
            names = z.namelist()
            for m in names:
                safe_member_name(m, zpath)
            by_lang: dict[str, list[str]] = {}
            for m in names:
                if not m.endswith("/"):
                    by_lang.setdefault(canonical(Path(m).suffix.lstrip(".")), []).append(m)
            picked = [by_lang.get(canonical(src), []), by_lang.get(canonical(tgt), [])]
            if not all(picked):
                raise ClirkitError(f"the zip has no .{src}/.{tgt} files: {', '.join(names)}", path=zpath,
                                   fix="check the pair")
            if any(len(p) > 1 for p in picked):
                raise ClirkitError(f"the zip has several .{src} or .{tgt} files: {', '.join(sum(picked, []))}",
                                   path=zpath, fix="extract the pair you want and pass it with --files")
            folder.mkdir(parents=True, exist_ok=True)
            out = []
            for (m,) in picked:
                target = folder / PurePosixPath(m).name
                if not target.is_file():  # extracted from this very zip before (renamed only when complete)
                    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
                    try:
                        with os.fdopen(fd, "wb") as f, z.open(m) as src_file:
                            shutil.copyfileobj(src_file, f, 1 << 20)
                        os.replace(tmp_name, target)
                    finally:
                        Path(tmp_name).unlink(missing_ok=True)
                out.append(target)
    except zipfile.BadZipFile:
        raise ClirkitError("not a zip file (incomplete download?)", path=zpath, fix="delete it and retry") from None
    return out


# --------------------------------------------------------------------------- processing

_UNSPACED = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0e7f\u0e80-\u0eff"
    "\u1780-\u17ff\u1000-\u109f\U00020000-\U0002fa1f]")


def count_tokens(text: str) -> int:
    """Whitespace words, with each character of a script written without spaces counted as one token."""
    n = 0
    for word in text.split():
        rest, k = _UNSPACED.subn("", word)
        n += k + (1 if rest else 0)
    return n


def normalise(text: str) -> str:
    """NFC, then every run of Unicode whitespace -> one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def near_duplicate_key(text: str) -> str:
    """Case-folded text without punctuation (P*) or number (N*) characters, whitespace folded."""
    kept = "".join(ch for ch in text.casefold() if unicodedata.category(ch)[0] not in "PN")
    return " ".join(kept.split())


def _hash(a: str, b: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(a.encode("utf-8"))
    h.update(b"\x00")
    h.update(b.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


#: the default dev split: this share of the filtered pairs, capped at DEV_CAP pairs
DEV_SHARE, DEV_CAP = 0.1, 1000


def _dev_count(dev_size: int | float | None, n: int) -> int:
    """Dev pairs among ``n``: ``dev_size`` as a count or fraction, else min(1000, 10% of n) but >= 1 for n >= 2."""
    if dev_size is None:
        return min(DEV_CAP, max(1, round(DEV_SHARE * n))) if n >= 2 else 0
    return round(dev_size * n) if isinstance(dev_size, float) else int(dev_size)


def prepare_bitext(cfg: BitextConfig) -> Path:
    """Read, clean, deduplicate and split a parallel corpus into ``bitext/train.tsv`` and ``bitext/dev.tsv``.

    See the module docstring for the formats and the exact filters. The card records the source,
    the user-stated licence, the pair (``"pair": "en-sw"``, ``"kind": "bitext"``) and the count
    before and after every filter. References: WikiMatrix (Schwenk et al. 2021), CCAligned
    (El-Kishky et al. 2020), OPUS (Tiedemann 2012); used for OPTICAL distillation (Huang et al. 2023).

    Returns:
        The written dataset folder.

    Raises:
        ClirkitError: unknown language code, unreadable or misaligned input, offline OPUS download.
    """
    src, tgt = cfg.pair.split("-")
    out = cfg.out or Path("data") / f"bitext-{cfg.pair}"
    if out.exists():
        raise ClirkitError("output folder already exists", path=out,
                           fix="choose another --out or delete the old dataset")
    source: dict[str, Any] = {"format": cfg.format}
    files = list(cfg.files)
    fmt = cfg.format
    if cfg.opus is not None:
        files, url = download_opus(cfg.opus, cfg.opus_version, src, tgt, Path(cfg.download_dir))
        fmt = "moses"
        source.update({"format": "moses", "opus": {"corpus": cfg.opus, "version": cfg.opus_version, "url": url},
                       "citation": "Tiedemann, Parallel Data, Tools and Interfaces in OPUS, LREC 2012"})
    source["files"] = [{"path": str(p), "bytes": p.stat().st_size if p.is_file() else None} for p in files]
    threshold = cfg.threshold if cfg.threshold is not None else (1.04 if fmt == "wikimatrix" else None)

    extra: dict[str, int] = {"tmx_units_without_both_languages": 0}
    if fmt == "moses":
        pairs = _read_moses(files, src, tgt)
    elif fmt == "tsv":
        pairs = _read_tsv(files, src, tgt)
    elif fmt == "wikimatrix":
        pairs = _read_wikimatrix(files, src, tgt)
    elif fmt == "ccaligned":
        pairs = _read_ccaligned(files, src, tgt)
    else:
        pairs = _read_tmx(files, src, tgt, extra)

    names = ["read"]
    if threshold is not None:
        names.append(f"score >= {threshold}")
    names += ["non-empty after NFC + whitespace folding", "exact duplicates removed", "near duplicates removed",
              f"{cfg.min_tokens} <= tokens per side <= {cfg.max_tokens}", f"length ratio <= {cfg.max_ratio}"]
    counts = [0] * len(names)
    exact: set[int] = set()
    near: set[int] = set()
    kept = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.pairs-", suffix=".tsv", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as tf:
            for s, t, score in track(pairs, "filtering pairs"):
                step = 0
                counts[step] += 1
                if threshold is not None:
                    if score is None or score < threshold:
                        continue
                    step += 1
                    counts[step] += 1
                s, t = normalise(s), normalise(t)
                if not s or not t:
                    continue
                counts[step + 1] += 1
                h = _hash(s, t)
                if h in exact:
                    continue
                exact.add(h)
                counts[step + 2] += 1
                h = _hash(near_duplicate_key(s), near_duplicate_key(t))
                if h in near:
                    continue
                near.add(h)
                counts[step + 3] += 1
                ls, lt = count_tokens(s), count_tokens(t)
                if not (cfg.min_tokens <= ls <= cfg.max_tokens and cfg.min_tokens <= lt <= cfg.max_tokens):
                    continue
                counts[step + 4] += 1
                if max(ls, lt) > cfg.max_ratio * max(1, min(ls, lt)):
                    continue
                counts[step + 5] += 1
                tf.write(f"{s}\t{t}\n")
                kept += 1
        exact.clear()
        near.clear()
        n_dev = _dev_count(cfg.dev_size, kept)
        if kept == 0:
            raise ClirkitError("no sentence pairs left after filtering", path=files[0] if files else None,
                               fix="check the files, the --format and the filter options (card counts: "
                                   + ", ".join(f"{k}={v}" for k, v in zip(names, counts, strict=True)) + ")")
        if cfg.dev_size is None:
            log.info("bitext %s: %d pairs after filtering; dev split %d pairs (default min(%d, %d%% of the pairs); "
                     "set --dev-size to choose)", cfg.pair, kept, n_dev, DEV_CAP, round(DEV_SHARE * 100))
        if n_dev >= kept:
            raise ClirkitError(f"dev_size {cfg.dev_size} leaves no training pairs ({kept} pairs after filtering)",
                               fix="pass a smaller --dev-size (a count or a fraction)")
        dev = set(set_seed(cfg.seed).py.sample(range(kept), n_dev))
        filters = [{"filter": names[0], "count": counts[0]}]
        filters += [{"filter": names[i], "before": counts[i - 1], "after": counts[i],
                     "removed": counts[i - 1] - counts[i]} for i in range(1, len(names))]
        with DatasetWriter(out, f"bitext-{cfg.pair}", prepared_with=cfg) as w:
            with open(tmp, encoding="utf-8", newline="\n") as tf:
                for i, line in enumerate(tf):
                    s, t = line.rstrip("\n").split("\t")
                    w.add_bitext("dev" if i in dev else "train", f"{cfg.pair}:{i}", s, t)
            w.finish(
                kind="bitext",
                pair=cfg.pair,
                src_lang=src,
                tgt_lang=tgt,
                languages=[src, tgt],
                source=source,
                licence=cfg.licence,
                variant=fmt,
                filters=filters,
                filter_notes={
                    "normalisation": "Unicode NFC; runs of Unicode whitespace folded to one space",
                    "near_duplicates": "both sides equal after casefold, deleting Unicode P* and N* characters, "
                                       "and whitespace folding; first occurrence kept",
                    "tokens": "whitespace words; characters of CJK/kana/Hangul/Thai/Lao/Khmer/Myanmar count one each",
                    **({k: v for k, v in extra.items() if fmt == "tmx"}),
                },
                split={"dev_size": cfg.dev_size if cfg.dev_size is not None else "auto",
                       "dev_size_rule": None if cfg.dev_size is not None else
                       f"min({DEV_CAP}, round({DEV_SHARE} x filtered pairs)), at least 1 when >= 2 pairs",
                       "seed": cfg.seed, "dev": n_dev, "train": kept - n_dev,
                       "method": "uniform sample without replacement of the filtered pairs (random.Random(seed))"},
                id_format="<pair>:<index among filtered pairs>",
                config=cfg.resolved(),
            )
    finally:
        tmp.unlink(missing_ok=True)
    return out
