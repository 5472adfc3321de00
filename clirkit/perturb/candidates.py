"""Every single-edit variant of a query, for the greedy adversarial attack."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from clirkit.perturb.edits import WordEdit, eligible_words
from clirkit.perturb.families import WORD_EDITS, drop_words
from clirkit.perturb.spec import PerturbSpec, as_spec
from clirkit.text import clusters, split_words, starts_cluster, words


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
    spec = as_spec(spec).with_defaults()
    params = dict(spec.params)
    min_len = params.pop("min_len")
    params.pop("rate", None)
    parts = split_words(text)
    if spec.name in WORD_EDITS:
        found = _word_candidates(parts, WORD_EDITS[spec.name](text, **params), min_len,
                                 max_per_position)
    else:
        found = _SENTENCE_CANDIDATES[spec.name](parts, min_len)
    unique: dict[str, str] = {}
    for candidate, description in found:
        if candidate != text:
            unique.setdefault(candidate, description)
    return list(unique.items())


def _word_candidates(parts: list[str], edit: WordEdit, min_len: int,
                     cap: int) -> Iterable[tuple[str, str]]:
    for i, cl, sites in eligible_words(parts, edit, min_len):
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
            yield drop_words(parts, [i]), f"word {i // 2} {parts[i]!r} dropped"


def _shuffle_candidates(parts: list[str], min_len: int) -> Iterable[tuple[str, str]]:
    movable = [i for i in range(1, len(parts), 2)
               if len(clusters(parts[i])) >= min_len and starts_cluster(parts[i])]
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
