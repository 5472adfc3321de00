"""SIGTERM and SIGINT (Ctrl-C) stop a run cleanly: the run directory is renamed into place with
status ``failed`` and the error, a distillation keeps its resumable ``last/`` state and resumes
from it, a failed eval shows no metrics, and the cache holds no temporary file.

The command runs in a real subprocess (``python -m clirkit`` semantics, through :func:`clirkit.cli.main`)
so that the signal is delivered by the OS. On these tiny fixtures a run ends in a second, so
the child is slowed down where the signal should land (a sleep before each optimizer step, or
before the eval's retrieval): the signal then always arrives in the middle of the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from tests.test_distill import write_bitext

ROOT = Path(__file__).resolve().parent.parent
# The child: the CLI, with a delay in the step (distill) or before the retrieval (eval) so that a
# signal sent once the work started lands mid-run. The delay does not change what is computed.
SLOW_CLI = """
import sys, time
import clirkit.distill.trainer as trainer
import clirkit.evaluate as evaluate

def slowed(fn, seconds):
    def wrapper(*args, **kwargs):
        print("working", flush=True)
        time.sleep(seconds)
        return fn(*args, **kwargs)
    return wrapper

trainer.Trainer.optimizer_step = slowed(trainer.Trainer.optimizer_step, 0.5)
evaluate.evaluate = slowed(evaluate.evaluate, 120)
from clirkit.cli import main
sys.argv[0] = "clirkit"
main()
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CLIRKIT_CACHE", str(root))
    return root


def start(tmp_path: Path, cache: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIRKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI, encoding="utf-8")
    # files, not pipes: a child blocked on a full pipe would never reach the work
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        # SIGINT back to its default in the child: a suite started in the background (`make test &`)
        # inherits SIGINT ignored, and Python would then install no KeyboardInterrupt handler
        return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, cwd=tmp_path,
                                stdout=out, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def output(proc: subprocess.Popen, name: str) -> str:
    return (Path(proc.args[1]).parent / name).read_text(encoding="utf-8", errors="replace")


def wait_for(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """Poll until ``ready()`` (the work has started); fail if the child ended first."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the child ended (exit {proc.returncode}) before the signal:\n"
                        f"{output(proc, 'stderr.txt')[-3000:]}")
        assert time.monotonic() < end, "the child did not start working in time"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode != 0, output(proc, "stderr.txt")[-3000:]


def the_run(runs: Path) -> Path:
    """The one run directory, renamed into place: no ``.<id>.tmp`` left."""
    entries = list(runs.iterdir())
    assert not [p for p in entries if p.name.startswith(".")], entries
    (run,) = entries
    return run


def no_temporary_files(cache: Path) -> None:
    left = [p for p in cache.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert not left, left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_distill_stopped_by_a_signal_keeps_its_state_and_resumes(sig, tmp_path, tiny_model, cache):
    bitext = write_bitext(tmp_path / "bitext-en-xx")
    runs = tmp_path / "runs"
    args = ["--bitext", bitext, "--teacher", tiny_model, "--vocab-size", 300, "--batch-size", 32,
            "--loss", "ot+mse", "--epochs", 2, "--save-every", 2]
    proc = start(tmp_path, cache, "--runs-dir", runs, "distill", *args)
    # training has started and saved its state once (step 2 of 14)
    wait_for(proc, lambda: any((p / "last" / "state.pt").is_file() for p in runs.glob(".*.tmp")))
    stop(proc, sig)

    run = the_run(runs)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] in ("failed", "interrupted") and status["error"].startswith("KeyboardInterrupt")
    assert "failed: KeyboardInterrupt" in (run / "log.txt").read_text()
    import torch

    saved = torch.load(run / "last" / "state.pt", weights_only=True)
    assert 2 <= saved["step"] < 14
    assert not (run / "plots" / "training.png").exists()  # written only when training completes
    no_temporary_files(cache)

    r = CliRunner().invoke(app, ["--runs-dir", str(tmp_path / "resumed"), "distill", "--resume", str(run)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    resumed = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads((resumed / "status.json").read_text())["status"] == "completed"
    assert json.loads((resumed / "manifest.json").read_text())["resumed_from"] == str(run)
    rows = pd.read_csv(resumed / "metrics" / "training.csv")
    assert rows["step"].max() == 14 and rows["step"].is_unique  # continued from the state, no step twice
    killed_rows = pd.read_csv(run / "metrics" / "training.csv")  # the rows saved with the state
    cols = [c for c in killed_rows.columns if c != "pairs_per_s"]
    np.testing.assert_array_equal(rows[rows["step"] <= saved["step"]][cols].to_numpy(), killed_rows[cols].to_numpy())
    no_temporary_files(cache)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_eval_stopped_by_a_signal_shows_no_metrics(sig, tmp_path, tiny_model, beir5, cache):
    runs = tmp_path / "runs"
    proc = start(tmp_path, cache, "--runs-dir", runs, "eval", "--model", tiny_model, "--dataset", beir5)
    wait_for(proc, lambda: "working" in output(proc, "stdout.txt"))  # inside the run, in the retrieval
    assert list(runs.glob(".*.tmp"))
    stop(proc, sig)

    run = the_run(runs)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] in ("failed", "interrupted") and status["error"].startswith("KeyboardInterrupt")
    assert not (run / "metrics" / "aggregate.csv").exists() and not (run / "run.trec").exists()
    if cache.exists():
        no_temporary_files(cache)


def test_teacher_cache_interrupted_leaves_no_partial_entry(tmp_path, tiny_model, monkeypatch):
    """A kill while the teacher's outputs are computed removes the temporary folder; the next
    call computes the entry from scratch."""
    from clirkit.distill.cache import teacher_outputs
    from clirkit.models import load_encoder

    teacher = load_encoder(str(tiny_model), "cpu")
    texts = [f"the cat number {i} sat on the mat" for i in range(40)]
    real = teacher.model.forward
    calls = []

    def forward_then_interrupted(features, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first batch is already written into the temporary folder
            raise KeyboardInterrupt("signal 15")
        return real(features, *args, **kwargs)

    monkeypatch.setattr(teacher.model, "forward", forward_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        teacher_outputs(teacher, texts, 16, 8, tmp_path)
    assert list((tmp_path / "teacher").iterdir()) == []
    monkeypatch.setattr(teacher.model, "forward", real)
    folder, cached = teacher_outputs(teacher, texts, 16, 8, tmp_path)
    assert not cached and [p.name for p in (tmp_path / "teacher").iterdir()] == [folder.name]
