"""Lexicons: induction (Dice, IBM Model 1) against plain reference implementations, TSV and
FreeDict (dictd) reading, query translation."""

from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clirkit.data.formats import Dataset
from clirkit.errors import ClirkitError
from clirkit.lexicon import (
    Lexicon,
    dictd_b64_decode,
    dictd_b64_encode,
    first_translation,
    induce_lexicon,
    load_lexicon,
    save_lexicon,
    translate_query,
    translator_for,
)

# --------------------------------------------------------------------------- synthetic bitext


def planted_corpus(n_pairs: int = 400, seed: int = 0) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Sentence pairs whose foreign side translates each English word through a hidden bijection,
    drops ~10% of words, adds two noise words and scrambles the order."""
    rng = random.Random(seed)
    english = ["house", "water", "big", "child", "school", "road", "tree", "eat", "walk", "red",
               "the", "a", "of", "and"]
    foreign = ["nyumba", "maji", "kubwa", "mtoto", "shule", "barabara", "mti", "kula", "tembea",
               "nyekundu", "ya", "na", "kwa", "ni"]
    rng.shuffle(foreign)
    planted = dict(zip(foreign, english, strict=True))
    to_foreign = {e: f for f, e in planted.items()}
    pairs = []
    for _ in range(n_pairs):
        sentence = rng.choices(english, k=rng.randint(4, 9))
        translated = [to_foreign[w] for w in sentence if rng.random() > 0.1]
        translated += [f"noise{rng.randrange(40)}" for _ in range(2)]
        rng.shuffle(translated)
        pairs.append((" ".join(sentence).capitalize() + ".", " ".join(translated)))
    return pairs, planted


@pytest.mark.parametrize("method", ["dice", "ibm1"])
def test_induction_recovers_planted_translations(method):
    pairs, planted = planted_corpus()
    lexicon = induce_lexicon(pairs, method=method)
    assert {f: lexicon[f] for f in planted} == planted
    assert all(0.0 < lexicon.score(f) <= 1.0 for f in planted)


def test_dice_by_hand():
    pairs = [("the house", "la casa"), ("the dog", "el perro"), ("a house", "una casa")]
    lexicon = induce_lexicon(pairs, method="dice", min_count=1)
    assert lexicon["casa"] == "house" and lexicon.score("casa") == 1.0  # 2*2 / (2+2)
    assert lexicon["perro"] == "dog" and lexicon.score("perro") == 1.0  # "the": 2*1 / (1+2)
    # la: dice(la, the) = dice(la, house) = 2*1 / (1+2); the tie goes to the first word.
    assert lexicon["la"] == "house" and lexicon.score("la") == pytest.approx(2 / 3)


def test_ibm1_learns_what_cooccurrence_cannot_tell():
    # "haus" only ever co-occurs with "the" and "house"; EM explains "the" by "das".
    pairs = [("the house", "das haus"), ("the book", "das buch"), ("a book", "ein buch")]
    lexicon = induce_lexicon(pairs, method="ibm1", iterations=10, min_count=1)
    assert dict(lexicon) == {"das": "the", "haus": "house", "buch": "book", "ein": "a"}
    assert lexicon.score("buch") > 0.5


def reference_dice(pairs, min_count):
    """Dice coefficients with Python sets and dicts, straight from the definition."""
    tok = [(e.lower().split(), f.lower().split()) for e, f in pairs]
    ce = Counter(w for e, _ in tok for w in e)
    cf = Counter(w for _, f in tok for w in f)
    docs_e, docs_f, both = Counter(), Counter(), Counter()
    for e, f in tok:
        es = {w for w in e if ce[w] >= min_count}
        fs = {w for w in f if cf[w] >= min_count}
        docs_e.update(es)
        docs_f.update(fs)
        both.update((x, y) for x in fs for y in es)
    best = {}
    for (f, e), c in sorted(both.items()):  # alphabetical, so ties keep the first English word
        score = 2 * c / (docs_e[e] + docs_f[f])
        if f not in best or score > best[f][1]:
            best[f] = (e, score)
    return best


def reference_ibm1(pairs, iterations, min_count):
    """IBM Model 1 EM for t(e|f) with a NULL foreign word, written as in Brown et al. (1993)."""
    tok = [(e.lower().split(), f.lower().split()) for e, f in pairs]
    ce = Counter(w for e, _ in tok for w in e)
    cf = Counter(w for _, f in tok for w in f)
    tok = [([w for w in e if ce[w] >= min_count], [None] + [w for w in f if cf[w] >= min_count]) for e, f in tok]
    t = defaultdict(lambda: 1.0)
    for _ in range(iterations):
        count, total = defaultdict(float), defaultdict(float)
        for e_sent, f_sent in tok:
            for e in e_sent:
                z = sum(t[e, f] for f in f_sent)
                for f in f_sent:
                    count[e, f] += t[e, f] / z
                    total[f] += t[e, f] / z
        t = defaultdict(float, {(e, f): c / total[f] for (e, f), c in count.items()})
    return t


def random_pairs(seed: int, n: int = 60):
    rng = random.Random(seed)
    e_vocab = [f"e{i}" for i in range(25)]
    f_vocab = [f"f{i}" for i in range(25)]
    return [(" ".join(rng.choices(e_vocab, k=rng.randint(1, 7))), " ".join(rng.choices(f_vocab, k=rng.randint(0, 7))))
            for _ in range(n)]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3))
def test_dice_matches_the_reference(seed, min_count):
    pairs = random_pairs(seed)
    lexicon = induce_lexicon(pairs, method="dice", min_count=min_count)
    expected = reference_dice(pairs, min_count)
    assert {f: (e, pytest.approx(s)) for f, (e, s) in expected.items()} == \
        {f: (lexicon[f], lexicon.score(f)) for f in lexicon}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 3))
def test_ibm1_matches_the_reference(seed, iterations, min_count):
    pairs = random_pairs(seed)
    lexicon = induce_lexicon(pairs, method="ibm1", iterations=iterations, min_count=min_count)
    t = reference_ibm1(pairs, iterations, min_count)
    best: dict[str, float] = defaultdict(float)
    for (_, f), p in t.items():
        if f is not None:
            best[f] = max(best[f], p)
    assert set(lexicon) == set(best)
    for f, p in best.items():
        assert lexicon.score(f) == pytest.approx(p, rel=1e-9)
        # The chosen word has the maximal t(e|f) (summation order may break exact ties).
        assert t[lexicon[f], f] == pytest.approx(p, rel=1e-9)


def test_induction_is_deterministic_and_order_free_for_dice():
    pairs, _ = planted_corpus(200, seed=3)
    shuffled = random.Random(1).sample(pairs, len(pairs))
    assert list(induce_lexicon(pairs).scored()) == list(induce_lexicon(shuffled).scored())
    assert list(induce_lexicon(pairs, "ibm1").scored()) == list(induce_lexicon(pairs, "ibm1").scored())


def test_rare_words_are_pruned():
    pairs = [("house big", "nyumba kubwa"), ("house", "nyumba"), ("big", "kubwa"), ("rare", "nadra")]
    lexicon = induce_lexicon(pairs, min_count=2)
    assert "nadra" not in lexicon and lexicon["nyumba"] == "house"
    assert induce_lexicon(pairs, min_count=1)["nadra"] == "rare"


def test_induction_handles_any_script_and_empty_input():
    pairs = [("the school", "المدرسة الكبيرة"), ("the big school", "المدرسة الكبيرة جداً")] * 2
    lexicon = induce_lexicon(pairs, min_count=1)
    assert lexicon["المدرسة"] == "school"  # tied with "the" at 1.0; alphabetical first
    assert lexicon["جداً"] == "big"
    assert len(induce_lexicon([])) == 0
    assert len(induce_lexicon([("only english", "")], "ibm1", min_count=1)) == 0


def test_bad_induction_arguments():
    with pytest.raises(ClirkitError, match="dice, ibm1"):
        induce_lexicon([], method="ibm2")
    with pytest.raises(ClirkitError, match="iterations"):
        induce_lexicon([], method="ibm1", iterations=0)


# --------------------------------------------------------------------------- TSV


# No control characters (tab, newline) or line separators: they cannot appear inside a TSV field.
WORD = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8)
WORD = WORD.map(str.strip).filter(bool)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(WORD.map(str.lower), st.tuples(WORD, st.floats(0, 1))))
def test_tsv_round_trip(tmp_path_factory, entries):
    entries = {f: v for f, v in entries.items() if f == f.lower()}  # lower() is not idempotent for every letter
    path = tmp_path_factory.mktemp("lex") / "lex.tsv"
    save_lexicon(Lexicon(entries), path)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "foreign\tenglish\tscore"
    loaded = load_lexicon(path)
    assert {f: loaded[f] for f in loaded} == {f: e for f, (e, _) in entries.items()}
    assert all(loaded.score(f) == pytest.approx(s, abs=1e-6) for f, (_, s) in entries.items())


def test_tsv_plain_mapping_lowercases_and_keeps_best_duplicate(tmp_path):
    path = tmp_path / "lex.tsv"
    path.write_text("foreign\tenglish\tscore\nNyumba\thouse\t0.5\nnyumba\thome\t0.95\nNYUMBA\tdwelling\t0.9\n\n",
                    encoding="utf-8")
    lexicon = load_lexicon(path)
    assert dict(lexicon) == {"nyumba": "home"} and lexicon.score("nyumba") == 0.95
    save_lexicon({"maji": "water"}, tmp_path / "plain.tsv")
    assert load_lexicon(tmp_path / "plain.tsv").score("maji") == 1.0


@pytest.mark.parametrize("content, line, needle", [
    (b"foreign\tenglish\tscore\nnyumba\thouse\t1\nkubwa\tbig\n", 3, "3 tab-separated columns"),
    (b"foreign\tenglish\tscore\nnyumba\thouse\t1\nmaji\t\xff\xfe\t1\n", 3, "invalid UTF-8"),
    (b"foreign\tenglish\tscore\nnyumba\thouse\thigh\n", 2, "not a number"),
    (b"nyumba\thouse\t1\n", 1, "header"),
    (b"", 1, "header"),
])
def test_bad_tsv_names_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(ClirkitError) as info:
        load_lexicon(path)
    assert f"{path}:{line}:" in str(info.value) and needle in str(info.value)


def test_missing_lexicon_file(tmp_path):
    with pytest.raises(ClirkitError, match="does not exist"):
        load_lexicon(tmp_path / "nope.tsv")


# --------------------------------------------------------------------------- FreeDict / dictd


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    """dictd's index number encoding: base 64, most significant digit first, no padding."""
    return B64[n] if n < 64 else b64(n // 64) + B64[n % 64]


def test_dictd_numbers():
    assert [dictd_b64_decode(s) for s in ("A", "B", "/", "BA", "Bv", "BAA")] == [0, 1, 63, 64, 111, 4096]
    assert all(dictd_b64_decode(dictd_b64_encode(n)) == n for n in (0, 1, 63, 64, 4095, 4096, 10**9))
    assert dictd_b64_encode(111) == b64(111)
    with pytest.raises(ValueError):
        dictd_b64_decode("B=")


def dictzip(data: bytes) -> bytes:
    """A gzip member with dictzip's "RA" extra field (one chunk), as dictzip(1) writes it."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    ra = struct.pack("<HHH", 1, 58315, 1) + struct.pack("<H", len(body))
    extra = b"RA" + struct.pack("<H", len(ra)) + ra
    header = b"\x1f\x8b\x08\x04" + struct.pack("<I", 0) + b"\x02\x03" + struct.pack("<H", len(extra)) + extra
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


ENTRIES = [
    ("00-database-url", "00-database-url\n     https://freedict.org/\n"),
    ("00-database-info", "00-database-info\n" + "This is a test dictionary in the dictd format. " * 4 + "\n"),
    ("nyumba", "nyumba /ɲumba/ <n>\nhouse, home\n   Note: also a family\n"),
    ("kubwa", "kubwa <adj>\n1. big (in size); large\n2. great\n"),
    ("maji", "maji\n   \"maji ya kunywa\" - drinking water\n   water\n"),
    ("Shule", "Shule <n>\n(education) school\n"),
    ("mji", "mji /mdʒi/\nSynonym: {kijiji}\ntown\n"),
    ("nyumba", "nyumba\ndwelling\n"),  # a second homograph: the first entry wins
]


def write_freedict(folder: Path, compress: bool = True, index_lines: list[str] | None = None) -> Path:
    data, lines, offset = b"", [], 0
    for headword, body in ENTRIES:
        raw = body.encode("utf-8")
        lines.append(f"{headword}\t{b64(offset)}\t{b64(len(raw))}")
        data += raw
        offset += len(raw)
    base = folder / "swa-eng"
    (folder / "swa-eng.index").write_text("\n".join(index_lines or lines) + "\n", encoding="utf-8")
    if compress:
        (folder / "swa-eng.dict.dz").write_bytes(dictzip(data))
        assert gzip.decompress(dictzip(data)) == data
    else:
        (folder / "swa-eng.dict").write_bytes(data)
    return base


EXPECTED = {"nyumba": "house", "kubwa": "big", "maji": "water", "shule": "school", "mji": "town"}


@pytest.mark.parametrize("compress", [True, False])
def test_freedict_reader(tmp_path, compress):
    base = write_freedict(tmp_path, compress)
    data_name = "swa-eng.dict.dz" if compress else "swa-eng.dict"
    assert max(dictd_b64_decode(line.split("\t")[1]) for line in
               (tmp_path / "swa-eng.index").read_text().splitlines()) >= 64  # multi-digit offsets
    for path in (f"{base}.index", tmp_path / data_name, base):
        lexicon = load_lexicon(path)
        assert dict(lexicon) == EXPECTED
        assert lexicon.score("nyumba") == 1.0


def test_first_translation_layouts():
    assert first_translation("abandon", "abandon /əˈbændən/ <verb>\n1. verlassen\n2. aufgeben\n") == "verlassen"
    assert first_translation("Haus", "Haus /haʊs/ <n, neut>\nhouse <n> [archit.]\n") == "house"
    assert first_translation("x", "x\n   Note: nothing\n") is None


@pytest.mark.parametrize("mangle, line, needle", [
    (lambda ls: ls[:2] + ["nyumba\tA!\tB"] + ls[3:], 3, "base-64"),
    (lambda ls: ls[:1] + ["kubwa\tAB"] + ls[2:], 2, "columns"),
    (lambda ls: ls[:3] + ["maji\tA\tZZZZ"] + ls[4:], 4, "past the end"),
])
def test_bad_freedict_index_names_file_and_line(tmp_path, mangle, line, needle):
    write_freedict(tmp_path)
    good = (tmp_path / "swa-eng.index").read_text(encoding="utf-8").splitlines()
    (tmp_path / "swa-eng.index").write_text("\n".join(mangle(good)) + "\n", encoding="utf-8")
    with pytest.raises(ClirkitError) as info:
        load_lexicon(tmp_path / "swa-eng.index")
    assert f"swa-eng.index:{line}:" in str(info.value) and needle in str(info.value)


def test_freedict_invalid_utf8_and_corrupt_dz(tmp_path):
    write_freedict(tmp_path)
    index = tmp_path / "swa-eng.index"
    index.write_bytes(index.read_bytes().replace(b"kubwa", b"kub\xffa"))
    with pytest.raises(ClirkitError, match=r"swa-eng\.index:4: invalid UTF-8"):
        load_lexicon(index)
    (tmp_path / "swa-eng.dict.dz").write_bytes(b"not gzip at all")
    with pytest.raises(ClirkitError, match="dictzip"):
        load_lexicon(index)


# --------------------------------------------------------------------------- translation


def test_translate_query_word_by_word():
    lexicon = {"nyumba": "house", "kubwa": "big", "maji": "water"}
    assert translate_query("Nyumba kubwa, ya MAJI?", lexicon) == "House big, ya WATER?"
    assert translate_query("  ", lexicon) == "  "


def test_translator_for_induces_from_the_dataset_bitext_or_loads_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIRKIT_CACHE", str(tmp_path / "cache"))
    pairs, planted = planted_corpus(300)
    (tmp_path / "bitext").mkdir()
    rows = ["id\tsrc\ttgt"] + [f"p{i}\t{e}\t{f}" for i, (e, f) in enumerate(pairs)]
    (tmp_path / "bitext" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = Dataset(path=tmp_path, card={}, queries={}, qrels={})
    foreign = sorted(planted)[:3]
    queries = {"q1": " ".join(foreign).capitalize()}
    expected = " ".join(planted[f] for f in foreign).capitalize()
    assert translator_for("lexicon", ds)(queries) == {"q1": expected}
    assert len(list((tmp_path / "cache" / "lexicon").glob("*.tsv"))) == 1
    assert translator_for("lexicon", ds)(queries) == {"q1": expected}  # from the cache
    save_lexicon({f: planted[f] for f in foreign}, tmp_path / "lex.tsv")
    assert translator_for(f"lexicon:{tmp_path / 'lex.tsv'}", ds)(queries) == {"q1": expected}
    with pytest.raises(ClirkitError, match="bitext"):
        translator_for("lexicon", Dataset(path=tmp_path / "empty", card={}, queries={}, qrels={}))
    with pytest.raises(ClirkitError, match="lexicon or lexicon:PATH"):
        translator_for("google", ds)


# --------------------------------------------------------------------------- imports


def test_lexicon_does_not_import_perturb():
    # Imports flow one way, perturb -> lexicon (code-switch loads lexicon files); lexicon takes its
    # word splitting and case helpers from clirkit.text. A fresh interpreter shows what it loads.
    code = ("import sys, clirkit.lexicon; "
            "print(sorted(m for m in sys.modules if m.startswith('clirkit.perturb') or m == 'clirkit.text'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "['clirkit.text']"
