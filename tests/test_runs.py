"""``clirkit runs list|show|diff``: readable at 80 columns and in a pipe, ``--json`` for scripts,
one-line errors with exit code 2; and :func:`clirkit.runs.run_results` on each command's tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.runs import diff_runs, run_results

runner = CliRunner()
MEASURES = "nDCG@10,RR@10"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def two_evals(tiny_model, beir5, runs_dir, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv("COLUMNS", "80")
    out = []
    for scoring in ("dense", "maxsim"):
        r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5, "--measures", MEASURES,
                   "--scoring", scoring)
        assert r.exit_code == 0, r.stderr
        out.append(Path(r.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def _failed_run(runs_dir: Path, like: Path) -> Path:
    failed = runs_dir / "20200101-000000-eval-00000000"
    failed.mkdir()
    for name in ("config.json", "manifest.json"):
        (failed / name).write_text((like / name).read_text())
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "boom: out of memory"}))
    return failed


def test_runs_list_json_names_every_run_and_its_headline(two_evals, runs_dir):
    dense, maxsim = two_evals
    failed = _failed_run(runs_dir, dense)
    (runs_dir / "not-a-run").mkdir()
    r = invoke("--runs-dir", runs_dir, "runs", "list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    ids = [x["id"] for x in rows]  # oldest first (ids start with the time, to the second), non-runs skipped
    assert ids[0] == failed.name and set(ids[1:]) == {dense.name, maxsim.name} and len(ids) == 3
    by_id = {x["id"]: x for x in rows}
    agg = pd.read_csv(dense / "metrics" / "aggregate.csv").iloc[0]
    assert by_id[dense.name]["headline"] == f"nDCG@10 {agg['nDCG@10']:.4f}"
    assert by_id[dense.name]["command"] == "eval" and by_id[dense.name]["status"] == "completed"
    assert by_id[dense.name]["seconds"] >= 0
    assert by_id[failed.name]["status"] == "failed" and by_id[failed.name]["headline"] == "boom: out of memory"
    # the option of the sub-command and the global option name the same folder
    assert json.loads(invoke("runs", "list", "--runs-dir", runs_dir, "--json").stdout) == rows


def test_runs_list_in_a_pipe_at_80_columns(two_evals, runs_dir):
    dense, maxsim = two_evals
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.run([sys.executable, "-m", "clirkit", "--runs-dir", str(runs_dir), "runs", "list"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for run in (dense, maxsim):  # every id whole on one line, with its status
        assert any(run.name in line and "completed" in line for line in lines)
    assert not any(len(line.strip()) == 1 for line in lines)


def test_runs_show_prints_config_manifest_and_metrics(two_evals):
    dense, _ = two_evals
    r = invoke("runs", "show", dense)
    assert r.exit_code == 0, r.stderr
    text = r.stdout
    assert dense.name in text and "metrics/aggregate.csv" in text and "per_query" not in text
    assert "nDCG@10" in text and "scoring" in text and "dense" in text
    assert "inputs" in text and "dataset" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_runs_diff_shows_only_what_differs(two_evals, beir5):
    dense, maxsim = two_evals
    rows = {k: (a, b) for k, a, b in diff_runs(dense, maxsim)}
    assert rows["config.scoring"] == ("dense", "maxsim")
    assert "config.model" not in rows and not any(k.startswith("input") for k in rows)
    everything = {k for k, _, _ in diff_runs(dense, maxsim, everything=True)}
    assert "config.model" in everything and "input dataset/corpus.jsonl" in everything
    manifest = json.loads((maxsim / "manifest.json").read_text())
    corpus = next(f for f in manifest["inputs"]["dataset"] if f.endswith("corpus.jsonl"))
    manifest["inputs"]["dataset"][corpus] = "0" * 64  # as if the corpus had changed in between
    (maxsim / "manifest.json").write_text(json.dumps(manifest))
    rows = {k: (a, b) for k, a, b in diff_runs(dense, maxsim)}
    assert rows["input dataset/corpus.jsonl"][1] == "0" * 12
    r = invoke("runs", "diff", dense, maxsim)
    assert r.exit_code == 0 and "config.scoring" in r.stdout and "maxsim" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())


@pytest.mark.parametrize("args", [("diff", "RUN"), ("diff", "RUN", "RUN", "RUN"), ("show", "NOTRUN"),
                                  ("diff", "RUN", "NOTRUN")])
def test_runs_bad_input_is_one_line_exit_2(two_evals, tmp_path, args):
    dense, _ = two_evals
    paths = {"RUN": str(dense), "NOTRUN": str(tmp_path)}
    r = invoke("runs", *[paths.get(a, a) for a in args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_run_results_of_a_distillation_keep_final_and_best(tmp_path):
    run = tmp_path / "20260101-000000-distill-aaaaaaaa"
    (run / "metrics").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"command": "distill", "student": "static", "pair": "en-tl"}))
    (run / "manifest.json").write_text(json.dumps({"bitext": "data/bible-en-tl"}))
    pd.DataFrame({"step": [10, 20, 30, 40], "epoch": [0, 0, 1, 1], "loss": [0.9, 0.7, 0.6, 0.5],
                  "dev_RR@10": [None, 0.4, None, 0.3], "dev_R@1": [None, 0.2, None, 0.25]}
                 ).to_csv(run / "metrics" / "training.csv", index=False)
    res = run_results(run).set_index(["condition", "measure"])["value"]
    assert res[("final", "loss")] == 0.5 and res[("final", "dev_RR@10")] == 0.3 and res[("final", "dev_R@1")] == 0.25
    assert res[("best", "dev_RR@10")] == 0.4 and res[("best", "step")] == 20
    assert set(run_results(run).dataset) == {"bible-en-tl"}


def test_run_results_of_an_xglue_attack_are_robustness_rows_per_language(tiny_model, runs_dir):
    """``attack --benchmark xglue`` writes metrics/xglue_<task>_robustness.csv: its clean and
    attacked scores are results like any attack's (so reproduce and check-expected compare them)."""
    fixtures = Path(__file__).parent / "fixtures" / "xglue"
    r = invoke("--runs-dir", runs_dir, "attack", "--benchmark", "xglue", "--task", "qam", "--model", tiny_model,
               "--data-dir", fixtures, "--lang", "de,fr", "--rate", "0.5", "--seeds", "1")
    assert r.exit_code == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    table = pd.read_csv(run / "metrics" / "xglue_qam_robustness.csv").set_index("lang")
    res = run_results(run)
    assert set(res.table) == {"robustness"} and set(res.dataset) == {"xglue_qam"}
    assert set(res.measure) == {"accuracy"} and set(res.system) == {Path(tiny_model).name}
    values = res.set_index("condition")["value"]
    assert len(values) == 4  # 2 languages x clean / attacked
    for lang in ("de", "fr"):
        assert values[f"{lang} char-swap@0.5 clean"] == table.loc[lang, "clean"]
        assert values[f"{lang} char-swap@0.5 attacked"] == table.loc[lang, "attacked"]
    assert invoke("runs", "list", "--runs-dir", runs_dir, "--json").exit_code == 0
    r = invoke("reproduce", run)
    assert r.exit_code == 0, r.stdout + r.stderr
    verdict = pd.read_csv(Path(r.stdout.strip().splitlines()[-1]) / "metrics" / "reproduce.csv")
    assert len(verdict) == 4 and (verdict.verdict == "OK").all()


def test_a_bare_xglue_attack_records_its_model_and_reproduces(runs_dir):
    """``attack --benchmark xglue`` without --model attacks the embedded MiniLM; config.json names
    it, so ``reproduce`` re-runs the same attack."""
    fixtures = Path(__file__).parent / "fixtures" / "xglue"
    r = invoke("--runs-dir", runs_dir, "attack", "--benchmark", "xglue", "--task", "qam", "--data-dir", fixtures,
               "--lang", "de", "--rate", "0.5", "--seeds", "1")
    assert r.exit_code == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads((run / "config.json").read_text())["model"] == ["minilm"]
    r = invoke("reproduce", run)
    assert r.exit_code == 0, r.stdout + r.stderr
    verdict = pd.read_csv(Path(r.stdout.strip().splitlines()[-1]) / "metrics" / "reproduce.csv")
    assert len(verdict) == 2 and (verdict.verdict == "OK").all()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": None}))  # as recorded before it named one
    r = invoke("reproduce", run)
    assert r.exit_code == 0, r.stdout + r.stderr
