"""Words, grapheme clusters and case (clirkit.text): checked against the UAX #29 reference."""

from __future__ import annotations

import unicodedata

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from clirkit.text import clusters, has_mark, match_case, split_words, starts_cluster, strip_marks, words

FAST = settings(max_examples=200, deadline=None)

BASES = "aeiouyAEOnNcz" + "бдЖ" + "αΩ" + "بتخدهی" + "कनमस" + "東"
MARKS = ("\u0300\u0301\u0302\u0303\u0309\u0323\u031b\u0327"  # Latin accents, Vietnamese tones
         "\u064b\u064e\u064f\u0650\u0651\u0652"  # Arabic harakat
         "\u093c\u0901\u0902")  # Devanagari nukta, candrabindu, anusvara
SEPARATORS = [" ", ", ", "! ", "\n", "-", "\u200f ", "؟ "]


@st.composite
def combining_sequences(draw) -> list[str]:
    """Base letters each followed by 0-3 combining marks: every one must stay one cluster."""
    return [draw(st.sampled_from(BASES)) + "".join(draw(st.lists(st.sampled_from(MARKS), max_size=3)))
            for _ in range(draw(st.integers(1, 8)))]


@FAST
@given(st.lists(combining_sequences(), min_size=1, max_size=4), st.lists(st.sampled_from(SEPARATORS), min_size=4,
                                                                        max_size=4))
def test_combining_sequences_are_never_split(seqs, seps):
    text = "".join(f"{''.join(seq)}{sep}" for seq, sep in zip(seqs, seps, strict=False))
    expected_words = ["".join(seq) for seq in seqs]
    assert words(text) == expected_words
    for word, seq in zip(words(text), seqs, strict=True):
        assert clusters(word) == seq  # one cluster per base letter with all of its marks
    assert all(not unicodedata.combining(c[0]) for c in clusters(text))


@FAST
@given(st.text(max_size=40))
def test_clusters_and_words_agree_with_the_regex_reference(text):
    # The fast paths (ASCII, text without joining characters) must give what \X gives.
    assert clusters(text) == regex.findall(r"\X", text)
    reference = [""]
    for cluster in regex.findall(r"\X", text):
        if regex.match(r"\w", cluster):
            if len(reference) % 2:  # currently in a separator: start a word
                reference.append("")
            reference[-1] += cluster
        else:
            if len(reference) % 2 == 0:  # currently in a word: start a separator
                reference.append("")
            reference[-1] += cluster
    if len(reference) % 2 == 0:
        reference.append("")
    assert split_words(text) == reference


def test_examples_with_zwnj_tones_and_conjuncts():
    assert words("می\u200cخواهم کتاب‌های فارسی؟") == ["می\u200cخواهم", "کتاب\u200cهای", "فارسی"]
    assert clusters("Vie\u0323\u0302t") == ["V", "i", "e\u0323\u0302", "t"]
    assert clusters("क्षत्रिय") == ["क्ष", "त्रि", "य"]
    assert split_words("ang bahay, sabi!") == ["", "ang", " ", "bahay", ", ", "sabi", "!"]


@pytest.mark.parametrize("source, target, expected", [
    ("Nyumba", "house", "House"),       # capitalised -> first letter up
    ("MAJI", "water", "WATER"),         # all caps -> all caps
    ("ÉCOLE", "school", "SCHOOL"),
    ("AB", "straße", "STRASSE"),        # str.upper's full case mapping
    ("A", "house", "House"),            # one capital letter is a capitalised word, not all caps
    ("McDonald", "x y", "X y"),
    ("maji", "Water", "Water"),         # lower case leaves the target alone, it never lowers it
    ("خانه", "house", "house"),         # a script without case
    ("", "house", "house"),
])
def test_match_case(source, target, expected):
    assert match_case(source, target) == expected


def test_strip_marks_and_has_mark():
    assert strip_marks("Tiếng Việt") == "Tieng Viet"
    assert strip_marks("Tie\u0302\u0301ng") == "Tieng"  # decomposed input
    assert strip_marks("ça\u0301") == "ca"
    assert strip_marks("Straße ø") == "Straße ø"  # no canonical decomposition: kept
    assert strip_marks("مَدْرَسَة") == "مدرسة"
    assert strip_marks("é") == "e" and unicodedata.is_normalized("NFC", strip_marks("Ợ\u0301"))
    assert has_mark("é") and has_mark("e\u0301") and has_mark("كِتَاب")
    assert not has_mark("Straße") and not has_mark("کتاب")


def test_starts_cluster():
    assert starts_cluster("ab") and starts_cluster("می\u200cخواهم")
    assert not starts_cluster("\u0301ab")  # a leading mark would fuse with a preceding space
