"""Single edits of one word, seen as a list of grapheme clusters, and applying them at a rate.

Character-level edits move, insert, delete or replace whole grapheme clusters, so a combining
sequence is never split; an edit that would fuse clusters is rejected.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from clirkit.perturb.spec import check_common, count_for_rate
from clirkit.text import clusters, split_words


class WordEdit:
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


class InnerEdit(WordEdit):
    """Edits at cluster positions, optionally sparing the first and last cluster."""

    def __init__(self, keep_ends: bool) -> None:
        self.keep_ends = keep_ends

    def _positions(self, n: int) -> range:
        return range(1, n - 1) if self.keep_ends else range(n)


class Swap(InnerEdit):
    min_clusters = 2

    def sites(self, cl: list[str]) -> Sequence[int]:
        # Both i and i + 1 must be editable positions.
        first, stop = (1, len(cl) - 2) if self.keep_ends else (0, len(cl) - 1)
        return [i for i in range(first, stop) if cl[i] != cl[i + 1]]

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [*cl[:site], cl[site + 1], cl[site], *cl[site + 2:]]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"swap clusters {site},{site + 1}"


class Delete(InnerEdit):
    min_clusters = 2

    def sites(self, cl: list[str]) -> Sequence[int]:
        return self._positions(len(cl))

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return cl[:site] + cl[site + 1:]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"delete {cl[site]!r} at {site}"


class Insert(InnerEdit):
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


class Replace(InnerEdit):
    """Replace the cluster at ``site`` by one of ``options``."""

    def sites(self, cl: list[str]) -> Sequence[int]:
        return [i for i in self._positions(len(cl)) if self.options(cl, i)]

    def apply(self, cl: list[str], site: int, option: str) -> list[str]:
        return [*cl[:site], option, *cl[site + 1:]]

    def describe(self, cl: list[str], site: int, option: str) -> str:
        return f"replace {cl[site]!r} -> {option!r} at {site}"


class Substitute(Replace):
    def __init__(self, keep_ends: bool, alphabet: Callable[[list[str]], Sequence[str]]) -> None:
        super().__init__(keep_ends)
        self.alphabet = alphabet

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return [a for a in self.alphabet(cl) if a != cl[site]]


class TableReplace(Replace):
    def __init__(self, keep_ends: bool, table: Callable[[str], Sequence[str]]) -> None:
        super().__init__(keep_ends)
        self.table = table

    def options(self, cl: list[str], site: int) -> Sequence[str]:
        return self.table(cl[site])


class WholeWord(WordEdit):
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


def eligible_words(parts: list[str], edit: WordEdit, min_len: int
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


def edit_word(cl: list[str], sites: Sequence[int], edit: WordEdit, rng: random.Random) -> str:
    """Apply one random valid edit; sites whose edit would fuse clusters are skipped."""
    sites = list(sites)
    while sites:
        site = sites.pop(rng.randrange(len(sites)))
        new = edit.apply(cl, site, rng.choice(edit.options(cl, site)))
        if edit.valid(new):
            return "".join(new)
    return "".join(cl)


def perturb_words(text: str, rng: random.Random, edit: WordEdit, rate: float,
                  min_len: int) -> str:
    """Apply one ``edit`` to each of ``rate`` of the eligible words of ``text`` (drawn with ``rng``)."""
    check_common(rate, min_len)
    parts = split_words(text)
    eligible = eligible_words(parts, edit, min_len)
    for i, cl, sites in rng.sample(eligible, count_for_rate(rate, len(eligible))):
        parts[i] = edit_word(cl, sites, edit, rng)
    return "".join(parts)

