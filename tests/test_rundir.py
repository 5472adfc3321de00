import json
import os

import pytest

from clirkit.config import IndexConfig
from clirkit.errors import ClirkitError
from clirkit.rundir import completed_runs, find_completed, start_run


def _cfg(tmp_path):
    return IndexConfig(dataset=tmp_path / "ds", runs_dir=tmp_path / "runs")


def test_completed_run_has_the_contract(tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "input.txt").write_text("abc", encoding="utf-8")
    with start_run(cfg.runs_dir, "index", cfg, seed=0, argv=["clirkit", "index"]) as run:
        assert run.path.name.startswith(".") and run.path.name.endswith(".tmp")
        run.add_inputs(data=tmp_path / "input.txt")
        (run.sub("metrics") / "x.csv").write_text("a\n1\n", encoding="utf-8")
    final = run.path
    assert not final.name.startswith(".") and final.parent == cfg.runs_dir
    config = json.loads((final / "config.json").read_text())
    assert config["seed"] == 0 and config["factory"] == "Flat" and config["batch_size"] == 64
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["argv"] == ["clirkit", "index"]
    assert manifest["inputs"]["data"][str(tmp_path / "input.txt")] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  # sha256("abc")
    assert manifest["started"] and manifest["ended"]
    assert {"commit", "dirty"} <= set(manifest["git"])
    assert manifest["packages"]["torch"]
    assert json.loads((final / "status.json").read_text())["status"] == "completed"
    assert "run " in (final / "log.txt").read_text()
    assert completed_runs(cfg.runs_dir) == [final]


def test_failed_run_keeps_directory_with_error(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ClirkitError):
        with start_run(cfg.runs_dir, "index", cfg, seed=3) as run:
            raise ClirkitError("bad thing", fix="do better")
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "failed" and "bad thing -- do better" in status["error"]
    assert completed_runs(cfg.runs_dir) == []


def test_runs_never_overwrite_each_other(tmp_path):
    cfg = _cfg(tmp_path)
    paths = []
    for _ in range(3):
        with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
            pass
        paths.append(run.path)
    assert len(set(paths)) == 3
    assert len(completed_runs(cfg.runs_dir, "index")) == 3


def test_find_completed_needs_same_config_seed_and_inputs(tmp_path):
    cfg = _cfg(tmp_path)
    data = tmp_path / "input.txt"
    data.write_text("abc", encoding="utf-8")
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        run.add_inputs(data=data)
    with pytest.raises(ClirkitError):  # a failed run with the same configuration is never taken
        with start_run(cfg.runs_dir, "index", cfg, seed=0) as failed:
            failed.add_inputs(data=data)
            raise ClirkitError("boom")
    assert find_completed(cfg.runs_dir, "index", cfg, seed=0) == run.path
    reseeded = cfg.model_copy(update={"seed": 1})
    assert find_completed(cfg.runs_dir, "index", reseeded, seed=1) is None
    assert find_completed(cfg.runs_dir, "index", cfg.model_copy(update={"batch_size": 8}), seed=0) is None
    assert find_completed(cfg.runs_dir, "eval", cfg, seed=0) is None
    data.write_text("abd", encoding="utf-8")  # an input changed since: not reusable
    assert find_completed(cfg.runs_dir, "index", cfg, seed=0) is None


def test_sigterm_ends_nested_runs_failed_and_renamed(tmp_path):
    import os
    import signal

    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with start_run(cfg.runs_dir, "run", cfg, seed=0):
            with start_run(cfg.runs_dir, "eval", cfg, seed=0):
                os.kill(os.getpid(), signal.SIGTERM)
    runs = sorted(cfg.runs_dir.iterdir())
    assert len(runs) == 2 and not any(p.name.startswith(".") for p in runs)
    for p in runs:
        status = json.loads((p / "status.json").read_text())
        assert status["status"] == "failed" and "signal 15" in status["error"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


def test_manifest_records_the_device_used_and_validates_it_first(tmp_path):
    cfg = _cfg(tmp_path).model_copy(update={"precision": "bf16"})
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        pass
    device = json.loads((run.path / "manifest.json").read_text())["device"]
    assert device["type"] == "cpu" and device["precision"] == "bf16" and device["name"]
    gpu = _cfg(tmp_path / "gpu").model_copy(update={"device": "cuda:0"})
    with pytest.raises(ClirkitError, match="device 'cuda:0' is not available: torch sees no CUDA device"):
        with start_run(gpu.runs_dir, "index", gpu, seed=0):
            raise AssertionError("the body must not run")
    assert not gpu.runs_dir.exists()  # nothing written
    with start_run(gpu.runs_dir, "report", gpu, seed=0, uses_device=False) as report:  # computes nothing
        report.record_device("cpu", "fp32")
    assert json.loads((report.path / "manifest.json").read_text())["device"]["precision"] == "fp32"


def test_hash_inputs_trusts_the_dataset_card(tmp_path, monkeypatch):
    import clirkit.data.formats as formats
    from clirkit.data.formats import DatasetWriter, read_card
    from clirkit.rundir import hash_inputs

    out = tmp_path / "ds"
    with DatasetWriter(out, "ds") as w:
        w.add_doc("d1", "one document", "en")
        w.add_query("q1", "a query", "en")
    card = read_card(out)
    reads = []
    real = formats.sha256_file
    monkeypatch.setattr(formats, "sha256_file", lambda p, *a: reads.append(p.name) or real(p, *a))
    monkeypatch.setattr(formats, "_DIGESTS", {})
    got = hash_inputs({"dataset": out})["dataset"]
    assert got[str(out / "corpus.jsonl")] == card["sha256"]["corpus.jsonl"]
    assert reads == ["dataset.json"]  # the card itself is not in the card: the only file read


def test_devices_naming_a_missing_gpu_writes_nothing(tmp_path):
    cfg = IndexConfig(dataset=tmp_path / "ds", runs_dir=tmp_path / "runs", device="cpu", devices=["cpu", "cuda:7"])
    with pytest.raises(ClirkitError, match="cuda:7"):
        with start_run(cfg.runs_dir, "index", cfg, seed=0):
            pass
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_devices_option_exits_2_with_one_line(tmp_path, beir5):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "clirkit", "index", "--dataset", str(beir5), "--runs-dir",
                           str(tmp_path / "runs"), "--device", "cpu", "--devices", "cpu,cuda:1", "--model",
                           "minilm"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "cuda:1" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_link_tree_shares_stored_files_read_only(tmp_path):
    """A reused index is hard-linked, never writable in place: writing one run's copy would change the other's."""
    import os

    from clirkit.rundir import link_tree

    src = tmp_path / "a" / "index"
    src.mkdir(parents=True)
    (src / "embeddings.npy").write_bytes(b"\x00" * 16)
    (src / "manifest.json").write_text("{}")
    dest = tmp_path / "b" / "index"
    link_tree(src, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["embeddings.npy", "manifest.json"]
    for name in ("embeddings.npy", "manifest.json"):
        assert os.stat(dest / name).st_ino == os.stat(src / name).st_ino  # linked, not copied
        assert (dest / name).stat().st_mode & 0o222 == 0 and (src / name).stat().st_mode & 0o222 == 0


def test_before_completed_hook_runs_in_the_outermost_run_before_it_completes(tmp_path):
    from clirkit.rundir import before_completed

    cfg = _cfg(tmp_path)
    calls = []

    def hook(run):
        status = json.loads((run.path / "status.json").read_text())["status"]
        calls.append((run.command, run.path.name.endswith(".tmp"), status))
        (run.sub("metrics") / "verdict.csv").write_text("ok\n", encoding="utf-8")

    with before_completed(hook):
        with start_run(cfg.runs_dir, "run", cfg, seed=0) as grid:
            with start_run(cfg.runs_dir, "eval", cfg, seed=0):  # a step of the grid: not its hook
                pass
            assert calls == []
    assert calls == [("run", True, "running")]
    assert (grid.path / "metrics" / "verdict.csv").is_file() and not grid.path.name.endswith(".tmp")
    with start_run(cfg.runs_dir, "index", cfg, seed=0):  # outside the block: no hook
        pass
    assert len(calls) == 1

    def failing(run):
        raise ValueError("verdict failed")

    with pytest.raises(ValueError), before_completed(failing):
        with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
            pass
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "failed" and "verdict failed" in status["error"]


@pytest.fixture
def utc_plus_14(monkeypatch):
    """This process's local time zone is UTC+14 (Kiribati): local and UTC dates differ."""
    import time

    monkeypatch.setenv("TZ", "Etc/GMT-14")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_run_ids_and_manifest_times_are_utc(tmp_path, utc_plus_14):
    from datetime import UTC, datetime

    from clirkit.rundir import NO_REUSE_ENV, fresh_run, reusable_runs

    cfg = _cfg(tmp_path)
    assert datetime.now().hour != datetime.now(UTC).hour  # the fixture took effect
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        pass
    manifest = json.loads((run.path / "manifest.json").read_text())
    started, ended = (datetime.fromisoformat(manifest[k]) for k in ("started", "ended"))
    assert started.utcoffset().total_seconds() == 0 and ended.utcoffset().total_seconds() == 0
    assert run.path.name.startswith(started.strftime("%Y%m%d-%H%M%S") + "-index-")
    assert manifest["id"] == run.path.name
    import time

    with fresh_run():
        assert os.environ[NO_REUSE_ENV] >= run.path.name[:15]  # the same clock as the ids
        time.sleep(1.1)
        with start_run(cfg.runs_dir, "index", cfg, seed=0) as inside:
            pass
        assert reusable_runs(cfg.runs_dir) == [inside.path]  # the reproduction's own run, not the older one


@pytest.fixture
def same_id(monkeypatch):
    """Every run id is the same (as for runs started in the same second with the same hash)."""
    import clirkit.rundir as rundir

    monkeypatch.setattr(rundir, "run_stamp", lambda when=None: "20260101-000000")
    monkeypatch.setattr(rundir, "run_digest", lambda cfg: "deadbeef")
    return "20260101-000000-index-deadbeef"


def test_runs_with_the_same_id_at_once_get_distinct_names(tmp_path, same_id):
    import threading

    cfg = _cfg(tmp_path)
    cfg.runs_dir.mkdir()
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as first:  # a finished run holds the id
        pass
    assert first.path.name == same_id
    n = 6
    barrier = threading.Barrier(n)
    paths, errors = [None] * n, []

    def one(i: int) -> None:
        try:
            with start_run(cfg.runs_dir, "index", cfg, seed=i) as run:
                barrier.wait(timeout=60)  # all started before any finishes, then all finish at once
                (run.path / "mine.txt").write_text(str(i), encoding="utf-8")
            paths[i] = run.path
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = sorted(p.name for p in paths)
    assert len(set(names)) == n and same_id not in names
    assert set(names) <= {f"{same_id}-{k}" for k in range(1, 2 * n + 1)}
    for i, p in enumerate(paths):  # each folder holds its own run, and says its name
        assert (p / "mine.txt").read_text() == str(i)
        manifest = json.loads((p / "manifest.json").read_text())
        assert manifest["seed"] == i and manifest["id"] == p.name
    assert sorted(q.name for q in cfg.runs_dir.iterdir()) == sorted([same_id, *names])  # no .tmp left


def test_a_run_finishing_onto_a_taken_name_takes_the_next_counter(tmp_path, same_id):
    cfg = _cfg(tmp_path)
    with start_run(cfg.runs_dir, "index", cfg, seed=0) as run:
        (cfg.runs_dir / same_id).mkdir()  # another process took the name meanwhile (it is empty yet)
    assert run.path.name == f"{same_id}-1"
    assert json.loads((run.path / "manifest.json").read_text())["id"] == run.path.name
    assert list((cfg.runs_dir / same_id).iterdir()) == []  # the other's folder is untouched


def test_close_abandoned_ends_only_a_dead_local_processes_run(tmp_path):
    """A ``.tmp`` run whose process is gone is ended failed and renamed into place; one whose
    process lives, or that another machine runs, is left alone."""
    import platform
    import subprocess

    from clirkit.rundir import close_abandoned
    from clirkit.runs import status_of

    dead = subprocess.Popen(["true"])
    dead.wait()

    def tmp_run(name, pid, host=platform.node()):
        path = tmp_path / f".{name}.tmp"
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"id": name, "ended": None}))
        (path / "status.json").write_text(json.dumps({"status": "running", "pid": pid, "host": host}))
        return path

    alive = tmp_run("20261207-120000-distill-aaaa", os.getpid())
    elsewhere = tmp_run("20261207-120000-distill-bbbb", dead.pid, host="another-node")
    gone = tmp_run("20261207-120000-distill-cccc", dead.pid)
    # clirkit runs list tells them apart
    assert [status_of(p) for p in (alive, elsewhere, gone)] == ["running", "running", "abandoned"]
    assert close_abandoned(alive, "x") is None and close_abandoned(elsewhere, "x") is None
    assert alive.is_dir() and elsewhere.is_dir()
    final = close_abandoned(gone, "its worker process died (killed by SIGKILL (signal 9))")
    assert final == tmp_path / "20261207-120000-distill-cccc" and not gone.exists()
    assert json.loads((final / "status.json").read_text())["status"] == "failed"
    assert "SIGKILL" in json.loads((final / "status.json").read_text())["error"]
    assert json.loads((final / "manifest.json").read_text())["ended"] is not None
    assert close_abandoned(gone, "x") is None  # closed already (by another grid): nothing to do
