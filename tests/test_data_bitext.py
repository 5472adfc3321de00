"""Bitext preparation: every input format, every filter counted, clean errors for bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import urllib.error
from pathlib import Path

import pytest

from clirkit.data import bitext, download
from clirkit.data.bitext import (
    BitextConfig,
    count_tokens,
    near_duplicate_key,
    opus_moses_url,
    parse_pair,
    prepare_bitext,
)
from clirkit.data.formats import iter_bitext, read_card
from clirkit.errors import ClirkitError

FIX = Path(__file__).parent / "fixtures" / "bitext"
MOSES = [FIX / "moses/Tiny.en-sw.en", FIX / "moses/Tiny.en-sw.sw"]


def _pairs(out: Path, split: str) -> list[tuple[str, str, str]]:
    path = out / "bitext" / f"{split}.tsv"
    return list(iter_bitext(path)) if path.is_file() else []


def _filters(card: dict) -> dict[str, tuple[int, int]]:
    return {f["filter"]: (f.get("before", f.get("count")), f.get("after", f.get("count"))) for f in card["filters"]}


def test_moses_every_filter_counted(tmp_path):
    # files given sw first: the suffixes (.en/.sw) decide the sides, not the order
    cfg = BitextConfig(pair="en-sw", files=MOSES[::-1], licence="CC0-1.0 (test fixture)", max_tokens=20,
                       dev_size=2, out=tmp_path / "o")
    out = prepare_bitext(cfg)
    card = read_card(out)
    assert card["kind"] == "bitext" and card["pair"] == "en-sw" and card["languages"] == ["en", "sw"]
    assert card["licence"] == "CC0-1.0 (test fixture)" and card["variant"] == "moses"
    assert _filters(card) == {
        "read": (18, 18),
        "non-empty after NFC + whitespace folding": (18, 17),   # line 8 has an empty English side
        "exact duplicates removed": (17, 15),                   # line 2, and line 6 (equal to 5 after NFC)
        "near duplicates removed": (15, 13),                    # line 3 (case/punctuation), line 13 (digits)
        "1 <= tokens per side <= 20": (13, 12),                 # line 10 (30 tokens)
        "length ratio <= 3.0": (12, 11),                        # line 11 (10 vs 1 tokens)
    }
    assert card["counts"]["bitext_train"] == 9 and card["counts"]["bitext_dev"] == 2
    rows = _pairs(out, "train") + _pairs(out, "dev")
    assert len(rows) == 11 and len({i for i, _, _ in rows}) == 11
    src = {s: t for _, s, t in rows}
    assert src["The cat sleeps on the mat."] == "Paka analala juu ya mkeka."  # src is the English side
    assert "Café is open." in src and "Cafe\u0301 is open." not in src  # NFC
    assert src["Hello world again"] == "Habari dunia tena"  # whitespace folded
    assert card["split"]["dev"] == 2 and card["split"]["train"] == 9


def test_dev_split_is_seeded(tmp_path):
    def dev_ids(seed: int, name: str, dev_size=0.25):
        cfg = BitextConfig(pair="en-sw", files=MOSES, licence="CC0", max_tokens=20, dev_size=dev_size, seed=seed,
                           out=tmp_path / name)
        return sorted(i for i, _, _ in _pairs(prepare_bitext(cfg), "dev"))

    a = dev_ids(0, "a")
    assert a == dev_ids(0, "b") and len(a) == 3  # round(0.25 * 11)
    assert len({tuple(dev_ids(s, f"s{s}")) for s in range(1, 6)}) > 1
    assert dev_ids(0, "none", dev_size=0) == []


def test_dev_size_too_large(tmp_path):
    with pytest.raises(ClirkitError, match="dev_size 1000 leaves no training pairs"):
        prepare_bitext(BitextConfig(pair="en-sw", files=MOSES, licence="CC0", dev_size=1000, out=tmp_path / "o"))
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())  # temp files cleaned


def _sentences(n: int, lang: str) -> list[str]:
    # distinct, not near-duplicate, 3-6 tokens: every pair survives the default filters
    return [f"{lang} sentence {'abcdefghij'[i % 10]}{'klmnopqrst'[i // 10 % 10]}{'uvwxyzabcd'[i // 100]} "
            + " ".join(["word"] * (i % 4)) for i in range(n)]


def test_default_dev_split_fits_a_small_wikimatrix_file(tmp_path, caplog):
    """643 WikiMatrix pairs (margin, en, tl; gzipped as released): default dev = round(10%) = 64."""
    import gzip

    path = tmp_path / "WikiMatrix.en-tl.tsv.gz"
    en, tl = _sentences(643, "en"), _sentences(643, "tl")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, (a, b) in enumerate(zip(en, tl, strict=True)):
            f.write(f"{1.05 + i / 10000:.4f}\t{a}\t{b}\n")
    with caplog.at_level("INFO", logger="clirkit"):
        out = prepare_bitext(BitextConfig(pair="en-tl", format="wikimatrix", files=[path], licence="CC BY-SA",
                                          out=tmp_path / "o"))
    card = read_card(out)
    assert card["split"]["dev"] == 64 and card["split"]["train"] == 579
    assert card["split"]["dev_size"] == "auto" and "min(1000" in card["split"]["dev_size_rule"]
    assert len(_pairs(out, "dev")) == 64 and len(_pairs(out, "train")) == 579
    said = [r.getMessage() for r in caplog.records if "dev split" in r.getMessage()]
    assert len(said) == 1 and "643 pairs" in said[0] and "64 pairs" in said[0]


def test_default_dev_split_fits_an_800_line_moses_pair(tmp_path):
    en, tl = tmp_path / "WikiMatrix.en-tl.en", tmp_path / "WikiMatrix.en-tl.tl"
    en.write_text("\n".join(_sentences(800, "en")) + "\n", encoding="utf-8")
    tl.write_text("\n".join(_sentences(800, "tl")) + "\n", encoding="utf-8")
    out = prepare_bitext(BitextConfig(pair="en-tl", files=[tl, en], licence="CC BY-SA", out=tmp_path / "o"))
    card = read_card(out)
    assert (card["split"]["dev"], card["split"]["train"]) == (80, 720)
    assert all(s.startswith("en ") and t.startswith("tl ") for _, s, t in _pairs(out, "train"))  # sides by suffix


@pytest.mark.parametrize("n, dev", [(1, 0), (2, 1), (9, 1), (15, 2), (643, 64), (20_000, 1000)])
def test_default_dev_count(n, dev):
    assert bitext._dev_count(None, n) == dev
    assert bitext._dev_count(0.5, n) == round(0.5 * n) and bitext._dev_count(3, n) == 3


def test_moses_line_count_mismatch_names_both_files(tmp_path):
    files = [FIX / "moses_mismatch/Short.en-sw.en", FIX / "moses_mismatch/Short.en-sw.sw"]
    with pytest.raises(ClirkitError) as e:
        prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", dev_size=0, out=tmp_path / "o"))
    msg = str(e.value)
    assert f"{files[0]} has 5 lines" in msg and f"{files[1]} has 4" in msg
    assert not (tmp_path / "o").exists()


def test_invalid_utf8_names_file_and_line(tmp_path):
    files = [FIX / "invalid_utf8/Bad.en-sw.en", FIX / "invalid_utf8/Bad.en-sw.sw"]
    with pytest.raises(ClirkitError, match=rf"{files[1]}:2: invalid UTF-8"):
        prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", dev_size=0, out=tmp_path / "o"))


def test_tsv_header_in_other_order_swaps_columns(tmp_path):
    out = prepare_bitext(BitextConfig(pair="en-sw", format="tsv", files=[FIX / "tsv/pairs.sw-en.tsv"], licence="x",
                                      dev_size=1, out=tmp_path / "o"))
    rows = {s: t for _, s, t in _pairs(out, "train") + _pairs(out, "dev")}
    assert rows["Water is life."] == "Maji ni uhai."
    assert rows["Thank you very much."] == "Asante sana."  # trailing tab tolerated
    assert rows['She said "welcome".'] == 'Alisema "karibu".'  # quotes are plain characters
    assert _filters(read_card(out))["read"] == (5, 5)


def test_tsv_first_line_of_other_language_codes_is_data_with_a_warning(tmp_path, caplog):
    """A first line of two other language codes may be another corpus's header or a pair of short
    words ("to", "sa"): read as data, with a warning naming the line."""
    path = tmp_path / "pairs.tsv"
    path.write_text("de\tfr\nWater is life.\tMaji ni uhai.\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="clirkit"):
        out = prepare_bitext(BitextConfig(pair="en-sw", format="tsv", files=[path], licence="x", dev_size=0,
                                          out=tmp_path / "o"))
    assert f"{path}:1: the first line 'de\\tfr' looks like a header naming de-fr, not the pair en-sw" in caplog.text
    assert {s: t for _, s, t in _pairs(out, "train")} == {"de": "fr", "Water is life.": "Maji ni uhai."}


def test_tsv_wrong_column_count_names_line(tmp_path):
    path = FIX / "tsv_bad/three_columns.tsv"
    with pytest.raises(ClirkitError, match=rf"{path}:3: expected 2 tab-separated columns"):
        prepare_bitext(BitextConfig(pair="en-sw", format="tsv", files=[path], licence="x", out=tmp_path / "o"))


def test_wikimatrix_margin_threshold_and_gzip(tmp_path):
    src = FIX / "wikimatrix/WikiMatrix.en-sw.tsv"
    gz = tmp_path / "WikiMatrix.en-sw.tsv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    out = prepare_bitext(BitextConfig(pair="en-sw", format="wikimatrix", files=[gz], licence="CC-BY-SA",
                                      dev_size=0, out=tmp_path / "o"))
    card = read_card(out)
    assert _filters(card)["score >= 1.04"] == (5, 3)  # 1.04 kept, 1.0399 dropped
    assert {s for _, s, _ in _pairs(out, "train")} == {
        "Nairobi is the capital of Kenya.", "Swahili is spoken in East Africa.", "The lake is large."}
    out2 = prepare_bitext(BitextConfig(pair="sw-en", format="wikimatrix", files=[src], threshold=1.1, licence="x",
                                       dev_size=0, out=tmp_path / "p"))
    assert {s for _, s, _ in _pairs(out2, "train")} == {"Nairobi ni mji mkuu wa Kenya.",
                                                         "Kiswahili kinazungumzwa Afrika Mashariki."}


def test_ccaligned_column_order_from_file_name(tmp_path):
    files = [FIX / "ccaligned/en_XX-sw_KE.tsv", FIX / "ccaligned/sw_KE-en_XX.tsv"]
    out = prepare_bitext(BitextConfig(pair="en-sw", format="ccaligned", files=files, licence="unknown (CCAligned)",
                                      dev_size=0, out=tmp_path / "o"))
    rows = {s: t for _, s, t in _pairs(out, "train")}
    assert rows == {"Welcome to our website.": "Karibu kwenye tovuti yetu.", "Contact us today.": "Wasiliana nasi leo.",
                    "Click here.": "Bofya hapa.", "Latest news.": "Habari za hivi punde.", "Low prices.": "Bei nafuu."}
    out2 = prepare_bitext(BitextConfig(pair="en-sw", format="ccaligned", files=files, threshold=1.1, licence="x",
                                       dev_size=0, out=tmp_path / "p"))
    assert _filters(read_card(out2))["score >= 1.1"] == (5, 3)


def test_tmx_language_prefixes_and_inline_codes(tmp_path):
    out = prepare_bitext(BitextConfig(pair="en-sw", format="tmx", files=[FIX / "tmx/tiny.tmx"], licence="x",
                                      dev_size=0, out=tmp_path / "o"))
    rows = {s: t for _, s, t in _pairs(out, "train")}
    assert rows == {"Good evening.": "Habari za jioni.", "Press Save now.": "Bonyeza Hifadhi sasa.",
                    "Good night.": "Usiku mwema."}
    card = read_card(out)
    assert card["filter_notes"]["tmx_units_without_both_languages"] == 1
    assert _filters(card)["read"] == (3, 3)


def test_malformed_tmx_names_the_line(tmp_path):
    path = FIX / "tmx_bad/broken.tmx"
    with pytest.raises(ClirkitError, match=rf"{path}:6: malformed TMX"):
        prepare_bitext(BitextConfig(pair="en-sw", format="tmx", files=[path], licence="x", out=tmp_path / "o"))


def test_language_codes():
    assert parse_pair("en-sw") == ("en", "sw")
    assert parse_pair("ENG-swh") == ("eng", "swh")
    for bad, msg in (("xx-sw", "unknown language code 'xx'"), ("en-qqq", "unknown language code 'qqq'"),
                     ("en", "not <src>-<tgt>"), ("en-eng", "names one language twice")):
        with pytest.raises(ClirkitError, match=msg):
            parse_pair(bad)
    with pytest.raises(ClirkitError, match="unknown language code 'zz'"):
        BitextConfig(pair="en-zz", files=MOSES, licence="x")


def test_three_letter_codes_match_file_suffixes(tmp_path):
    out = prepare_bitext(BitextConfig(pair="eng-swh", files=MOSES[::-1], licence="x", max_tokens=20, dev_size=0,
                                      out=tmp_path / "o"))
    assert read_card(out)["pair"] == "eng-swh"
    assert ("Water is life.", "Maji ni uhai.") in {(s, t) for _, s, t in _pairs(out, "train")}
    assert (tmp_path / "o").name == "o"


def test_licence_and_inputs_required(tmp_path):
    with pytest.raises(ClirkitError, match="licence is required"):
        BitextConfig(pair="en-sw", files=MOSES, licence="  ")
    with pytest.raises(ClirkitError, match="exactly two files"):
        BitextConfig(pair="en-sw", files=MOSES[:1], licence="x")
    with pytest.raises(ClirkitError, match="no input files"):
        BitextConfig(pair="en-sw", licence="x")


def test_default_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIX / "moses", tmp_path / "in")
    files = [tmp_path / "in/Tiny.en-sw.en", tmp_path / "in/Tiny.en-sw.sw"]
    out = prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", max_tokens=20, dev_size=1))
    assert out == Path("data/bitext-en-sw") and (tmp_path / out / "dataset.json").is_file()
    assert json.loads((tmp_path / out / "dataset.json").read_text())["counts"]["bitext_dev"] == 1


def test_opus_url_and_offline_download(tmp_path, monkeypatch):
    assert opus_moses_url("CCAligned", "v1", "sw", "en") == "https://object.pouta.csc.fi/OPUS-CCAligned/v1/moses/en-sw.txt.zip"

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    for version in ("v1", "latest"):
        cfg = BitextConfig(pair="en-sw", opus="CCAligned", opus_version=version, licence="x",
                           download_dir=tmp_path / "dl", out=tmp_path / f"o-{version}")
        with pytest.raises(ClirkitError, match="cannot download https://.*name resolution"):
            prepare_bitext(cfg)


def test_opus_zip_is_unpacked_and_read(tmp_path, monkeypatch):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("CCAligned.en-sw.en", "Hello there.\nGood morning.\n")
        z.writestr("CCAligned.en-sw.sw", "Habari yako.\nHabari za asubuhi.\n")
        z.writestr("README", "readme")
    payload = buf.getvalue()

    class _Resp(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.close()

        def geturl(self):
            return seen[-1]

    seen = []
    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: seen.append(url) or _Resp(payload))
    out = prepare_bitext(BitextConfig(pair="en-sw", opus="CCAligned", opus_version="v1", licence="see OPUS",
                                      download_dir=tmp_path / "dl", dev_size=0, out=tmp_path / "o"))
    assert seen == ["https://object.pouta.csc.fi/OPUS-CCAligned/v1/moses/en-sw.txt.zip"]
    assert {(s, t) for _, s, t in _pairs(out, "train")} == {("Hello there.", "Habari yako."),
                                                            ("Good morning.", "Habari za asubuhi.")}
    assert read_card(out)["source"]["opus"]["corpus"] == "CCAligned"


def test_tokens_and_near_duplicate_key():
    assert count_tokens("Hello   world") == 2
    assert count_tokens("我爱北京") == 4 and count_tokens("iPhone手机 ok") == 4  # unspaced scripts count per character
    assert near_duplicate_key("Hello, World 2!") == near_duplicate_key("hello world") == "hello world"


def test_ccaligned_non_iso_code_in_file_name(tmp_path):
    f = tmp_path / "en_XX-cx_PH.tsv"  # CCAligned's code for Cebuano
    f.write_text("Good day.\tMaayong adlaw.\t1.2\n", encoding="utf-8")
    out = prepare_bitext(BitextConfig(pair="ceb-en", format="ccaligned", files=[f], licence="x", dev_size=0,
                                      out=tmp_path / "o"))
    assert _pairs(out, "train")[0][1:] == ("Maayong adlaw.", "Good day.")
    g = tmp_path / "de_DE-fr_FR.tsv"
    g.write_text("Guten Tag.\tBonjour.\t1.2\n", encoding="utf-8")
    with pytest.raises(ClirkitError, match="file name says de-fr, not the pair en-sw"):
        prepare_bitext(BitextConfig(pair="en-sw", format="ccaligned", files=[g], licence="x", out=tmp_path / "p"))


def _copy(tmp_path: Path, source: Path, name: str) -> Path:
    target = tmp_path / "in" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(source, target)
    return target


def test_moses_sides_come_from_the_suffixes_and_other_languages_are_refused(tmp_path, caplog):
    en, sw = MOSES
    # one suffix names a side: the other file is the other side, whatever the order given
    for files in ([_copy(tmp_path, sw, "a.sw"), _copy(tmp_path, en, "a.txt")],
                  [_copy(tmp_path, en, "b.txt"), _copy(tmp_path, sw, "b.sw")]):
        out = prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", max_tokens=20, dev_size=0,
                                          out=tmp_path / f"o-{files[0].stem}"))
        assert ("Water is life.", "Maji ni uhai.") in {(s, t) for _, s, t in _pairs(out, "train")}
    # no suffix names a language: the first file is src, and a warning says so
    caplog.set_level("WARNING", logger="clirkit")
    files = [_copy(tmp_path, en, "c.txt"), _copy(tmp_path, sw, "c.dat")]
    prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", max_tokens=20, dev_size=0,
                                out=tmp_path / "o-c"))
    assert "taking the first as the en side" in caplog.text
    # a file of another language, or one language twice: refused before anything is written
    for name, (a, b) in {"de": (en, sw), "twice": (en, en)}.items():
        files = [_copy(tmp_path, a, f"{name}.en"), _copy(tmp_path, b, f"{name}.de" if name == "de" else "twice2.en")]
        with pytest.raises(ClirkitError, match=r"the Moses files end in \.en and \.(de|en), not in the two "
                                               r"languages of the pair en-sw"):
            prepare_bitext(BitextConfig(pair="en-sw", files=files, licence="x", out=tmp_path / "refused" / "o"))
        assert not (tmp_path / "refused").exists()


def test_wikimatrix_and_ccaligned_files_of_another_language_are_refused(tmp_path):
    wm = _copy(tmp_path, FIX / "wikimatrix/WikiMatrix.en-sw.tsv", "WikiMatrix.de-en.tsv")
    cc = _copy(tmp_path, FIX / "ccaligned/en_XX-sw_KE.tsv", "en_XX-de_DE.tsv")
    for fmt, path, says in (("wikimatrix", wm, "de-en"), ("ccaligned", cc, "en-de")):
        with pytest.raises(ClirkitError, match=rf"{path}: file name says {says}, not the pair en-sw"):
            prepare_bitext(BitextConfig(pair="en-sw", format=fmt, files=[path], licence="x",
                                        out=tmp_path / "refused" / "o"))
        assert not (tmp_path / "refused").exists()
    # the pair reversed in the name swaps the columns
    rev = _copy(tmp_path, FIX / "wikimatrix/WikiMatrix.en-sw.tsv", "WikiMatrix.sw-en.tsv")
    out = prepare_bitext(BitextConfig(pair="en-sw", format="wikimatrix", files=[rev], licence="x", dev_size=0,
                                      out=tmp_path / "o"))
    assert "Nairobi ni mji mkuu wa Kenya." in {s for _, s, _ in _pairs(out, "train")}


def test_a_refused_bitext_file_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from clirkit.cli import app

    files = [_copy(tmp_path, MOSES[0], "x.en"), _copy(tmp_path, MOSES[1], "x.de")]
    r = CliRunner().invoke(app, ["prepare", "bitext", "--pair", "en-sw", "--licence", "x", "--out",
                                 str(tmp_path / "o"), str(files[0]), str(files[1])])
    assert r.exit_code == 2 and "not in the two languages of the pair en-sw" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
