"""Query perturbations: small pure functions ``(text, rng, **params) -> str``, registered by name.

Every perturbation works on any script. Text is split into *words* (maximal runs of grapheme
clusters that start with a word character, found with the ``regex`` module's ``\\X``) and the
*separators* between them, which are kept exactly unless the perturbation says otherwise.
Character-level edits move, insert, delete or replace whole grapheme clusters, so a combining
sequence (a base letter and its marks, an Indic conjunct, a Persian letter with its ZWNJ) is
never split.

Common parameters:

- ``rate``: fraction of the *eligible* words that are perturbed, in [0, 1]. The number perturbed
  is ``rate * n_eligible`` rounded half up (not Python's banker's rounding, so ``rate=0.5`` on a
  one-word query perturbs it); which words is drawn with the rng.
- ``min_len``: words shorter than this many grapheme clusters are not eligible. A word is also
  not eligible when the perturbation cannot change it (no QWERTY key for ``keyboard``, no mark
  for ``diacritics``, not in the lexicon for ``code-switch``).

Specs such as ``"char-swap:rate=0.2,min_len=4"`` are parsed by :func:`parse_spec` into a
:class:`PerturbSpec`, validated against the function's signature; nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import inspect
import math
import random
import re
import typing
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import regex

from clirkit.errors import ClirkitError
from clirkit.registry import Registry

Perturbation = Callable[..., str]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")

# Both alternatives consume whole grapheme clusters, so the scan only ever stands on cluster
# boundaries: a bare `\w+` would cut "!\u0301" between the "!" and its combining mark.
_TOKEN = regex.compile(r"((?:(?=\w)\X)+)|((?:(?!\w)\X)+)")
_CLUSTER = regex.compile(r"\X")
# Characters through which UAX #29 joins code points into one cluster. Text free of them has one
# code point per cluster, so a plain `(\w+)` split gives exactly the same words, several times
# faster; `re` agrees with `regex` on ASCII `\w` and is faster still.
_JOINERS = regex.compile(r"[\r\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=Prepend}\p{GCB=ZWJ}"
                         r"\p{GCB=Regional_Indicator}\p{GCB=L}\p{GCB=V}\p{GCB=T}\p{GCB=LV}"
                         r"\p{GCB=LVT}]")
_ASCII_SPLIT = re.compile(r"(\w+)")
_SIMPLE_SPLIT = regex.compile(r"(\w+)")


def _one_point_clusters(text: str) -> bool:
    return (text.isascii() and "\r" not in text) or _JOINERS.search(text) is None


# --------------------------------------------------------------------------- text helpers


def split_words(text: str) -> list[str]:
    r"""Split ``text`` into alternating separators and words.

    Words are maximal runs of grapheme clusters that start with a word character (``\w`` of the
    ``regex`` module: letters, marks, digits, connector punctuation, ZWJ/ZWNJ).

    Args:
        text: any Unicode string.

    Returns:
        ``[sep_0, word_1, sep_1, ..., word_n, sep_n]``: words at odd indices, separators (maybe
        empty) at even ones, so ``"".join(parts) == text``.
    """
    if text.isascii():
        return _ASCII_SPLIT.split(text)
    if _JOINERS.search(text) is None:
        return _SIMPLE_SPLIT.split(text)
    parts = [""]
    for word, separator in _TOKEN.findall(text):
        if word:
            parts.extend((word, ""))
        else:
            parts[-1] += separator
    return parts


def words(text: str) -> list[str]:
    """The words of ``text`` (see :func:`split_words`)."""
    return split_words(text)[1::2]


def clusters(text: str) -> list[str]:
    """The extended grapheme clusters of ``text`` (UAX #29)."""
    return list(text) if _one_point_clusters(text) else _CLUSTER.findall(text)


def match_case(source: str, target: str) -> str:
    """Give ``target`` the capitalisation of ``source`` where that is meaningful.

    An all-caps ``source`` of two or more letters upper-cases ``target``; a capitalised one
    capitalises ``target``'s first letter; anything else (lower case, scripts without case)
    leaves ``target`` as it is.
    """
    if len(source) > 1 and source.isupper():
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def strip_marks(text: str) -> str:
    """Remove nonspacing combining marks: NFD, drop category Mn, recompose NFC (UAX #15)."""
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", kept)


def _has_mark(text: str) -> bool:
    return any(unicodedata.category(ch) == "Mn" for ch in unicodedata.normalize("NFD", text))


def _count(rate: float, n: int) -> int:
    """``rate * n`` rounded half up; the epsilon absorbs float error such as 0.1 * 5."""
    return min(n, math.floor(rate * n + 0.5 + 1e-9))


def _check_common(rate: float, min_len: int) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ClirkitError(f"perturbation rate={rate!r} is outside [0, 1]",
                           fix="give a fraction such as rate=0.2")
    if min_len < 0:
        raise ClirkitError(f"perturbation min_len={min_len!r} is negative",
                           fix="give a number of grapheme clusters such as min_len=4")


# --------------------------------------------------------------------------- tables

# QWERTY with the usual row stagger (in key widths); neighbours are keys at most one key width
# away on the same or an adjacent row, which gives the familiar a -> q w s z.
_QWERTY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_QWERTY_STAGGER = (0.0, 0.5, 0.75, 1.25)


def _qwerty_neighbours() -> dict[str, tuple[str, ...]]:
    where = {key: (row, col + _QWERTY_STAGGER[row])
             for row, keys in enumerate(_QWERTY_ROWS) for col, key in enumerate(keys)}
    return {key: tuple(other for other, (r2, x2) in where.items()
                       if other != key and abs(r2 - r) <= 1 and abs(x2 - x) <= 1.0)
            for key, (r, x) in where.items()}


QWERTY_NEIGHBOURS: dict[str, tuple[str, ...]] = _qwerty_neighbours()

# Groups of mutually confusable letters, a small subset of Unicode's confusables.txt (UTS #39):
# Latin / Cyrillic / Greek look-alikes, plus the Arabic / Persian yeh and kaf that Persian text
# mixes freely. Each member may be replaced by any other member of its group.
_CONFUSABLE_GROUPS = (
    "a\u0430", "c\u0441", "d\u0501", "e\u0435", "h\u04bb", "i\u0456\u03b9", "j\u0458",
    "o\u043e\u03bf", "p\u0440", "q\u051b", "s\u0455", "u\u03c5", "v\u03bd", "w\u051d",
    "x\u0445", "y\u0443",
    "A\u0410\u0391", "B\u0412\u0392", "C\u0421", "E\u0415\u0395", "H\u041d\u0397",
    "I\u0406\u0399", "J\u0408", "K\u041a\u039a", "M\u041c\u039c", "N\u039d",
    "O\u041e\u039f", "P\u0420\u03a1", "S\u0405", "T\u0422\u03a4", "X\u0425\u03a7",
    "Y\u04ae\u03a5", "Z\u0396",
    "\u064a\u06cc", "\u0643\u06a9",
)
HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    ch: tuple(other for other in group if other != ch)
    for group in _CONFUSABLE_GROUPS for ch in group
}


def _keyboard_options(cluster: str) -> tuple[str, ...]:
    neighbours = QWERTY_NEIGHBOURS.get(cluster.lower(), ())
    return tuple(n.upper() for n in neighbours) if cluster.isupper() else neighbours


# --------------------------------------------------------------------------- word edits


class _WordEdit:
    """One family of single edits of a word given as a list of grapheme clusters.

    ``sites`` lists where the word can change, ``options`` what a site can become, and
    ``apply`` returns the edited cluster list. Families that only move or replace whole
    clusters set ``keeps_clusters`` so an edit that would fuse clusters (a consonant moved
    after a virama) is rejected rather than silently changing the segmentation.
    """

    min_clusters = 1
    keeps_clusters = True

    def sites(self, cl: list[str]) -> Sequence[int]:
        raise NotImplementedError

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return ("",)

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        raise NotImplementedError

    def describe(self, cl: list[str], site: int, option: str) -> str:
        raise NotImplementedError

    def valid(self, new: list[str]) -> bool:
        return not self.keeps_clusters or clusters("".join(new)) == new


class _InnerEdit(_WordEdit):
    """Edits at cluster positions, optionally sparing the first and last cluster."""

    def __init__(self, keep_ends: bool) -> None:
        self.keep_ends = keep_ends

    def _positions(self, n: int) -> range:
        return range(1, n - 1) if self.keep_ends else range(n)


class _Swap(_InnerEdit):
    min_clusters = 2

    def sites(self, cl: list[str]) -> Sequence[int]:
        # Both i and i + 1 must be editable positions.
        first, stop = (1, len(cl) - 2) if self.keep_ends else (0, len(cl) - 1)
        return [i for i in range(first, stop) if cl[i] != cl[i + 1]]

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [*cl[:site], cl[site + 1], cl[site], *cl[site + 2:]]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"swap clusters {site},{site + 1}"


class _Delete(_InnerEdit):
    min_clusters = 2

    def sites(self, cl: list[str]) -> Sequence[int]:
        return self._positions(len(cl))

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return cl[:site] + cl[site + 1:]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"delete {cl[site]!r} at {site}"


class _Insert(_InnerEdit):
    """Insert a cluster from ``alphabet`` before position ``site``."""

    def __init__(self, keep_ends: bool, alphabet: Callable[[list[str]], Sequence[str]]) -> None:
        super().__init__(keep_ends)
        self.alphabet = alphabet

    def sites(self, cl: list[str]) -> Sequence[int]:
        if not self.alphabet(cl):
            return ()
        return range(1, len(cl)) if self.keep_ends else range(len(cl) + 1)

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return self.alphabet(cl)

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [*cl[:site], option, *cl[site:]]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"insert {option!r} at {site}"


class _Replace(_InnerEdit):
    """Replace the cluster at ``site`` by one of ``options``."""

    def sites(self, cl: list[str]) -> Sequence[int]:
        return [i for i in self._positions(len(cl)) if self.options(cl, i)]

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [*cl[:site], option, *cl[site + 1:]]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"replace {cl[site]!r} -> {option!r} at {site}"


class _Substitute(_Replace):
    def __init__(self, keep_ends: bool, alphabet: Callable[[list[str]], Sequence[str]]) -> None:
        super().__init__(keep_ends)
        self.alphabet = alphabet

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return [a for a in self.alphabet(cl) if a != cl[site]]


class _TableReplace(_Replace):
    def __init__(self, keep_ends: bool, table: Callable[[str], Sequence[str]]) -> None:
        super().__init__(keep_ends)
        self.table = table

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return self.table(cl[site])


class _WholeWord(_WordEdit):
    """Rewrite the whole word with ``fn``; eligible when that changes it."""

    keeps_clusters = False

    def __init__(self, fn: Callable[[str], str | None]) -> None:
        self.fn = fn

    def _new(self, cl: list[str]) -> str | None:
        word = "".join(cl)
        new = self.fn(word)
        return new if new is not None and new != word else None

    def sites(self, cl: list[str]) -> Sequence[int]:
        return (0,) if self._new(cl) is not None else ()

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        new = self._new(cl)
        return (new,) if new is not None else ()

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [option]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return "rewrite word"


def _script(cluster: str) -> str:
    """A cheap script key: the first word of the base character's Unicode name (LATIN,
    ARABIC, CJK, DEVANAGARI, ...). The stdlib has no Script property and this is close enough
    to keep inserted letters in the word's own script."""
    return unicodedata.name(cluster[0], "?").split(" ", 1)[0]


def _alphabet(text: str, alphabet: str) -> Callable[[list[str]], Sequence[str]]:
    """Clusters a word may gain: ``alphabet``'s, else those of the query's words in the word's
    script (the script of its first cluster).

    Drawing from the query itself works for any script without a per-language table; most
    frequent first, so capped candidate lists keep the most plausible letters.
    """
    if alphabet:
        given = list(dict.fromkeys(clusters(alphabet)))
        return lambda cl: given
    counts = Counter(c for w in words(text) for c in clusters(w))
    by_script: dict[str, list[str]] = {}
    for cluster, _ in counts.most_common():
        by_script.setdefault(_script(cluster), []).append(cluster)
    return lambda cl: by_script.get(_script(cl[0]), ())


def _stripped(word: str) -> str | None:
    return strip_marks(word) if _has_mark(word) else None


def _translator(lexicon: Mapping[str, str]) -> Callable[[str], str | None]:
    def translate(word: str) -> str | None:
        english = lexicon.get(word.lower())
        return match_case(word, english) if english else None

    return translate


def _eligible(parts: list[str], edit: _WordEdit, min_len: int
              ) -> list[tuple[int, list[str], Sequence[int]]]:
    """``(part index, clusters, sites)`` of the words long enough that ``edit`` can change."""
    need = max(min_len, edit.min_clusters)
    found = []
    for i in range(1, len(parts), 2):
        if len(parts[i]) < need:  # a word has at most as many clusters as code points
            continue
        cl = clusters(parts[i])
        if len(cl) >= need:
            sites = edit.sites(cl)
            if sites:
                found.append((i, cl, sites))
    return found


def _edit_word(cl: list[str], sites: Sequence[int], edit: _WordEdit, rng: random.Random) -> str:
    """Apply one random valid edit; sites whose edit would fuse clusters are skipped."""
    sites = list(sites)
    while sites:
        site = sites.pop(rng.randrange(len(sites)))
        new = edit.apply(cl, site, rng.choice(edit.options(cl, site)))
        if edit.valid(new):
            return "".join(new)
    return "".join(cl)


def _perturb_words(text: str, rng: random.Random, edit: _WordEdit, rate: float,
                   min_len: int) -> str:
    _check_common(rate, min_len)
    parts = split_words(text)
    eligible = _eligible(parts, edit, min_len)
    for i, cl, sites in rng.sample(eligible, _count(rate, len(eligible))):
        parts[i] = _edit_word(cl, sites, edit, rng)
    return "".join(parts)


# Builds the edit family of a word-level perturbation from (text, params without rate/min_len);
# edit_candidates uses it to enumerate exactly the edits the random perturbation draws from.
_WORD_EDITS: dict[str, Callable[..., _WordEdit]] = {}


def _word_perturbation(name: str, edit: Callable[..., _WordEdit]):
    def deco(fn: Perturbation) -> Perturbation:
        _WORD_EDITS[name] = edit
        return PERTURBATIONS.register(name)(fn)

    return deco


# --------------------------------------------------------------------------- perturbations


def _swap_edit(text: str, *, keep_ends: bool) -> _WordEdit:
    return _Swap(keep_ends)


def _insert_edit(text: str, *, keep_ends: bool, alphabet: str) -> _WordEdit:
    return _Insert(keep_ends, _alphabet(text, alphabet))


def _delete_edit(text: str, *, keep_ends: bool) -> _WordEdit:
    return _Delete(keep_ends)


def _substitute_edit(text: str, *, keep_ends: bool, alphabet: str) -> _WordEdit:
    return _Substitute(keep_ends, _alphabet(text, alphabet))


def _keyboard_edit(text: str, *, keep_ends: bool) -> _WordEdit:
    return _TableReplace(keep_ends, _keyboard_options)


def _homoglyph_edit(text: str) -> _WordEdit:
    return _TableReplace(False, lambda c: HOMOGLYPHS.get(c, ()))


def _diacritics_edit(text: str) -> _WordEdit:
    return _WholeWord(_stripped)


def _code_switch_edit(text: str, *, lexicon: Mapping[str, str] | str | Path) -> _WordEdit:
    return _WholeWord(_translator(resolve_lexicon(lexicon)))


@_word_perturbation("char-swap", _swap_edit)
def char_swap(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 4,
              keep_ends: bool = True) -> str:
    """Swap two adjacent, different grapheme clusters inside words.

    With ``keep_ends`` the first and last cluster stay in place, the transposition that
    readers barely notice (Belinkov & Bisk, ICLR 2018; Pruthi et al., ACL 2019).

    Args:
        text: the query.
        rng: the generator that picks words and positions.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.
        keep_ends: keep each word's first and last cluster in place.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _swap_edit(text, keep_ends=keep_ends), rate, min_len)


@_word_perturbation("char-insert", _insert_edit)
def char_insert(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 3,
                keep_ends: bool = True, alphabet: str = "") -> str:
    """Insert one grapheme cluster into words (Pruthi et al., ACL 2019, "add").

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.
        keep_ends: insert only between the first and last cluster.
        alphabet: clusters to insert; empty means the clusters of the query's own words in
            the word's script.

    Returns:
        The perturbed query.
    """
    edit = _insert_edit(text, keep_ends=keep_ends, alphabet=alphabet)
    return _perturb_words(text, rng, edit, rate, min_len)


@_word_perturbation("char-delete", _delete_edit)
def char_delete(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 3,
                keep_ends: bool = True) -> str:
    """Delete one grapheme cluster from words (Pruthi et al., ACL 2019, "drop").

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.
        keep_ends: never delete the first or last cluster.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _delete_edit(text, keep_ends=keep_ends), rate, min_len)


@_word_perturbation("char-substitute", _substitute_edit)
def char_substitute(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 3,
                    keep_ends: bool = True, alphabet: str = "") -> str:
    """Replace one grapheme cluster of words by another one.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.
        keep_ends: never replace the first or last cluster.
        alphabet: replacement clusters; empty means the clusters of the query's own words in
            the word's script.

    Returns:
        The perturbed query.
    """
    edit = _substitute_edit(text, keep_ends=keep_ends, alphabet=alphabet)
    return _perturb_words(text, rng, edit, rate, min_len)


@_word_perturbation("keyboard", _keyboard_edit)
def keyboard(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 3,
             keep_ends: bool = True) -> str:
    """Replace one key by a QWERTY neighbour (Belinkov & Bisk, ICLR 2018, "Key" noise).

    Only ASCII letters and digits have keys; case is kept. Any other cluster (accented,
    non-Latin) is left as it is, and a word without a replaceable cluster is not eligible.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.
        keep_ends: never replace the first or last cluster.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _keyboard_edit(text, keep_ends=keep_ends), rate, min_len)


@_word_perturbation("homoglyph", _homoglyph_edit)
def homoglyph(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 1) -> str:
    """Replace one letter by a visually confusable one (Latin a -> Cyrillic a, ...).

    The table :data:`HOMOGLYPHS` is a small subset of Unicode's confusables (UTS #39), in the
    spirit of Boucher et al., "Bad Characters: Imperceptible NLP Attacks" (IEEE S&P 2022).
    Clusters carrying marks are not replaced.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words perturbed.
        min_len: minimum word length in grapheme clusters.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _homoglyph_edit(text), rate, min_len)


@_word_perturbation("diacritics", _diacritics_edit)
def diacritics(text: str, rng: random.Random, *, rate: float = 1.0, min_len: int = 1) -> str:
    """Strip the diacritics of words: NFD, drop nonspacing marks (Mn), recompose NFC.

    Users often type queries without accents or Arabic-script vowel marks; eligible words are
    those with at least one mark. Note that in Brahmic scripts Mn also covers viramas and some
    vowel signs, so stripping them there is a strong perturbation. A "word" made of marks only
    (possible after a control character) disappears.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words stripped.
        min_len: minimum word length in grapheme clusters.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _diacritics_edit(text), rate, min_len)


@_word_perturbation("code-switch", _code_switch_edit)
def code_switch(text: str, rng: random.Random, *, lexicon: Mapping[str, str] | str | Path,
                rate: float = 0.3, min_len: int = 1) -> str:
    """Replace words by their English translation, as bilingual users mix languages.

    Code-switching with a bilingual dictionary follows CoSDA-ML (Qin et al., IJCAI 2020).
    Lookup is by the lower-cased word; the first letter's case is carried over
    (:func:`match_case`).

    Args:
        text: the query.
        rng: the generator.
        lexicon: foreign lower-cased word -> English word, or a path that
            :func:`clirkit.lexicon.load_lexicon` reads (loads are cached).
        rate: fraction of eligible (translatable) words replaced.
        min_len: minimum word length in grapheme clusters.

    Returns:
        The perturbed query.
    """
    return _perturb_words(text, rng, _code_switch_edit(text, lexicon=lexicon), rate, min_len)


def _movable(word: str) -> bool:
    """False for a word that starts with a mark (only possible after a control character or at
    the start of the text): moved after a space it would fuse with it."""
    return _CLUSTER.match(" " + word).group() == " "


@PERTURBATIONS.register("word-drop")
def word_drop(text: str, rng: random.Random, *, rate: float = 0.1, min_len: int = 1) -> str:
    """Delete whole words (random deletion, Wei & Zou, EMNLP 2019 "EDA").

    With each word one adjacent whitespace-only gap goes too (the following one, else the
    preceding one), so no double spaces are left; punctuation stays. At least one word is always
    kept: a query without words is no query.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words dropped.
        min_len: minimum word length in grapheme clusters.

    Returns:
        The perturbed query.
    """
    _check_common(rate, min_len)
    parts = split_words(text)
    eligible = [i for i in range(1, len(parts), 2) if len(clusters(parts[i])) >= min_len]
    n_words = len(parts) // 2
    k = min(_count(rate, len(eligible)), n_words - 1)
    return _drop(parts, sorted(rng.sample(eligible, max(k, 0))))


def _drop(parts: list[str], drop: Iterable[int]) -> str:
    """Join ``parts`` without the words at ``drop``, removing one whitespace gap per word.

    Should removing a gap fuse clusters across the new boundary, the gaps are kept instead:
    then the remaining words are exactly the input's words.
    """
    drop = list(drop)
    kept_words = [w for i, w in enumerate(parts) if i % 2 and i not in drop]
    out = list(parts)
    # Right to left, so dropping neighbours "b c" of "a b c" also takes the gap before "b".
    for i in reversed(drop):
        out[i] = ""
        if i + 1 < len(out) - 1 and out[i + 1].isspace():
            out[i + 1] = ""
        elif out[i - 1].isspace() and i - 1 > 0:
            out[i - 1] = ""
    joined = "".join(out)
    if words(joined) == kept_words:
        return joined
    return "".join(w for i, w in enumerate(parts) if i not in drop)


@PERTURBATIONS.register("word-shuffle")
def word_shuffle(text: str, rng: random.Random, *, rate: float = 0.3, min_len: int = 1) -> str:
    """Permute the chosen words among their own positions; separators stay where they are.

    Bag-of-words retrievers are blind to this, contextual encoders are not. When the chosen
    words hold at least two different strings the permutation is never the identity.

    Args:
        text: the query.
        rng: the generator.
        rate: fraction of eligible words that take part in the permutation.
        min_len: minimum word length in grapheme clusters.

    Returns:
        The perturbed query.
    """
    _check_common(rate, min_len)
    parts = split_words(text)
    eligible = [i for i in range(1, len(parts), 2)
                if len(clusters(parts[i])) >= min_len and _movable(parts[i])]
    chosen = sorted(rng.sample(eligible, _count(rate, len(eligible))))
    old = [parts[i] for i in chosen]
    new = list(old)
    rng.shuffle(new)
    if new == old and len(set(old)) > 1:
        new = new[1:] + new[:1]
    for i, word in zip(chosen, new, strict=True):
        parts[i] = word
    out = "".join(parts)
    # A permutation that fuses clusters across a boundary would change the words; skip it.
    return out if words(out) == parts[1::2] else text


# --------------------------------------------------------------------------- specs


@lru_cache(maxsize=16)
def _load_lexicon_cached(path: str, mtime_ns: int, size: int) -> Mapping[str, str]:
    from clirkit.lexicon import load_lexicon  # lexicon imports this module's tokenizer

    return load_lexicon(path)


def resolve_lexicon(lexicon: Mapping[str, str] | str | Path) -> Mapping[str, str]:
    """Return ``lexicon`` itself, or the lexicon loaded from that path (cached per file version).

    Raises:
        ClirkitError: the path does not exist or the file is malformed.
    """
    if isinstance(lexicon, Mapping):
        return lexicon
    path = Path(lexicon)
    try:
        stat = path.stat()
    except OSError:
        index = Path(f"{lexicon}.index")  # a FreeDict basename
        if not index.exists():
            raise ClirkitError(f"lexicon {str(lexicon)!r} does not exist",
                               fix="give a TSV or FreeDict .index/.dict(.dz) path") from None
        stat = index.stat()
    return _load_lexicon_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


_INT = regex.compile(r"[+-]?\d+")
_TRUE, _FALSE = frozenset({"true", "yes", "on"}), frozenset({"false", "no", "off"})


def _convert(raw: str, hint: Any) -> Any:
    """Parse a spec value by the parameter's annotation; raises ValueError when it does not fit."""
    if hint is bool:
        low = raw.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if hint is int:
        if _INT.fullmatch(raw.strip()):
            return int(raw)
        raise ValueError("expected an integer")
    if hint is float:
        return float(raw)
    return raw  # str, or a path for a Mapping parameter


def _check_type(value: Any, hint: Any) -> Any:
    """Check a Python value against the annotation; ints widen to float, bools never count."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, float, str):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ValueError(f"expected {hint.__name__}, got {type(value).__name__}")
    if isinstance(value, (Mapping, str, Path)):
        return value
    raise ValueError(f"expected a mapping or a path, got {type(value).__name__}")


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return f"<mapping of {len(value)} entries>"
    return str(value)


@cache
def _signature(name: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    fn = PERTURBATIONS.get(name)
    params = dict(list(inspect.signature(fn).parameters.items())[2:])  # drop text, rng
    return params, typing.get_type_hints(fn)


def accepted_params(name: str) -> dict[str, Any]:
    """Parameter names of perturbation ``name`` with their defaults (``inspect.Parameter.empty``
    for required ones)."""
    params, _ = _signature(name)
    return {k: p.default for k, p in params.items()}


@dataclass(frozen=True)
class PerturbSpec:
    """A validated perturbation name and its parameters.

    ``str(spec)`` is the canonical spec string (parameters sorted by name, booleans as
    ``true``/``false``), and ``parse_spec(str(spec)) == spec`` unless a parameter holds an
    in-memory mapping, which has no spec-string form.

    Attributes:
        name: a registered perturbation name.
        params: the parameters given explicitly; defaults come from the function signature.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _validate(self.name, dict(self.params), str(self)))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        body = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(self.params.items()))
        return f"{self.name}:{body}"

    @property
    def fn(self) -> Perturbation:
        """The registered perturbation function."""
        return PERTURBATIONS.get(self.name)

    def with_defaults(self) -> PerturbSpec:
        """The same spec with every defaulted parameter written out (for config.json)."""
        full = {k: v for k, v in accepted_params(self.name).items()
                if v is not inspect.Parameter.empty}
        return PerturbSpec(self.name, {**full, **self.params})

    def apply(self, text: str, rng: random.Random) -> str:
        """Perturb ``text`` with ``rng``."""
        return self.fn(text, rng, **self.params)


def _validate(name: str, params: dict[str, Any], spec_text: str) -> dict[str, Any]:
    accepted, hints = _signature(name)  # unknown name -> the registry's error
    listing = ", ".join(accepted)
    for key in params:
        if key not in accepted:
            raise ClirkitError(f"perturbation spec {spec_text!r}: unknown parameter {key!r}",
                               fix=f"{name} accepts: {listing}")
    missing = [k for k, p in accepted.items()
               if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ClirkitError(f"perturbation spec {spec_text!r}: missing {', '.join(missing)}",
                           fix=f"give e.g. {name}:{missing[0]}=...")
    out = {}
    for key, value in params.items():
        try:
            out[key] = (_convert(value, hints.get(key)) if isinstance(value, str)
                        else _check_type(value, hints.get(key)))
        except ValueError as exc:
            raise ClirkitError(f"perturbation spec {spec_text!r}: bad value {key}={value!r} "
                               f"({exc})", fix=f"{name} accepts: {listing}") from None
    try:
        _check_common(out.get("rate", 0.0), out.get("min_len", 0))
    except ClirkitError as exc:
        raise ClirkitError(f"perturbation spec {spec_text!r}: {exc.message}", fix=exc.fix) from None
    if "lexicon" in out:
        resolve_lexicon(out["lexicon"])  # fail at parse time, not in the middle of an attack
    return out


def parse_spec(text: str) -> PerturbSpec:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` into a :class:`PerturbSpec`.

    Values are converted by the parameter's annotation (int, float, bool as true/false/yes/no,
    str); a ``lexicon`` value is a file path. Values may not contain commas.

    Args:
        text: the spec string, e.g. ``"char-swap:rate=0.2,min_len=4"``.

    Raises:
        ClirkitError: unknown perturbation (listing the known ones), unknown or repeated
            parameter (listing the accepted ones), a value of the wrong type, ``rate`` outside
            [0, 1].
    """
    name, _, body = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise ClirkitError(f"empty perturbation spec {text!r}",
                           fix=f"use e.g. char-swap:rate=0.2; known: {', '.join(PERTURBATIONS)}")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ClirkitError(f"perturbation spec {text!r}: {item!r} is not key=value",
                               fix="write parameters as key=value separated by commas")
        if key in params:
            raise ClirkitError(f"perturbation spec {text!r}: {key!r} is given twice",
                               fix="give each parameter once")
        params[key] = value.strip()
    return PerturbSpec(name, params)


def _as_spec(spec: PerturbSpec | str) -> PerturbSpec:
    return spec if isinstance(spec, PerturbSpec) else parse_spec(spec)


def text_rng(seed: int, index: int) -> random.Random:
    """The generator for text ``index`` under ``seed``: independent of batch order and size.

    Seeding ``random.Random`` with a string hashes it with SHA-512, which is stable across
    processes and platforms (unlike ``hash()``), and distinct (seed, index) never collide.
    """
    return random.Random(f"clirkit.perturb:{seed}:{index}")


def perturb_many(spec: PerturbSpec | str, texts: Sequence[str], seed: int,
                 ids: Sequence[str] | None = None) -> list[str]:
    """Perturb every text with its own generator derived from ``(seed, index)``.

    Args:
        spec: a :class:`PerturbSpec` or a spec string.
        texts: the queries.
        seed: any non-negative integer (0 is a seed).
        ids: query ids, used to name an empty query in the error.

    Returns:
        The perturbed texts, in order.

    Raises:
        ClirkitError: a query is empty or whitespace-only.
    """
    spec = _as_spec(spec)
    if seed is None or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if ids is not None and len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    out = []
    for index, text in enumerate(texts):
        if not text.strip():
            who = f"query {ids[index]!r}" if ids is not None else f"query #{index}"
            raise ClirkitError(f"{who} is empty; it cannot be perturbed",
                               fix="give it text or remove it from the queries file")
        out.append(spec.apply(text, text_rng(seed, index)))
    return out


# --------------------------------------------------------------------------- candidates


def edit_candidates(spec: PerturbSpec | str, text: str,
                    max_per_position: int = 8) -> list[tuple[str, str]]:
    """All single-edit variants of ``text`` under the spec's perturbation family.

    One edit is: for character families, one edit at one position of one eligible word (every
    inner adjacent swap of every word for ``char-swap``; each option at each position for
    ``keyboard``, ``homoglyph``, ``char-insert``, ``char-substitute``, capped at
    ``max_per_position`` options per position); for ``diacritics`` and ``code-switch`` one
    whole word rewritten; for ``word-drop`` one word dropped; for ``word-shuffle`` two different
    words exchanged. ``min_len``, ``keep_ends``, ``alphabet`` and ``lexicon`` are honoured,
    ``rate`` is ignored. This feeds a greedy adversarial attack that scores all candidates in a
    batch.

    Args:
        spec: a :class:`PerturbSpec` or a spec string.
        text: the query.
        max_per_position: most options tried at one position.

    Returns:
        ``(candidate_text, edit_description)`` pairs, deduplicated by text (first description
        kept), in a deterministic order, never containing ``text`` itself. A description reads
        like ``"word 2 'house' -> 'huose': swap clusters 1,2"``.
    """
    spec = _as_spec(spec).with_defaults()
    params = dict(spec.params)
    min_len = params.pop("min_len")
    params.pop("rate", None)
    parts = split_words(text)
    if spec.name in _WORD_EDITS:
        found = _word_candidates(parts, _WORD_EDITS[spec.name](text, **params), min_len,
                                 max_per_position)
    else:
        found = _SENTENCE_CANDIDATES[spec.name](parts, min_len)
    unique: dict[str, str] = {}
    for candidate, description in found:
        if candidate != text:
            unique.setdefault(candidate, description)
    return list(unique.items())


def _word_candidates(parts: list[str], edit: _WordEdit, min_len: int,
                     cap: int) -> Iterable[tuple[str, str]]:
    for i, cl, sites in _eligible(parts, edit, min_len):
        for site in sites:
            for option in list(edit.options(cl, site))[:cap]:
                new = edit.apply(cl, site, option)
                if not edit.valid(new):
                    continue
                word = "".join(new)
                out = [*parts[:i], word, *parts[i + 1:]]
                yield ("".join(out),
                       f"word {i // 2} {parts[i]!r} -> {word!r}: {edit.describe(cl, site, option)}")


def _drop_candidates(parts: list[str], min_len: int) -> Iterable[tuple[str, str]]:
    if len(parts) < 5:  # one word: dropping it would leave no query
        return
    for i in range(1, len(parts), 2):
        if len(clusters(parts[i])) >= min_len:
            yield _drop(parts, [i]), f"word {i // 2} {parts[i]!r} dropped"


def _shuffle_candidates(parts: list[str], min_len: int) -> Iterable[tuple[str, str]]:
    movable = [i for i in range(1, len(parts), 2)
               if len(clusters(parts[i])) >= min_len and _movable(parts[i])]
    for a, i in enumerate(movable):
        for j in movable[a + 1:]:
            if parts[i] == parts[j]:
                continue
            out = list(parts)
            out[i], out[j] = parts[j], parts[i]
            joined = "".join(out)
            if words(joined) == out[1::2]:
                yield joined, f"words {i // 2} {parts[i]!r} and {j // 2} {parts[j]!r} exchanged"


_SENTENCE_CANDIDATES: dict[str, Callable[[list[str], int], Iterable[tuple[str, str]]]] = {
    "word-drop": _drop_candidates,
    "word-shuffle": _shuffle_candidates,
}
