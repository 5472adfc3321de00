"""Words, grapheme clusters and case: the text helpers shared by perturbations and lexicons.

Text is split into *words* (maximal runs of grapheme clusters that start with a word character,
found with the ``regex`` module's ``\\X``, UAX #29) and the *separators* between them. Working on
whole grapheme clusters means a combining sequence (a base letter and its marks, an Indic
conjunct, a Persian letter with its ZWNJ) is never split.
"""

from __future__ import annotations

import re
import unicodedata

import regex

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


def split_words(text: str) -> list[str]:
    r"""Split ``text`` into alternating separators and words.

    Words are maximal runs of grapheme clusters (UAX #29 extended grapheme clusters) that start
    with a word character (``\w`` of the ``regex`` module: letters, marks, digits, connector
    punctuation, ZWJ/ZWNJ).

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


def starts_cluster(word: str) -> bool:
    """Whether ``word`` still begins a cluster of its own when it follows a space.

    False for a word that starts with a mark (only possible after a control character or at the
    start of the text, UAX #29 GB4): moved after a space it would fuse with it.
    """
    return _CLUSTER.match(" " + word).group() == " "


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


def has_mark(text: str) -> bool:
    """Whether ``text`` holds a nonspacing mark (category Mn) once decomposed (NFD, UAX #15)."""
    return any(unicodedata.category(ch) == "Mn" for ch in unicodedata.normalize("NFD", text))
