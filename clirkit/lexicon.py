"""Bilingual lexicons: induce them from bitext, read and write them, translate queries with them.

A :class:`Lexicon` maps a lower-cased foreign word to its best English word, with a score. It is
what ``code-switch`` perturbations draw from and the offline stand-in for query translation
(:func:`translate_query`). Lexicons come from:

- :func:`induce_lexicon` on sentence pairs, by Dice association or IBM Model 1;
- :func:`load_lexicon` on a TSV written by :func:`save_lexicon` or on a FreeDict dictionary in
  the dictd format (``.index`` plus ``.dict`` or ``.dict.dz``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex
import scipy.sparse as sp

from clirkit.data.formats import Dataset, iter_bitext, sha256_file
from clirkit.errors import ClirkitError
from clirkit.text import match_case, split_words, words

TSV_HEADER = ("foreign", "english", "score")
METHODS = ("dice", "ibm1")


class Lexicon(Mapping[str, str]):
    """A foreign -> English word mapping with a score per entry.

    It is a ``Mapping[str, str]`` (foreign lower-cased word -> English word), so it can be passed
    wherever a plain dict lexicon is accepted.

    Args:
        entries: foreign word -> (English word, score); foreign words are lower-cased.
        source: where it came from (a path, or "dice"/"ibm1"), for messages and manifests.
    """

    def __init__(self, entries: Mapping[str, tuple[str, float]] | None = None, *,
                 source: str | None = None) -> None:
        lowered: dict[str, tuple[str, float]] = {}
        for foreign, (english, score) in sorted((entries or {}).items()):
            lowered.setdefault(foreign.lower(), (english, float(score)))
        self._entries = dict(sorted(lowered.items()))
        self.source = source

    def __getitem__(self, foreign: str) -> str:
        return self._entries[foreign][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} entries, source={self.source!r})"

    def score(self, foreign: str) -> float:
        """The score of ``foreign``'s entry (Dice coefficient, t(e|f), or 1.0 from a dictionary)."""
        return self._entries[foreign][1]

    def scored(self) -> Iterator[tuple[str, str, float]]:
        """``(foreign, english, score)`` triples sorted by foreign word."""
        for foreign, (english, score) in self._entries.items():
            yield foreign, english, score


# --------------------------------------------------------------------------- induction


@dataclass
class _Corpus:
    """Both sides of a parallel corpus as id arrays, rare words pruned.

    ``e_ids[e_offsets[s]:e_offsets[s + 1]]`` are the English word ids of sentence pair ``s``;
    vocabularies are sorted, so ids, and every tie-break on them, do not depend on input order.
    """

    e_vocab: list[str]
    f_vocab: list[str]
    e_ids: np.ndarray
    e_offsets: np.ndarray
    f_ids: np.ndarray
    f_offsets: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.e_offsets) - 1


def _tokenize(text: str) -> list[str]:
    return words(text.lower())


def _encode(sentences: list[list[str]], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    kept = [[vocab[w] for w in s if w in vocab] for s in sentences]
    lengths = np.fromiter((len(s) for s in kept), dtype=np.int64, count=len(kept))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    flat = np.fromiter((i for s in kept for i in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _vocab(sentences: list[list[str]], min_count: int) -> list[str]:
    counts = Counter(w for s in sentences for w in s)
    return sorted(w for w, c in counts.items() if c >= min_count)


def _corpus(pairs: Iterable[tuple[str, str]], min_count: int) -> _Corpus:
    english, foreign = [], []
    for e, f in pairs:
        english.append(_tokenize(e))
        foreign.append(_tokenize(f))
    e_vocab, f_vocab = _vocab(english, min_count), _vocab(foreign, min_count)
    e_ids, e_offsets = _encode(english, {w: i for i, w in enumerate(e_vocab)})
    f_ids, f_offsets = _encode(foreign, {w: i for i, w in enumerate(f_vocab)})
    return _Corpus(e_vocab, f_vocab, e_ids, e_offsets, f_ids, f_offsets)


def _incidence(ids: np.ndarray, offsets: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Binary sentence x word matrix: does word w occur in sentence s."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    m = sp.csr_matrix((np.ones(len(ids), dtype=np.float32), (rows, ids)),
                      shape=(len(offsets) - 1, n_cols))
    m.data[:] = 1.0  # duplicates were summed; presence is what Dice counts
    return m


def _best_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row, the column with the highest value; ties go to the lowest column id.

    The entries must be sorted by (row, col), as CSR order is: then a linear scan does it.
    """
    if not len(rows):
        return rows, cols, vals
    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    row_max = np.maximum.reduceat(vals, starts)
    at_max = np.flatnonzero(vals == np.repeat(row_max, np.diff(np.append(starts, len(rows)))))
    max_rows = rows[at_max]
    pick = at_max[np.concatenate(([True], max_rows[1:] != max_rows[:-1]))]
    return rows[pick], cols[pick], vals[pick]


def dice_scores(f_ids: np.ndarray, f_offsets: np.ndarray, n_f: int, e_ids: np.ndarray, e_offsets: np.ndarray,
                n_e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dice coefficients of sentence co-occurrence for every co-occurring (foreign, English) id pair.

    ``f_ids[f_offsets[s]:f_offsets[s + 1]]`` are the foreign ids (``< n_f``) of sentence pair
    ``s``, likewise for English; ``dice(f, e) = 2 c(f, e) / (c(f) + c(e))`` with ``c`` counting
    sentence pairs (Dice, Ecology 26(3), 1945). Ids may be words or subword tokens.

    Returns:
        ``(f, e, dice)`` arrays over the pairs that co-occur at least once, sorted by ``(f, e)``.
    """
    e_inc = _incidence(e_ids, e_offsets, n_e)
    f_inc = _incidence(f_ids, f_offsets, n_f)
    both = (f_inc.T @ e_inc).tocsr()  # foreign x English: sentences containing both
    both.sort_indices()
    both = both.tocoo()
    # Counts are exact in float32 (below 2**24 sentences); the coefficient is computed in float64.
    e_freq = np.asarray(e_inc.sum(axis=0), dtype=np.float64).ravel()
    f_freq = np.asarray(f_inc.sum(axis=0), dtype=np.float64).ravel()
    dice = 2.0 * both.data.astype(np.float64) / (f_freq[both.row] + e_freq[both.col])
    return both.row, both.col, dice


def _dice(corpus: _Corpus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best English word per foreign word by the Dice coefficient of sentence co-occurrence."""
    return _best_per_row(*dice_scores(corpus.f_ids, corpus.f_offsets, len(corpus.f_vocab),
                                      corpus.e_ids, corpus.e_offsets, len(corpus.e_vocab)))


def _alignment_links(corpus: _Corpus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (English token, foreign token or NULL) link allowed by IBM Model 1.

    Returns ``(token, f, e)``: for each link, the index of its English token (the unit whose
    alignment posterior is normalised), the foreign word id (0 is NULL, real words are shifted
    by one) and the English word id.
    """
    e_len = np.diff(corpus.e_offsets)
    f_len = np.diff(corpus.f_offsets) + 1  # + NULL
    f_start = np.concatenate(([0], np.cumsum(f_len)))
    # The foreign side of each pair with NULL (id 0) in front.
    f_null = np.zeros(int(f_start[-1]), dtype=np.int32)
    is_word = np.ones(len(f_null), dtype=bool)
    is_word[f_start[:-1]] = False
    f_null[is_word] = corpus.f_ids + 1
    sentence_of_token = np.repeat(np.arange(corpus.n_pairs), e_len)
    links_per_token = f_len[sentence_of_token]
    token = np.repeat(np.arange(len(corpus.e_ids)), links_per_token)
    link_start = np.concatenate(([0], np.cumsum(links_per_token)[:-1]))
    within = np.arange(len(token)) - link_start[token]
    f = f_null[f_start[sentence_of_token[token]] + within]
    return token, f, corpus.e_ids[token]


def _sort_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, keys[order])`` with ``order`` a stable sort of ``keys``.

    Packing the position into the low bits lets a plain value sort (several times faster than
    ``argsort`` on tens of millions of links) return the permutation too.
    """
    shift = max(len(keys) - 1, 1).bit_length()
    if len(keys) and int(keys.max()).bit_length() + shift <= 63:
        packed = (keys << shift) | np.arange(len(keys), dtype=np.int64)
        packed.sort()
        return packed & ((1 << shift) - 1), packed >> shift
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def _ibm1(corpus: _Corpus, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best English word per foreign word by IBM Model 1 translation probabilities t(e|f)."""
    token, f, e = _alignment_links(corpus)
    n_e = len(corpus.e_vocab)
    # Links sorted by their (f, e) parameter: each parameter owns one contiguous run, so the
    # E-step gather is a repeat and the M-step sum a reduceat, both sequential.
    order, keys = _sort_keys(f.astype(np.int64) * n_e + e)
    token = token[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    runs = np.diff(np.append(starts, len(keys)))
    param_f, param_e = keys[starts] // n_e, keys[starts] % n_e
    t = np.ones(len(starts))  # uniform start: the first E-step then counts co-occurrences
    for _ in range(iterations):
        weight = np.repeat(t, runs)
        # E-step: posterior that an English token is generated by each word of its foreign side.
        norm = np.bincount(token, weights=weight, minlength=len(corpus.e_ids))
        counts = np.add.reduceat(weight / norm[token], starts)
        # M-step: expected counts normalised per foreign word give t(e|f).
        per_f = np.bincount(param_f, weights=counts, minlength=len(corpus.f_vocab) + 1)
        t = counts / per_f[param_f]
    real = param_f > 0  # NULL is no foreign word
    return _best_per_row(param_f[real] - 1, param_e[real], t[real])


def induce_lexicon(pairs: Iterable[tuple[str, str]], method: str = "dice", iterations: int = 5,
                   min_count: int = 2) -> Lexicon:
    """Induce a foreign -> English lexicon from sentence pairs.

    Words are the lower-cased word tokens of :func:`clirkit.text.words`; words seen fewer
    than ``min_count`` times on their side are dropped before counting, which bounds the
    vocabulary and keeps rare words from acting as alignment "garbage collectors".

    ``"dice"``: the Dice coefficient of sentence-level co-occurrence,
    ``dice(e, f) = 2 c(e, f) / (c(e) + c(f))`` where ``c`` counts sentence pairs containing the
    words (Dice, "Measures of the amount of ecologic association between species", Ecology 26(3),
    1945; used for bilingual lexicons by Smadja, McKeown & Hatzivassiloglou, "Translating
    collocations for bilingual lexicons", Computational Linguistics 22(1), 1996).

    ``"ibm1"``: IBM Model 1 (Brown, Della Pietra, Della Pietra & Mercer, "The mathematics of
    statistical machine translation: parameter estimation", Computational Linguistics 19(2),
    1993), trained by EM for ``iterations`` rounds from a uniform start. The direction is
    P(English | foreign): every English token is generated by one token of the foreign sentence
    or by a NULL word, and the parameters are ``t(e | f)``, normalised over ``e`` for each
    foreign ``f``. The entry for ``f`` is ``argmax_e t(e | f)`` and its score is that
    probability. Computation is vectorised over all (English token, foreign token or NULL)
    links, so the result is deterministic and a 25k-pair corpus takes seconds; memory grows with
    the number of links (about 70 bytes each: ~1.6 GB for 25k pairs of 30 words), so for far
    larger bitext use ``"dice"`` or a sample.

    Ties are broken towards the alphabetically first English word.

    Args:
        pairs: ``(english_sentence, foreign_sentence)`` pairs.
        method: ``"dice"`` or ``"ibm1"``.
        iterations: EM iterations for ``"ibm1"``; ignored by ``"dice"``.
        min_count: minimum corpus frequency of a word on its own side.

    Returns:
        A :class:`Lexicon` with one entry per kept foreign word that co-occurs with a kept
        English word.

    Raises:
        ClirkitError: unknown method, or ``iterations``/``min_count`` below 1.
    """
    if method not in METHODS:
        raise ClirkitError(f"unknown lexicon induction method {method!r}",
                           fix=f"use one of: {', '.join(METHODS)}")
    if iterations < 1 or min_count < 1:
        raise ClirkitError(f"iterations={iterations} and min_count={min_count} must be >= 1",
                           fix="give positive integers")
    corpus = _corpus(pairs, min_count)
    if not len(corpus.e_ids) or not len(corpus.f_ids):
        return Lexicon(source=method)  # nothing left to align after pruning
    rows, cols, vals = _dice(corpus) if method == "dice" else _ibm1(corpus, iterations)
    entries = {corpus.f_vocab[r]: (corpus.e_vocab[c], float(v))
               for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist(), strict=True)}
    return Lexicon(entries, source=method)


# --------------------------------------------------------------------------- TSV


def save_lexicon(lexicon: Lexicon | Mapping[str, str], path: str | Path) -> Path:
    """Write ``lexicon`` as UTF-8 TSV with the header ``foreign<TAB>english<TAB>score``.

    A plain mapping gets score 1.0. Rows are sorted by foreign word.

    Raises:
        ValueError: a word contains a tab or a line break (it could not be read back).
    """
    path = Path(path)
    rows = (lexicon.scored() if isinstance(lexicon, Lexicon)
            else ((f, e, 1.0) for f, e in sorted(lexicon.items())))
    lines = ["\t".join(TSV_HEADER)]
    for foreign, english, score in rows:
        if any(ch in w for w in (foreign, english) for ch in "\t\r\n"):
            raise ValueError(f"lexicon entry {foreign!r} -> {english!r} contains a tab or newline")
        lines.append(f"{foreign}\t{english}\t{score:.6g}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file; a bad byte names its line."""
    for number, raw in enumerate(_read_bytes(path).splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClirkitError(f"invalid UTF-8 at byte {exc.start}", path=path, line=number,
                               fix="re-encode the file as UTF-8") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClirkitError(f"cannot read lexicon ({exc.strerror})", path=path,
                           fix="check the path") from None


def _load_tsv(path: Path) -> Lexicon:
    lines = _decoded_lines(path)
    first = next(lines, None)
    if first is None or tuple(first[1].lstrip("\ufeff").split("\t")) != TSV_HEADER:
        raise ClirkitError("not a lexicon TSV: the first line must be the header "
                           "'foreign<TAB>english<TAB>score'", path=path, line=1,
                           fix="add the header or write the file with save_lexicon")
    entries: dict[str, tuple[str, float]] = {}
    for number, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise ClirkitError(f"expected 3 tab-separated columns (foreign, english, score), got "
                               f"{len(fields)}", path=path, line=number,
                               fix="fix or remove that line")
        try:
            score = float(fields[2])
        except ValueError:
            raise ClirkitError(f"score {fields[2]!r} is not a number", path=path, line=number,
                               fix="give a number such as 1.0") from None
        foreign = fields[0].lower()
        if foreign not in entries or score > entries[foreign][1]:  # keep the best duplicate
            entries[foreign] = (fields[1], score)
    return Lexicon(entries, source=str(path))


# --------------------------------------------------------------------------- FreeDict / dictd

# dictd writes offsets and lengths as base-64 numbers, most significant digit first, in the
# RFC 4648 alphabet, without padding (dictfmt(1); the dictd .index format).
_B64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {ch: i for i, ch in enumerate(_B64_DIGITS)}


def dictd_b64_decode(text: str) -> int:
    """Decode a dictd index number (e.g. ``"Bv"`` -> 111).

    Raises:
        ValueError: empty, or a character outside the base-64 alphabet.
    """
    if not text:
        raise ValueError("empty number")
    value = 0
    for ch in text:
        if ch not in _B64_VALUE:
            raise ValueError(f"{ch!r} is not a base-64 digit")
        value = value * 64 + _B64_VALUE[ch]
    return value


def dictd_b64_encode(value: int) -> str:
    """Encode a non-negative integer as a dictd index number (the inverse of the decoder)."""
    digits = ""
    while True:
        value, digit = divmod(value, 64)
        digits = _B64_DIGITS[digit] + digits
        if not value:
            return digits


def _freedict_paths(path: Path) -> tuple[Path, Path] | None:
    """``(index, data)`` when ``path`` names a dictd dictionary by any of its files or its
    basename; ``None`` otherwise."""
    name = path.name
    for suffix in (".dict.dz", ".dict", ".index"):
        if name.endswith(suffix):
            base = path.with_name(name[: -len(suffix)])
            break
    else:
        if path.is_file() or not path.with_name(name + ".index").exists():
            return None
        base = path
    index = base.with_name(base.name + ".index")
    compressed = base.with_name(base.name + ".dict.dz")
    return index, compressed if compressed.exists() else base.with_name(base.name + ".dict")


def _read_dict_data(data: Path) -> bytes:
    raw = _read_bytes(data)
    if not data.name.endswith(".dz"):
        return raw
    try:
        return gzip.decompress(raw)  # dictzip is gzip with a seek table in the extra field
    except (OSError, EOFError, zlib.error) as exc:
        raise ClirkitError(f"not a valid dictzip/gzip file ({exc})", path=data,
                           fix="re-download the dictionary or gunzip it to .dict") from None


_SENSE_NUMBER = regex.compile(r"^\s*\d+[.)]\s*")
_ANNOTATION = regex.compile(r"<[^>]*>|\([^)]*\)|\[[^\]]*\]|\{[^}]*\}")
_NOTE = regex.compile(r"^(?:note|notes|see|see also|synonyms?|antonyms?|examples?)\s*:", regex.I)


def first_translation(headword: str, body: str) -> str | None:
    """The first translation in a FreeDict entry body, or ``None``.

    FreeDict entries (rendered from TEI by its tei2c5 style sheet) start with the headword line
    (headword, /pronunciation/, <grammar>), followed by translations, one sense per line and
    possibly numbered ("1. house"), then notes, examples and cross references. We skip the
    headword line, numbers, notes (``Note:``, ``see:``, ``Synonym:``...), quoted examples and
    annotations in <> () [] {}, and take the first comma- or semicolon-separated item.
    """
    lines = body.splitlines()
    if lines and lines[0].strip().lower().startswith(headword.lower()):
        lines = lines[1:]
    for line in lines:
        text = _SENSE_NUMBER.sub("", line).strip()
        if not text or text.startswith('"') or _NOTE.match(text):
            continue
        for item in regex.split(r"[,;]", _ANNOTATION.sub(" ", text)):
            item = " ".join(item.split())
            if item:
                return item
    return None


def _load_freedict(index: Path, data: Path) -> Lexicon:
    body_bytes = _read_dict_data(data)
    entries: dict[str, tuple[str, float]] = {}
    for number, line in _decoded_lines(index):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (3, 4):  # dictfmt may add the original headword as a 4th column
            raise ClirkitError(f"expected headword<TAB>offset<TAB>length, got {len(fields)} "
                               "columns", path=index, line=number, fix="check the .index file")
        headword, offset_b64, length_b64 = fields[:3]
        try:
            offset, length = dictd_b64_decode(offset_b64), dictd_b64_decode(length_b64)
        except ValueError as exc:
            raise ClirkitError(f"bad base-64 offset/length {offset_b64!r}/{length_b64!r} ({exc})",
                               path=index, line=number, fix="check the .index file") from None
        key = headword.lower()
        if key.startswith(("00-database", "00database")) or key in entries:
            continue  # dictd metadata, or a later homograph: the first entry wins
        if offset + length > len(body_bytes):
            raise ClirkitError(f"entry {headword!r} points past the end of {data.name}",
                               path=index, line=number,
                               fix="the .index and .dict files do not belong together")
        try:
            body = body_bytes[offset:offset + length].decode("utf-8")
        except UnicodeDecodeError:
            raise ClirkitError(f"entry {headword!r} in {data.name} is not valid UTF-8",
                               path=index, line=number, fix="re-encode the dictionary") from None
        english = first_translation(headword, body)
        if english:
            entries[key] = (english, 1.0)
    return Lexicon(entries, source=str(index))


def load_lexicon(path: str | Path) -> Lexicon:
    """Read a lexicon TSV (see :func:`save_lexicon`) or a FreeDict dictionary.

    A FreeDict dictionary (dictd format) is named by its ``.index``, ``.dict`` or ``.dict.dz``
    file or by its basename; the entry for each headword is its first translation (see
    :func:`first_translation`) with score 1.0. ``.dict.dz`` (dictzip) is read as gzip.

    Raises:
        ClirkitError: missing file, invalid UTF-8, missing columns, bad score or bad base-64,
            naming the file and line.
    """
    path = Path(path)
    freedict = _freedict_paths(path)
    if freedict is not None:
        return _load_freedict(*freedict)
    if not path.exists():
        raise ClirkitError("lexicon file does not exist", path=path,
                           fix="give a TSV lexicon or a FreeDict .index/.dict(.dz)")
    return _load_tsv(path)


# --------------------------------------------------------------------------- translation


def translate_query(text: str, lexicon: Mapping[str, str]) -> str:
    """Translate ``text`` word by word; unknown words and all separators are kept.

    The offline stand-in for query translation: each word is looked up lower-cased and the
    translation takes the word's capitalisation (:func:`clirkit.text.match_case`).

    Args:
        text: the foreign query.
        lexicon: foreign lower-cased word -> English word (a :class:`Lexicon` or any mapping).

    Returns:
        The translated query.
    """
    parts = split_words(text)
    for i in range(1, len(parts), 2):
        english = lexicon.get(parts[i].lower())
        if english:
            parts[i] = match_case(parts[i], english)
    return "".join(parts)


def _cache_dir() -> Path:
    from clirkit.rundir import cache_root

    return cache_root() / "lexicon"


def induced_lexicon(bitext: Path, method: str = "dice", min_count: int = 2, iterations: int = 5) -> Lexicon:
    """The lexicon induced from a bitext table (English ``src``, foreign ``tgt``), cached.

    The result is kept as TSV under ``$CLIRKIT_CACHE/lexicon/`` (default ``experiments/cache``),
    keyed by the table's SHA-256 and the induction settings, so a grid of runs induces it once.
    """
    key = f"{sha256_file(bitext)[:16]}-{method}-min{min_count}" + (f"-it{iterations}" if method == "ibm1" else "")
    cached = _cache_dir() / f"{key}.tsv"
    if cached.exists():
        return load_lexicon(cached)
    lexicon = induce_lexicon(((src, tgt) for _, src, tgt in iter_bitext(bitext)), method, iterations, min_count)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    try:
        save_lexicon(lexicon, partial)
        partial.replace(cached)  # atomic: a concurrent reader sees all of it or nothing
    finally:
        partial.unlink(missing_ok=True)
    return lexicon


def translator_for(spec: str, dataset: Dataset) -> Callable[[Mapping[str, str]], dict[str, str]]:
    """The query-translation baseline named by ``spec`` (``--query-translation``).

    ``"lexicon:PATH"`` loads PATH with :func:`load_lexicon`; plain ``"lexicon"`` induces a Dice
    lexicon from the dataset's own ``bitext/train.tsv`` (English ``src``, foreign ``tgt``), cached
    by :func:`induced_lexicon`.

    Args:
        spec: ``"lexicon"`` or ``"lexicon:PATH"``.
        dataset: the dataset whose queries will be translated.

    Returns:
        A function from ``{query_id: text}`` to ``{query_id: translated text}``.

    Raises:
        ClirkitError: another spec, a bad lexicon file, or no bitext to induce from.
    """
    kind, _, path = spec.partition(":")
    if kind.strip() != "lexicon":
        raise ClirkitError(f"unknown query translation {spec!r}", fix="use lexicon or lexicon:PATH")
    if path.strip():
        lexicon = load_lexicon(path.strip())
    else:
        bitext = dataset.bitext_path("train")
        if not bitext.exists():
            raise ClirkitError("no bitext/train.tsv to induce a lexicon from", path=dataset.path,
                               fix="give a lexicon file: --query-translation lexicon:PATH")
        lexicon = induced_lexicon(bitext)
    return lambda queries: {qid: translate_query(text, lexicon) for qid, text in queries.items()}
