"""Language-aware text analysis for lexical retrieval: normalise, tokenise, drop stopwords, stem.

The chain follows Lucene's language analyzers (StandardTokenizer -> LowerCaseFilter ->
StopFilter -> SnowballFilter), built from the field's libraries:

- Normalisation: NFKC then ``str.casefold`` (Unicode full case folding, so German "Straße"
  and "STRASSE" meet), as ICU's ``NFKC_Casefold`` does.
- Tokens: maximal runs of ``\\w`` of the ``regex`` module, which counts letters, combining
  marks, digits, connector punctuation and ZWJ/ZWNJ as word characters, so Vietnamese
  diacritics, Devanagari vowel signs and the Persian ZWNJ stay inside their word whatever the
  script. Han ideographs and Hiragana, written without spaces, become one token per character
  (what Lucene's StandardTokenizer emits for them, UAX #29); Katakana, Hangul and Thai runs stay
  whole (no dictionary segmentation).
- Stopwords: the list bm25s ships for the language (en, de, nl, fr, es, pt, it, ru, sv, no,
  zh, tr, ko, da), on by default when one exists; no list otherwise.
- Stemming: Snowball (Porter, 2001) through PyStemmer, when the
  language has a stemmer; none otherwise (one warning per language, not an error).

Reference: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
(Foundations and Trends in IR, 2009) for why BM25 wants stemmed, stopped terms.
"""

from __future__ import annotations

import logging
import unicodedata
from functools import cached_property

import regex

log = logging.getLogger("clirkit")

# One ideograph or kana per token; otherwise a run of word characters that are not such.
_CJK = r"\p{Han}\p{Hiragana}"
TOKEN_PATTERN = rf"[{_CJK}]\p{{M}}*|(?:(?![{_CJK}])\w)+"
_TOKEN = regex.compile(TOKEN_PATTERN)

# ISO 639-1 and 639-3 (both bibliographic and terminological) codes of the Snowball stemmers
# PyStemmer ships; a Snowball name ("english") is accepted as is.
_SNOWBALL: dict[str, tuple[str, ...]] = {
    "arabic": ("ar", "ara"), "armenian": ("hy", "hye", "arm"), "basque": ("eu", "eus", "baq"),
    "catalan": ("ca", "cat"), "czech": ("cs", "ces", "cze"), "danish": ("da", "dan"),
    "dutch": ("nl", "nld", "dut"), "english": ("en", "eng"), "esperanto": ("eo", "epo"),
    "estonian": ("et", "est"), "finnish": ("fi", "fin"), "french": ("fr", "fra", "fre"),
    "german": ("de", "deu", "ger"), "greek": ("el", "ell", "gre"), "hindi": ("hi", "hin"),
    "hungarian": ("hu", "hun"), "indonesian": ("id", "ind"), "irish": ("ga", "gle"),
    "italian": ("it", "ita"), "lithuanian": ("lt", "lit"), "nepali": ("ne", "nep"),
    "norwegian": ("no", "nor", "nb", "nob", "nn", "nno"), "persian": ("fa", "fas", "per"),
    "polish": ("pl", "pol"), "portuguese": ("pt", "por"), "romanian": ("ro", "ron", "rum"),
    "russian": ("ru", "rus"), "serbian": ("sr", "srp"), "sesotho": ("st", "sot"),
    "spanish": ("es", "spa"), "swedish": ("sv", "swe"), "tamil": ("ta", "tam"),
    "turkish": ("tr", "tur"), "yiddish": ("yi", "yid"),
}
_CODE_TO_SNOWBALL = {code: name for name, codes in _SNOWBALL.items() for code in codes}

# bm25s.stopwords list names by ISO 639-1 code.
_STOPWORD_LISTS = {
    "en": "STOPWORDS_EN", "de": "STOPWORDS_GERMAN", "nl": "STOPWORDS_DUTCH", "fr": "STOPWORDS_FRENCH",
    "es": "STOPWORDS_SPANISH", "pt": "STOPWORDS_PORTUGUESE", "it": "STOPWORDS_ITALIAN",
    "ru": "STOPWORDS_RUSSIAN", "sv": "STOPWORDS_SWEDISH", "no": "STOPWORDS_NORWEGIAN",
    "zh": "STOPWORDS_CHINESE", "tr": "STOPWORDS_TURKISH", "ko": "STOPWORDS_KOREAN", "da": "STOPWORDS_DANISH",
}

_warned: set[str] = set()


def primary_code(language: str | None) -> str:
    """The primary subtag of a language tag, lower-cased: ``"pt-BR"`` -> ``"pt"``, ``None`` -> ``""``."""
    return regex.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]


def snowball_name(language: str | None) -> str | None:
    """The Snowball stemmer for an ISO 639-1/639-3 code or a Snowball name, or None if there is none."""
    import Stemmer

    code = primary_code(language)
    name = code if code in _SNOWBALL else _CODE_TO_SNOWBALL.get(code)
    return name if name in Stemmer.algorithms() else None


def stopword_list_name(language: str | None) -> str | None:
    """The bm25s stopword list for a language, or None if bm25s has none."""
    code = primary_code(language)
    name = code if code in _SNOWBALL else _CODE_TO_SNOWBALL.get(code)
    iso1 = _SNOWBALL[name][0] if name else {"zho": "zh", "chi": "zh", "kor": "ko"}.get(code, code)
    return _STOPWORD_LISTS.get(iso1)


def tokenize(text: str) -> list[str]:
    """Normalise (NFKC, casefold) and split ``text`` into words of any script (see the module doc)."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _TOKEN.findall(text)


class Analyzer:
    """Text -> index terms for one language.

    Args:
        language: ISO 639-1/639-3 code (``"en"``, ``"tgl"``), a tag (``"pt-BR"``) or a Snowball
            name (``"english"``). An unknown or empty language analyses without stemmer or
            stopwords and warns once.
        stem: apply the language's Snowball stemmer when one exists.
        stopwords: drop the language's bm25s stopwords when bm25s has a list.

    Example:
        >>> Analyzer("en")("The cats are running")
        ['cat', 'run']
    """

    def __init__(self, language: str | None, stem: bool = True, stopwords: bool = True) -> None:
        self.language = primary_code(language)
        self.stemmer_name = snowball_name(language) if stem else None
        self.stopword_list = stopword_list_name(language) if stopwords else None
        if stem and self.stemmer_name is None:
            self._warn_once(f"no Snowball stemmer for language {self.language or '(none)'!r}: BM25 terms are "
                            "not stemmed")

    @staticmethod
    def _warn_once(message: str) -> None:
        if message not in _warned:
            _warned.add(message)
            log.warning(message)

    @cached_property
    def _stemmer(self):
        import Stemmer

        return Stemmer.Stemmer(self.stemmer_name) if self.stemmer_name else None

    @cached_property
    def stopwords(self) -> frozenset[str]:
        """The stopwords dropped (empty without a list), normalised like the text."""
        if self.stopword_list is None:
            return frozenset()
        import bm25s.stopwords

        return frozenset(t for w in getattr(bm25s.stopwords, self.stopword_list) for t in tokenize(w))

    def __call__(self, text: str) -> list[str]:
        """The index terms of ``text``, in order (repeats kept: they are term frequencies)."""
        stop = self.stopwords
        tokens = [t for t in tokenize(text) if t not in stop]
        return self._stemmer.stemWords(tokens) if self._stemmer is not None else tokens

    def describe(self) -> dict:
        """The analysis chain, for manifests and index keys."""
        return {
            "language": self.language or None,
            "stemmer": f"snowball:{self.stemmer_name}" if self.stemmer_name else None,
            "lowercase": "NFKC+casefold",
            "token_pattern": TOKEN_PATTERN,
            "stopwords": f"bm25s:{self.stopword_list} ({len(self.stopwords)})" if self.stopword_list else None,
        }
