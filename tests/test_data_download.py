"""The download guards: https only, CLIRKIT_ONLINE, atomic writes, zip members kept inside their folder."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from clirkit.data import download
from clirkit.data.bitext import BitextConfig, extract_moses_pair, prepare_bitext
from clirkit.data.download import fetch, safe_member_name
from clirkit.errors import ClirkitError


class _Resp(io.BytesIO):
    def __init__(self, data: bytes, url: str, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.url, self.fail_after, self.reads = url, fail_after, 0

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def geturl(self):
        return self.url

    def read(self, n=-1):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise KeyboardInterrupt("signal 15")  # what terminate_as_interrupt raises on SIGTERM
        return super().read(4)


@pytest.mark.parametrize("url", ["http://example.org/a.zip", "file:///etc/passwd", "ftp://example.org/a",
                                 "https:///no-host", "/local/path.zip"])
def test_only_https_urls_are_fetched(tmp_path, monkeypatch, url):
    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not connect"))
    with pytest.raises(ClirkitError, match="only https://") as e:
        fetch(url, tmp_path / "x")
    assert url in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [None, "0", "yes"])
def test_offline_refuses_at_once_naming_the_url(tmp_path, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CLIRKIT_ONLINE", raising=False)
    else:
        monkeypatch.setenv("CLIRKIT_ONLINE", value)
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not connect"))
    url = "https://object.pouta.csc.fi/OPUS-X/v1/moses/en-sw.txt.zip"
    with pytest.raises(ClirkitError) as e:
        fetch(url, tmp_path / "x.zip")
    assert url in str(e.value) and "CLIRKIT_ONLINE=1" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_opus_offline_is_refused_before_any_connection(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIRKIT_ONLINE", raising=False)
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not connect"))
    for version in ("v1", "latest"):
        cfg = BitextConfig(pair="en-sw", opus="CCAligned", opus_version=version, licence="x",
                           download_dir=tmp_path / "dl", out=tmp_path / "o")
        with pytest.raises(ClirkitError, match="offline: not downloading https://.*CLIRKIT_ONLINE=1"):
            prepare_bitext(cfg)
    assert not (tmp_path / "o").exists()


def test_fetch_is_atomic_and_cleans_up_after_an_interruption(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    url = "https://example.org/data.bin"
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda u, timeout: _Resp(b"0123456789abcdef", u))
    assert fetch(url, tmp_path / "cache" / "data.bin").read_bytes() == b"0123456789abcdef"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["data.bin"]

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda u, timeout: _Resp(b"x" * 64, u, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        fetch(url, tmp_path / "cache" / "other.bin")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["data.bin"]  # no .tmp, no partial file


def test_redirect_to_http_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda u, timeout: _Resp(b"data", "http://evil.example/data.bin"))
    with pytest.raises(ClirkitError, match="refusing to download http://evil.example/data.bin"):
        fetch("https://example.org/data.bin", tmp_path / "d.bin")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/abs/evil.en", "C:evil", "c:/x/evil", "..\\evil",
                                  "dir\\evil.en", ""])
def test_unsafe_member_names_are_rejected(name):
    with pytest.raises(ClirkitError, match="unsafe member name"):
        safe_member_name(name, "x.zip")


def test_safe_member_names_pass():
    assert str(safe_member_name("moses/Corpus.en-sw.en", "x.zip")) == "moses/Corpus.en-sw.en"
    assert str(safe_member_name("Corpus..en", "x.zip")) == "Corpus..en"  # dots inside a name are fine


def test_crafted_zip_is_refused_and_nothing_is_written(tmp_path):
    zpath = tmp_path / "dl" / "evil.zip"
    zpath.parent.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Corpus.en-sw.en", "Hello.\n")
        z.writestr("Corpus.en-sw.sw", "Habari.\n")
        z.writestr("../evil.en", "owned\n")
        z.writestr("/abs/evil.sw", "owned\n")
    zpath.write_bytes(buf.getvalue())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ClirkitError, match="unsafe member name '../evil.en'"):
        extract_moses_pair(zpath, "en", "sw", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not Path("/abs/evil.sw").exists()


def test_nested_members_are_extracted_under_their_base_name(tmp_path):
    zpath = tmp_path / "ok.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("moses/Corpus.en-sw.sw", "Habari.\n")
        z.writestr("moses/Corpus.en-sw.en", "Hello.\n")
    files = extract_moses_pair(zpath, "en", "sw", tmp_path / "dl")
    assert [p.name for p in files] == ["Corpus.en-sw.en", "Corpus.en-sw.sw"]
    assert files[0].read_text() == "Hello.\n" and not list((tmp_path / "dl").glob(".*"))


def _moses_zip(path: Path, en: str, sw: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("CCAligned.en-sw.en", en)
        z.writestr("CCAligned.en-sw.sw", sw)
    return path


def test_each_zip_is_extracted_into_its_own_folder(tmp_path):
    # two releases of one corpus: the same member names, other contents
    v1 = _moses_zip(tmp_path / "OPUS-CCAligned-v1-en-sw.txt.zip", "Hello.\n", "Habari.\n")
    v2 = _moses_zip(tmp_path / "OPUS-CCAligned-v2-en-sw.txt.zip", "Good morning.\n", "Habari za asubuhi.\n")
    first = extract_moses_pair(v1, "en", "sw", tmp_path / "dl")
    second = extract_moses_pair(v2, "en", "sw", tmp_path / "dl")
    assert [p.parent.name for p in first] == ["OPUS-CCAligned-v1-en-sw.txt"] * 2
    assert [p.parent.name for p in second] == ["OPUS-CCAligned-v2-en-sw.txt"] * 2
    assert [p.read_text() for p in first] == ["Hello.\n", "Habari.\n"]
    assert [p.read_text() for p in second] == ["Good morning.\n", "Habari za asubuhi.\n"]  # not v1's files
    assert extract_moses_pair(v1, "en", "sw", tmp_path / "dl") == first  # extracted once, found again


def test_a_zip_with_two_files_of_one_side_is_refused(tmp_path):
    zpath = tmp_path / "two.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("a/Corpus.en-sw.en", "Hello.\n")
        z.writestr("b/Corpus.en-sw.en", "Bye.\n")
        z.writestr("a/Corpus.en-sw.sw", "Habari.\n")
    with pytest.raises(ClirkitError, match="several .en or .sw files"):
        extract_moses_pair(zpath, "en", "sw", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_ir_datasets_downloads_obey_clirkit_online(monkeypatch):
    """The guard wraps ir_datasets' one HTTP entry point: offline it refuses naming the URL."""
    from ir_datasets.util.download import RequestsDownload

    download._guard_irds_downloads()
    download._guard_irds_downloads()  # idempotent: wrapped once
    assert getattr(RequestsDownload.__iter__, "_clirkit_guard", False)
    monkeypatch.delenv("CLIRKIT_ONLINE", raising=False)
    with pytest.raises(ClirkitError, match="offline: not downloading https://example.org/x.tsv.*CLIRKIT_ONLINE=1"):
        iter(RequestsDownload("https://example.org/x.tsv"))
    monkeypatch.setenv("CLIRKIT_ONLINE", "1")
    with pytest.raises(ClirkitError, match="only https://"):
        iter(RequestsDownload("http://example.org/x.tsv"))


def test_guard_irds_surfaces_the_offline_refusal(monkeypatch):
    refusal = ClirkitError("offline: not downloading https://example.org/x", fix="set CLIRKIT_ONLINE=1")

    def factory():
        yield 1
        raise RuntimeError("All download sources failed", [("mirror", refusal)])

    with pytest.raises(ClirkitError) as e:
        list(download.guard_irds(factory, "mmarco/v2/de"))
    assert e.value is refusal
