"""A regression test against pinned scores (``clirkit check-expected``): a static student
distilled with MSE from the real MiniLM teacher on 300 pairs of the en-tl Bible, one epoch.

Tagalog is the document side, so the 7,957 verses are encoded by the static student (a table
lookup) and only 100 English queries and 400 bitext sentences by the teacher: under 90 s on one
core. Re-pin after an intended change with ``clirkit check-expected RUN tests/expected/... --write``
on the eval run this test makes (the steps are below)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clirkit.cli import app

runner = CliRunner()
PINNED = Path(__file__).parent / "expected" / "bible-static-mse.json"


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.stdout + r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bible_static_mse_matches_pinned_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIRKIT_CACHE", str(tmp_path / "cache"))  # the teacher outputs are computed here
    runs = tmp_path / "runs"
    data = invoke("prepare", "bible", "--pair", "en-tl", "--side", "document", "--n-queries", "100",
                  "--dev-size", "100", "--out", tmp_path / "bible-en-tl-doc")
    student = invoke("--runs-dir", runs, "distill", "--bitext", data, "--side", "document", "--student", "static",
                     "--loss", "mse", "--max-pairs", "300", "--epochs", "1", "--dev-pairs", "100")
    run = invoke("--runs-dir", runs, "eval", "--model", student, "--dataset", data, "--measures", "nDCG@10 RR@10")
    r = runner.invoke(app, ["check-expected", str(run), str(PINNED)], catch_exceptions=False)
    assert r.exit_code == 0, r.stdout + r.stderr  # every pinned score agrees
    assert "nDCG@10" in r.stdout and "RR@10" in r.stdout and "2 pinned results" in r.stderr
