"""Query perturbations: small pure functions ``(text, rng, **params) -> str``, registered by name.

Every perturbation works on any script. Text is split into *words* and the *separators* between
them (:mod:`clirkit.text`), which are kept exactly unless the perturbation says otherwise.
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

Modules: :mod:`~clirkit.perturb.spec` (registry, specs, lexicon parameters),
:mod:`~clirkit.perturb.tables` (QWERTY and homoglyph tables), :mod:`~clirkit.perturb.edits`
(single edits of a word), :mod:`~clirkit.perturb.families` (the registered perturbations),
:mod:`~clirkit.perturb.batch` (reproducible batches), :mod:`~clirkit.perturb.candidates`
(single-edit variants for the attack).
"""

from __future__ import annotations

from clirkit.perturb.batch import perturb_many, text_rng
from clirkit.perturb.candidates import edit_candidates
from clirkit.perturb.families import (
    char_delete,
    char_insert,
    char_substitute,
    char_swap,
    code_switch,
    diacritics,
    homoglyph,
    keyboard,
    word_drop,
    word_shuffle,
)
from clirkit.perturb.spec import (
    PERTURBATIONS,
    Perturbation,
    PerturbSpec,
    accepted_params,
    parse_spec,
    resolve_lexicon,
    spec_identity,
    spec_label,
    spec_labels,
)
from clirkit.perturb.tables import HOMOGLYPHS, QWERTY_NEIGHBOURS
from clirkit.text import clusters, match_case, split_words, strip_marks, words

__all__ = [
    "HOMOGLYPHS",
    "PERTURBATIONS",
    "QWERTY_NEIGHBOURS",
    "PerturbSpec",
    "Perturbation",
    "accepted_params",
    "char_delete",
    "char_insert",
    "char_substitute",
    "char_swap",
    "clusters",
    "code_switch",
    "diacritics",
    "edit_candidates",
    "homoglyph",
    "keyboard",
    "match_case",
    "parse_spec",
    "perturb_many",
    "resolve_lexicon",
    "spec_identity",
    "spec_label",
    "spec_labels",
    "split_words",
    "strip_marks",
    "text_rng",
    "word_drop",
    "word_shuffle",
    "words",
]
