"""The experiment directory: create, manifest, status, log, atomic finish.

Layout (see GUIDE.md)::

    <runs_dir>/<YYYYmmdd-HHMMSS>-<command>-<hash8>[-<n>]/
      config.json  manifest.json  status.json  log.txt  metrics/  plots/ ...

The time is the start in UTC (:func:`run_stamp`); ``-<n>`` is a clash counter, taken only if
another run already holds the name (:func:`claim_dir`). A run is written under ``.<id>.tmp``
and renamed to ``<id>`` when it ends. A failed run is renamed too, with status ``failed`` and
the error, so it can be inspected; nothing else is ever touched and an existing directory is
never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from clirkit import __version__
from clirkit.config import Config
from clirkit.data.formats import file_digest
from clirkit.errors import ClirkitError

DEFAULT_RUNS_DIR = "experiments/runs"
PACKAGES = ("torch", "sentence-transformers", "transformers", "tokenizers", "faiss-cpu", "ir-measures",
            "geomloss", "pot", "numpy", "pandas", "scipy", "pydantic", "typer")
log = logging.getLogger("clirkit")
#: set while a reproduction runs (to the run-id time it started, ``YYYYmmdd-HHMMSS``); an
#: environment variable rather than a context variable so that grid workers (local processes,
#: submitit jobs) inherit it
NO_REUSE_ENV = "CLIRKIT_NO_REUSE_BEFORE"


@contextmanager
def fresh_run() -> Iterator[None]:
    """Within the block nothing stored before it is reused: no completed run, no index, no cache entry.

    ``clirkit reproduce`` runs a recorded configuration in this block so that a reproduction
    computes every artefact again instead of copying the (possibly corrupted) stored one. What
    the reproduction itself computes may be shared within it (the corpus index its evaluations
    all use, as the original grid shared it): lookups see only runs started in the block, and
    the caches (teacher outputs, tokenizers, lexicons) point to an empty temporary folder.
    """
    import tempfile

    saved = {k: os.environ.get(k) for k in (NO_REUSE_ENV, "CLIRKIT_CACHE")}
    cache = tempfile.mkdtemp(prefix="clirkit-fresh-cache-")
    os.environ.update({NO_REUSE_ENV: run_stamp(), "CLIRKIT_CACHE": cache})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(cache, ignore_errors=True)


#: the hook of :func:`before_completed`, taken by the next run that starts
_BEFORE_COMPLETED: ContextVar[Callable[[Run], None] | None] = ContextVar("clirkit_before_completed", default=None)


@contextmanager
def before_completed(hook: Callable[[Run], None]) -> Iterator[None]:
    """Within the block, the next run to start calls ``hook(run)`` after its body succeeded and
    before it is marked completed and renamed into place.

    ``clirkit reproduce`` writes its verdict this way: the reproduction is only ever seen
    completed with its verdict, and a kill while the verdict is written leaves it ``failed``.
    The hook belongs to the outermost run only (a grid, not its steps) and runs under the same
    SIGTERM-as-interrupt handling as the body; if it raises, the run fails.
    """
    token = _BEFORE_COMPLETED.set(hook)
    try:
        yield
    finally:
        _BEFORE_COMPLETED.reset(token)


def reuse_allowed() -> bool:
    """False inside :func:`fresh_run` (a reproduction): stored runs from before it must not be reused."""
    return not os.environ.get(NO_REUSE_ENV)


def reusable_runs(runs_dir: str | Path, command: str | None = None) -> list[Path]:
    """Completed runs whose results may be reused, oldest first: all of them, or inside
    :func:`fresh_run` only those started after it began (ids start with their start second; a run
    of that very second is left out, as it may predate the block)."""
    since = os.environ.get(NO_REUSE_ENV)
    runs = completed_runs(runs_dir, command)
    return [r for r in runs if r.name[:15] > since] if since else runs


def cache_root() -> Path:
    """Where derived data shared across runs is cached (teacher outputs, tokenizers, lexicons):
    ``$CLIRKIT_CACHE`` or ``experiments/cache`` (an empty temporary folder inside :func:`fresh_run`)."""
    return Path(os.environ.get("CLIRKIT_CACHE", "experiments/cache"))


def now() -> str:
    """The time in ISO 8601, UTC, to the second (a manifest's ``started`` and ``ended``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_stamp(when: datetime | None = None) -> str:
    """The time part of a run id (``YYYYmmdd-HHMMSS``), in UTC: ids sort by start time on every
    machine sharing a runs directory (a laptop and a cluster), whatever its time zone."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def run_digest(cfg: Config) -> str:
    """The hash part of a run id: 8 hex digits of the configuration, the time in ns and the process."""
    return hashlib.sha256(json.dumps([cfg.resolved(), time.time_ns(), os.getpid()],
                                     sort_keys=True).encode()).hexdigest()[:8]


def _numbered(base: str, n: int) -> str:
    return base if n == 0 else f"{base}-{n}"


def claim_dir(parent: Path, base: str, template: str = "{}", start: int = 0) -> tuple[int, Path]:
    """Create the folder ``parent / template.format(name)`` for the first free name among
    ``base``, ``base-1``, ``base-2``, ... (from counter ``start``); return the counter and the folder.

    ``os.mkdir`` is the claim: it fails if the folder exists, atomically, so two processes (two
    runs started in the same second, on one machine or on two nodes of a shared file system)
    never take the same name; the loser tries the next counter.
    """
    n = start
    while True:
        path = parent / template.format(_numbered(base, n))
        try:
            os.mkdir(path)
            return n, path
        except FileExistsError:
            n += 1


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClirkitError("file not found", path=path, fix="is this an experiment directory?") from None
    except json.JSONDecodeError as e:
        raise ClirkitError(f"malformed JSON ({e.msg})", path=path, line=e.lineno) from None


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the clirkit source checkout (None outside a git checkout)."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"clirkit": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hash_inputs(paths: dict[str, Path]) -> dict[str, dict[str, str]]:
    """sha256 of every input file; a folder is hashed file by file.

    A prepared dataset's files are not reread when their size and mtime still match its card
    (:func:`clirkit.data.formats.file_digest`).
    """
    out: dict[str, dict[str, str]] = {}
    for name, p in paths.items():
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        out[name] = {str(q): file_digest(q) for q in files}
    return out


class Run:
    """An experiment directory in progress. Create with :func:`start_run`."""

    def __init__(self, runs_dir: Path, command: str, cfg: Config, seed: int, argv: list[str]) -> None:
        self.runs_dir = runs_dir
        self.command = command
        self.cfg = cfg
        self.seed = seed
        started = datetime.now(UTC)
        #: the id without its clash counter; ``id`` is the name claimed (:meth:`claim`)
        self.base = f"{run_stamp(started)}-{command}-{run_digest(cfg)}"
        self.counter = 0
        self.id = self.base
        self.path = runs_dir / f".{self.id}.tmp"
        self.manifest: dict[str, Any] = {
            "id": self.id,
            "command": command,
            "argv": argv,
            "seed": seed,
            "git": git_state(),
            "packages": package_versions(),
            "platform": {"system": platform.platform(), "machine": platform.machine(),
                         "processor": platform.processor(), "cpus": os.cpu_count()},
            "device": None,  # device_info() of what the run computes on: set by start_run
            "inputs": {},
            "started": started.isoformat(timespec="seconds"),
            "ended": None,
        }

    @property
    def final(self) -> Path:
        """Where the run goes when it ends: ``<runs_dir>/<id>`` (unless a run takes that name
        meanwhile: then the next counter, :meth:`claim_final`)."""
        return self.runs_dir / self.id

    def claim(self) -> None:
        """Create the run's ``.<id>.tmp`` folder (:func:`claim_dir`: a clash takes the next counter)."""
        self.counter, self.path = claim_dir(self.runs_dir, self.base, ".{}.tmp")
        self.id = self.manifest["id"] = _numbered(self.base, self.counter)

    def claim_final(self) -> Path:
        """Claim the run's final name (its id, or the next free counter if a run of that name
        exists already) as an empty folder for the rename; the manifest records the name taken."""
        self.counter, final = claim_dir(self.runs_dir, self.base, start=self.counter)
        self.id = self.manifest["id"] = final.name
        return final

    def sub(self, name: str) -> Path:
        """A sub-folder of the run (metrics, plots, index, checkpoint), created on demand."""
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def add_inputs(self, **paths: Path) -> None:
        """Record the sha256 of input files or folders (data, model weights) in the manifest."""
        self.manifest["inputs"].update(hash_inputs(paths))
        write_json(self.path / "manifest.json", self.manifest)

    def record(self, **fields: Any) -> None:
        """Add fields to the manifest (device, reused index, chosen model, ...)."""
        self.manifest.update(fields)
        write_json(self.path / "manifest.json", self.manifest)

    def record_device(self, device: Any, precision: Any = "fp32") -> None:
        """Record the device actually used (e.g. ``cuda:1`` for a torchrun worker) and the precision."""
        from clirkit.device import device_info

        self.record(device=device_info(device, precision))

    def status(self, state: str, **extra: Any) -> None:
        write_json(self.path / "status.json", {"status": state, "updated": now(), **extra})


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return handler


def config_record(command: str, cfg: Config, seed: int) -> dict[str, Any]:
    """What a run's ``config.json`` holds: the command, the seed and every resolved field."""
    return {"command": command, "seed": seed, **cfg.resolved()}


@contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM (``kill``, a batch scheduler, torchrun stopping its workers)
    raises KeyboardInterrupt like Ctrl-C, so a run (and every run it is nested in) ends
    ``failed``, renamed into place (a distillation with its ``last/`` state ready for
    ``--resume``), instead of dying as a half-written ``.tmp``."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def start_run(runs_dir: str | Path, command: str, cfg: Config, seed: int,
              argv: list[str] | None = None, *, uses_device: bool = True) -> Iterator[Run]:
    """Create an experiment directory, yield it, and finish it atomically.

    The config's ``device``, ``devices`` and ``precision`` (if it has them and ``uses_device``)
    are resolved first, so an absent GPU or an impossible precision fails before anything is written; the
    manifest records :func:`clirkit.device.device_info` of that device and the precision.

    On success the status is ``completed``; on any exception it is ``failed`` with the error
    (and the traceback in log.txt), the directory is still renamed into place, and the
    exception propagates.
    """
    runtime = None
    if uses_device and "device" in type(cfg).model_fields:
        from clirkit.device import resolve_runtime

        runtime = resolve_runtime(cfg.device, getattr(cfg, "precision", "fp32"))
        for device in getattr(cfg, "devices", None) or ():  # --devices: every worker's device exists
            resolve_runtime(device, getattr(cfg, "precision", "fp32"))
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    run = Run(runs_dir, command, cfg, seed, list(argv if argv is not None else sys.argv))
    if runtime is not None:
        from clirkit.device import device_info

        run.manifest["device"] = device_info(*runtime)
    run.claim()
    write_json(run.path / "config.json", config_record(command, cfg, seed))
    write_json(run.path / "manifest.json", run.manifest)
    run.status("running", pid=os.getpid(), host=platform.node())  # whose it is: see close_abandoned
    if log.level == logging.NOTSET:  # library use without the CLI: still log to log.txt
        log.setLevel(logging.INFO)
    handler = _attach_log(run.path / "log.txt")
    log.info("run %s: %s", run.id, command)
    error: BaseException | None = None
    hook = _BEFORE_COMPLETED.get()
    token = _BEFORE_COMPLETED.set(None)  # the runs nested in this one (a grid's steps) do not call it
    try:
        with terminate_as_interrupt():
            yield run
            if hook is not None:
                hook(run)
    except BaseException as e:  # also KeyboardInterrupt: a killed run must say so
        error = e
        message = e.one_line() if isinstance(e, ClirkitError) else f"{type(e).__name__}: {e}"
        # to log.txt only: the CLI prints the one-line error on the console itself
        detail = "" if isinstance(e, ClirkitError) else "\n" + "".join(traceback.format_exception(e))
        handler.emit(log.makeRecord(log.name, logging.ERROR, __file__, 0, "failed: %s%s", (message, detail), None))
        run.status("failed", error=message)
        raise
    finally:
        _BEFORE_COMPLETED.reset(token)
        log.removeHandler(handler)
        handler.close()
        final = run.claim_final()  # never overwrite: an empty folder of our own, replaced by the rename
        run.manifest["ended"] = now()
        write_json(run.path / "manifest.json", run.manifest)
        if error is None:
            run.status("completed")
        os.replace(run.path, final)
        run.path = final


def abandoned(path: Path) -> bool:
    """Whether ``path`` is a run its process left behind: a ``.<id>.tmp`` folder still
    ``running`` whose process, on this machine, no longer exists (killed outright, by SIGKILL or
    the out-of-memory killer, before :func:`start_run` could end it). A run of another machine
    cannot be told from a live one: False."""
    if not (path.name.startswith(".") and path.name.endswith(".tmp")):
        return False
    try:
        status = read_json(path / "status.json")
    except ClirkitError:
        return False
    if not isinstance(status, dict):
        return False
    pid = status.get("pid")
    if status.get("status") != "running" or status.get("host") != platform.node() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def close_abandoned(path: Path, error: str) -> Path | None:
    """End an :func:`abandoned` run like any failed one: marked ``failed`` with ``error``, its
    manifest ended, renamed into place (a distillation keeps its ``last/`` state for ``--resume``).

    Returns:
        The run's new path; None if ``path`` is not abandoned (a live process's run, one of
        another machine, an ended one) and is left alone.
    """
    if not abandoned(path):
        return None
    try:
        manifest = read_json(path / "manifest.json")
    except ClirkitError:
        manifest = {}
    _, final = claim_dir(path.parent, str(manifest.get("id") or path.name[1:-4]))
    try:
        manifest.update(id=final.name, ended=now())
        write_json(path / "manifest.json", manifest)
        write_json(path / "status.json", {"status": "failed", "updated": now(), "error": error})
        os.replace(path, final)
    except OSError:  # another process (a second grid) closed it first
        final.rmdir()
        return None
    return final


def run_status(path: Path) -> str:
    try:
        return read_json(path / "status.json").get("status", "unknown")
    except ClirkitError:
        return "unknown"


def completed_runs(runs_dir: str | Path, command: str | None = None) -> list[Path]:
    """Completed experiment directories, oldest first (ids sort by time)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for p in sorted(runs_dir.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        if command is not None and f"-{command}-" not in p.name:
            continue
        if run_status(p) == "completed":
            out.append(p)
    return out


def find_stored(runs_dir: str | Path, sub: str, key: str) -> Path | None:
    """The ``<sub>/`` folder (an index) of the newest reusable run (:func:`reusable_runs`) whose
    ``<sub>/manifest.json`` has ``key``; None when there is none."""
    for run in reversed(reusable_runs(runs_dir)):
        m = run / sub / "manifest.json"
        if m.is_file() and json.loads(m.read_text(encoding="utf-8")).get("key") == key:
            return m.parent
    return None


def freeze_tree(folder: Path) -> None:
    """Make every file of a stored artefact read-only: it is shared by hard links between runs,
    so writing one in place would change them all."""
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(f.stat().st_mode & ~0o222)


def link_tree(src: Path, dest: Path) -> None:
    """Reuse a stored artefact: hard-link every (read-only) file of ``src`` into ``dest``, or copy
    it where hard links are impossible (another filesystem), then freeze the copy too."""
    dest.mkdir(parents=True, exist_ok=True)
    freeze_tree(src)
    for f in src.iterdir():
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)
    freeze_tree(dest)


def find_completed(runs_dir: str | Path, command: str, cfg: Config, seed: int) -> Path | None:
    """The newest completed ``command`` run with exactly this configuration and unchanged inputs.

    "Unchanged" means every input file recorded in its manifest (data, model weights) still
    exists with the recorded sha256, so an edited bitext or a retrained model is never reused.
    Inside :func:`fresh_run` only runs of the reproduction itself count (:func:`reusable_runs`).
    """
    want = config_record(command, cfg, seed)
    for run in reversed(reusable_runs(runs_dir, command)):
        try:
            if read_json(run / "config.json") != want:
                continue
            recorded = read_json(run / "manifest.json").get("inputs", {})
        except ClirkitError:
            continue
        files = [(Path(f), digest) for group in recorded.values() for f, digest in group.items()]
        if all(f.is_file() and file_digest(f) == digest for f, digest in files):
            return run
    return None
