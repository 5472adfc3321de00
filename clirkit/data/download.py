"""Every network access of the data layer, behind one set of guards.

* **https only**: :func:`check_url` refuses any other scheme (``http://``, ``file://``, ``ftp://``...),
  also after redirects, so a download can neither be read nor tampered with on the way, nor read
  local files.
* **offline unless asked**: nothing is downloaded unless ``CLIRKIT_ONLINE=1``; otherwise the
  request is refused at once with one line naming the URL (:func:`require_online`). The same
  rule covers ir_datasets, whose lazy downloads are refused by :func:`load_irds` naming the URL.
* **nothing half-written**: :func:`fetch` writes to a temporary name inside the target folder,
  renames it into place only when complete and removes it on any failure; SIGTERM raises (via
  :func:`clirkit.rundir.terminate_as_interrupt`) so the clean-up also runs on ``kill``.
* **nothing let out**: :func:`safe_member_name` rejects zip members that would land outside
  their folder (``..`` parts, absolute paths, Windows drive letters or backslashes).
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from clirkit.errors import ClirkitError

ONLINE_ENV = "CLIRKIT_ONLINE"


def online() -> bool:
    """Whether downloads are allowed (``CLIRKIT_ONLINE=1``)."""
    return os.environ.get(ONLINE_ENV, "0") == "1"


def check_url(url: str) -> str:
    """Return ``url`` if it is an ``https://`` URL with a host; otherwise a ClirkitError naming it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.netloc:
        raise ClirkitError(f"refusing to download {url}: only https:// URLs are fetched",
                           fix="use the https:// address of the file (or download it yourself and pass the local path)")
    return url


def require_online(url: str) -> None:
    """Refuse at once, naming ``url``, unless ``CLIRKIT_ONLINE=1``."""
    if not online():
        raise ClirkitError(f"offline: not downloading {url}",
                           fix=f"set {ONLINE_ENV}=1 to allow downloads, or fetch it yourself and pass the local file")


def open_url(url: str, timeout: float = 30.0) -> Any:
    """Open an https URL for reading after the online and scheme checks (a context manager response).

    Raises:
        ClirkitError: a non-https URL (also after a redirect), offline, or a network error.
    """
    check_url(url)
    require_online(url)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 -- scheme checked above
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ClirkitError(f"cannot download {url} ({getattr(e, 'reason', e)})",
                           fix="check the network, or download the file by hand and pass the local path") from None
    final = response.geturl()
    if final != url:
        try:
            check_url(final)  # a redirect must not downgrade to http or leave for file://
        except ClirkitError:
            response.close()
            raise
    return response


def fetch(url: str, dest: str | Path, *, timeout: float = 30.0, chunk: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` atomically; the one download function of the data layer.

    The bytes go to a hidden temporary file in ``dest``'s folder (``.<name>.<random>.tmp``),
    which is renamed to ``dest`` when complete and removed on any failure, including Ctrl-C and
    SIGTERM (turned into KeyboardInterrupt for the duration), so a cache never holds a partial file.

    Returns:
        ``dest``.

    Raises:
        ClirkitError: a non-https URL, offline (``CLIRKIT_ONLINE`` unset), or a network error.
    """
    from clirkit.rundir import terminate_as_interrupt  # rundir imports data.formats: import late

    dest = Path(dest)
    check_url(url)
    require_online(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with terminate_as_interrupt():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f, open_url(url, timeout) as r:
                try:
                    while block := r.read(chunk):
                        f.write(block)
                except (OSError, TimeoutError) as e:
                    raise ClirkitError(f"download of {url} broke off ({e})",
                                       fix="check the network and retry") from None
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_member_name(name: str, archive: str | Path) -> PurePosixPath:
    """The relative path of an archive member, or a ClirkitError if it could leave its folder.

    Rejected: absolute names (``/x``), ``..`` components, Windows drive letters (``C:x``) and
    backslashes (``..\\x`` is a parent reference on Windows), and empty names.
    """
    path = PurePosixPath(name)
    if (not name or "\\" in name or _DRIVE.match(name) or path.is_absolute()
            or any(part == ".." for part in path.parts)):
        raise ClirkitError(f"unsafe member name {name!r} in the archive (it would be written outside its folder)",
                           path=archive, fix="delete the archive; it is not a genuine release file")
    return path


# --------------------------------------------------------------------------- ir_datasets


def _guard_irds_downloads() -> None:
    """Make ir_datasets' HTTP downloads obey ``CLIRKIT_ONLINE`` and the https rule.

    ir_datasets downloads lazily on first iteration, through ``RequestsDownload`` (also behind
    its Google Drive mirror); wrapping that one method once refuses exactly the accesses that
    would reach the network, while data it has already cached still loads offline.
    """
    try:
        from ir_datasets.util.download import RequestsDownload
    except Exception:  # not installed, or replaced in tests: nothing to guard
        return
    original = RequestsDownload.__iter__
    if getattr(original, "_clirkit_guard", False):
        return

    def guarded(self):
        check_url(self.url)
        require_online(self.url)
        return original(self)

    guarded._clirkit_guard = True  # type: ignore[attr-defined]
    RequestsDownload.__iter__ = guarded


def load_irds(dsid: str) -> Any:
    """Load an ir_datasets dataset (its downloads guarded), or explain in one line why it cannot be used."""
    try:
        import ir_datasets
    except ImportError:
        raise ClirkitError("no --data-dir given and ir_datasets is not installed",
                           fix="download the files and pass --data-dir DIR (or pip install ir_datasets)") from None
    _guard_irds_downloads()
    try:
        return ir_datasets.load(dsid)
    except Exception as e:  # unknown id, missing download metadata, ...
        raise ClirkitError(f"ir_datasets cannot load {dsid!r} ({type(e).__name__}: {e})",
                           fix="download the files and pass --data-dir DIR") from None


def _clirkit_error_in(exc: BaseException, depth: int = 0) -> ClirkitError | None:
    """A ClirkitError carried inside ``exc`` (ir_datasets wraps mirror failures in a RuntimeError)."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, ClirkitError):
            return arg
        if isinstance(arg, list | tuple):
            for item in arg:
                found = next((x for x in (item if isinstance(item, tuple) else (item,))
                              if isinstance(x, ClirkitError)), None)
                if found is not None:
                    return found
    cause = exc.__cause__ or exc.__context__
    return _clirkit_error_in(cause, depth + 1) if cause is not None and depth < 5 else None


def guard_irds(factory: Callable[[], Iterable], dsid: str) -> Iterator:
    """Iterate an ir_datasets iterator, turning download/network failures into one ClirkitError."""
    try:
        yield from factory()
    except ClirkitError:
        raise
    except Exception as e:  # ir_datasets downloads lazily, so being offline surfaces here
        inner = _clirkit_error_in(e)
        if inner is not None:
            raise inner from None
        raise ClirkitError(f"ir_datasets could not provide {dsid!r} ({type(e).__name__}: {e})",
                           fix="this machine may be offline or the data not downloaded: pass --data-dir DIR "
                               "with the release files") from None
