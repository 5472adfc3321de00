"""The registered perturbations: character edits, diacritics, code-switching, word drop and shuffle."""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from clirkit.perturb.edits import (
    Delete,
    Insert,
    Substitute,
    Swap,
    TableReplace,
    WholeWord,
    WordEdit,
    perturb_words,
)
from clirkit.perturb.spec import PERTURBATIONS, Perturbation, check_common, count_for_rate, resolve_lexicon
from clirkit.perturb.tables import HOMOGLYPHS, keyboard_options
from clirkit.text import clusters, has_mark, match_case, split_words, starts_cluster, strip_marks, words


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
    return strip_marks(word) if has_mark(word) else None


def _translator(lexicon: Mapping[str, str]) -> Callable[[str], str | None]:
    def translate(word: str) -> str | None:
        english = lexicon.get(word.lower())
        return match_case(word, english) if english else None

    return translate


# Builds the edit family of a word-level perturbation from (text, params without rate/min_len);
# edit_candidates uses it to enumerate exactly the edits the random perturbation draws from.
WORD_EDITS: dict[str, Callable[..., WordEdit]] = {}


def _word_perturbation(name: str, edit: Callable[..., WordEdit]):
    def deco(fn: Perturbation) -> Perturbation:
        PERTURBATIONS.register(name)(fn)  # first, so a duplicate name leaves WORD_EDITS untouched
        WORD_EDITS[name] = edit
        return fn

    return deco


# --------------------------------------------------------------------------- perturbations


def _swap_edit(text: str, *, keep_ends: bool) -> WordEdit:
    return Swap(keep_ends)


def _insert_edit(text: str, *, keep_ends: bool, alphabet: str) -> WordEdit:
    return Insert(keep_ends, _alphabet(text, alphabet))


def _delete_edit(text: str, *, keep_ends: bool) -> WordEdit:
    return Delete(keep_ends)


def _substitute_edit(text: str, *, keep_ends: bool, alphabet: str) -> WordEdit:
    return Substitute(keep_ends, _alphabet(text, alphabet))


def _keyboard_edit(text: str, *, keep_ends: bool) -> WordEdit:
    return TableReplace(keep_ends, keyboard_options)


def _homoglyph_edit(text: str) -> WordEdit:
    return TableReplace(False, lambda c: HOMOGLYPHS.get(c, ()))


def _diacritics_edit(text: str) -> WordEdit:
    return WholeWord(_stripped)


def _code_switch_edit(text: str, *, lexicon: Mapping[str, str] | str | Path) -> WordEdit:
    return WholeWord(_translator(resolve_lexicon(lexicon)))


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
    return perturb_words(text, rng, _swap_edit(text, keep_ends=keep_ends), rate, min_len)


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
    return perturb_words(text, rng, edit, rate, min_len)


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
    return perturb_words(text, rng, _delete_edit(text, keep_ends=keep_ends), rate, min_len)


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
    return perturb_words(text, rng, edit, rate, min_len)


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
    return perturb_words(text, rng, _keyboard_edit(text, keep_ends=keep_ends), rate, min_len)


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
    return perturb_words(text, rng, _homoglyph_edit(text), rate, min_len)


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
    return perturb_words(text, rng, _diacritics_edit(text), rate, min_len)


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
    return perturb_words(text, rng, _code_switch_edit(text, lexicon=lexicon), rate, min_len)
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
    check_common(rate, min_len)
    parts = split_words(text)
    eligible = [i for i in range(1, len(parts), 2) if len(clusters(parts[i])) >= min_len]
    n_words = len(parts) // 2
    k = min(count_for_rate(rate, len(eligible)), n_words - 1)
    return drop_words(parts, sorted(rng.sample(eligible, max(k, 0))))


def drop_words(parts: list[str], drop: Iterable[int]) -> str:
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
    check_common(rate, min_len)
    parts = split_words(text)
    eligible = [i for i in range(1, len(parts), 2)
                if len(clusters(parts[i])) >= min_len and starts_cluster(parts[i])]
    chosen = sorted(rng.sample(eligible, count_for_rate(rate, len(eligible))))
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


