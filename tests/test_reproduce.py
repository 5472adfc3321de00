"""``clirkit reproduce``: from scratch (no stored run or index reused), inputs checked first,
results compared row by row, exit 0 / 1 / 2; and ``clirkit check-expected`` on pinned scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.config import IndexConfig
from clirkit.rundir import find_completed, find_stored, fresh_run, reuse_allowed
from tests.conftest import write_beir

runner = CliRunner()
MEASURES = "nDCG@10,RR@10"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def last_path(result) -> Path:
    return Path(result.stdout.strip().splitlines()[-1])


def runs(runs_dir: Path) -> set[str]:
    return {p.name for p in runs_dir.iterdir()}


@pytest.fixture
def eval_run(tiny_model, beir5, runs_dir) -> Path:
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5, "--measures", MEASURES)
    assert r.exit_code == 0, r.stderr
    return last_path(r)


def test_fresh_run_switch_turns_every_lookup_off(eval_run, runs_dir):
    manifest = json.loads((eval_run / "manifest.json").read_text())
    cfg_json = json.loads((eval_run / "config.json").read_text())
    key = manifest["index"]["key"]
    assert find_stored(runs_dir, "index", key) == eval_run / "index" and reuse_allowed()
    with fresh_run():
        assert not reuse_allowed() and find_stored(runs_dir, "index", key) is None
    assert reuse_allowed()
    icfg = IndexConfig(model=cfg_json["model"], dataset=cfg_json["dataset"], runs_dir=runs_dir)
    r = invoke("--runs-dir", runs_dir, "index", "--model", cfg_json["model"], "--dataset", cfg_json["dataset"])
    index_run = last_path(r)
    assert find_completed(runs_dir, "index", icfg, 0) == index_run
    with fresh_run():
        assert find_completed(runs_dir, "index", icfg, 0) is None


def test_reproduce_eval_agrees_and_builds_its_own_index(eval_run, runs_dir):
    r = invoke("reproduce", eval_run)
    assert r.exit_code == 0, r.stdout + r.stderr
    new = last_path(r)
    assert new.parent == eval_run.parent and new != eval_run
    verdict = pd.read_csv(new / "metrics" / "reproduce.csv")
    assert set(verdict.measure) == {"nDCG@10", "RR@10"} and (verdict.verdict == "OK").all()
    assert (verdict.difference == 0).all() and (verdict.dataset == "beir5").all()
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["reproduces"] == str(eval_run)
    assert manifest["index"]["reused_from"] is None  # the original's index was there, and not taken
    assert "OK" in r.stdout and "DIFF" not in r.stdout


def test_tampered_result_is_a_diff_exit_1(eval_run):
    agg = eval_run / "metrics" / "aggregate.csv"
    df = pd.read_csv(agg)
    df.loc[0, "RR@10"] = df.loc[0, "RR@10"] - 0.125
    df.to_csv(agg, index=False)
    r = invoke("reproduce", eval_run)
    assert r.exit_code == 1
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["RR@10", "verdict"] == "DIFF" and verdict.loc["nDCG@10", "verdict"] == "OK"
    assert verdict.loc["RR@10", "difference"] == pytest.approx(0.125)
    assert "DIFF" in r.stdout
    # the same difference is accepted with a tolerance above it
    assert invoke("reproduce", eval_run, "--atol", "0.2").exit_code == 0


def test_changed_input_is_named_and_nothing_runs(eval_run, beir5, runs_dir):
    with open(beir5 / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "d6", "title": "", "text": "A new document.", "lang": "en"}) + "\n")
    before = runs(runs_dir)
    r = invoke("reproduce", eval_run)
    assert r.exit_code == 1
    assert "input changed" in r.stderr and "corpus.jsonl" in r.stderr
    assert r.stdout == ""  # no path: `tail -1` of a script must not take the old run for a new one
    assert runs(runs_dir) == before  # nothing ran, no directory was made
    (beir5 / "queries.jsonl").unlink()
    r = invoke("reproduce", eval_run)
    assert r.exit_code == 1 and "input vanished" in r.stderr and "queries.jsonl" in r.stderr


def test_reproduce_a_relative_path_or_dot_writes_beside_the_run(eval_run, runs_dir, monkeypatch):
    monkeypatch.chdir(eval_run)
    inside = runs(eval_run)
    r = invoke("reproduce", ".")
    assert r.exit_code == 0, r.stdout + r.stderr
    new = last_path(r)
    assert new.parent == runs_dir and new.name != eval_run.name  # not inside the run, not in the cwd
    assert runs(eval_run) == inside
    assert json.loads((new / "manifest.json").read_text())["reproduces"] == str(eval_run)
    monkeypatch.chdir(runs_dir.parent)
    r = invoke("reproduce", Path(runs_dir.name) / eval_run.name)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert (runs_dir.parent / last_path(r)).resolve().parent == runs_dir


def test_the_verdict_is_written_before_the_reproduction_completes(eval_run, runs_dir, monkeypatch):
    """A kill (SIGTERM) while the verdict is computed leaves the reproduction failed, never a
    completed run without metrics/reproduce.csv."""
    import os
    import signal

    import clirkit.reproduce as rep

    seen = []

    def killed_while_comparing(recorded, reproduced, atol):
        tmp = [p for p in runs_dir.iterdir() if p.name.endswith(".tmp")]
        seen.append([json.loads((p / "status.json").read_text())["status"] for p in tmp])
        os.kill(os.getpid(), signal.SIGTERM)
        return compare(recorded, reproduced, atol)

    def interrupt(signum, frame):  # what start_run does in a run; here also outside one, for pytest's sake
        raise KeyboardInterrupt(f"signal {signum}")

    compare = rep.compare_results
    monkeypatch.setattr(rep, "compare_results", killed_while_comparing)
    before = runs(runs_dir)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            rep.reproduce(eval_run)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [["running"]]  # compared while the new run was still running, under its .tmp name
    (new,) = [runs_dir / n for n in runs(runs_dir) - before]
    status = json.loads((new / "status.json").read_text())
    assert status["status"] == "failed" and "signal" in status["error"]
    monkeypatch.setattr(rep, "compare_results", compare)
    result = rep.reproduce(eval_run)
    assert result.agree and (result.path / "metrics" / "reproduce.csv").is_file()
    assert json.loads((result.path / "status.json").read_text())["status"] == "completed"


def test_corrupted_stored_index_is_not_reused(eval_run):
    emb = eval_run / "index" / "embeddings.npy"
    good = np.load(emb).copy()
    corrupted = np.zeros_like(good)
    emb.unlink()  # a new file: the hard-linked copies elsewhere keep theirs
    np.save(emb, corrupted)
    r = invoke("reproduce", eval_run)
    assert r.exit_code == 0, r.stdout + r.stderr
    new = last_path(r)
    assert np.array_equal(np.load(new / "index" / "embeddings.npy"), good)  # re-encoded, not the zeros
    assert json.loads((new / "manifest.json").read_text())["index"]["reused_from"] is None


def test_reproduce_index_compares_embeddings_and_ids(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5)
    run = last_path(r)
    r = invoke("reproduce", run)
    assert r.exit_code == 0, r.stdout + r.stderr
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["doc_ids", "recorded"] == 5 and verdict.loc["doc_ids", "difference"] == 0
    assert verdict.loc["embeddings.npy max |diff|", "difference"] == 0
    emb = run / "index" / "embeddings.npy"
    x = np.load(emb).copy()
    x[2, 0] += 0.5
    emb.unlink()
    np.save(emb, x)
    r = invoke("reproduce", run)
    assert r.exit_code == 1
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["embeddings.npy max |diff|", "difference"] == pytest.approx(0.5, abs=1e-6)


@pytest.fixture
def grid_run(tmp_path, tiny_model, beir5, runs_dir) -> Path:
    """A completed one-system grid (one eval child)."""
    exp = tmp_path / "exp.toml"
    exp.write_text(f"""
name = "tiny"
seeds = [0]
baseline = "zero-shot"
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10", "RR@10"]
""", encoding="utf-8")
    r = invoke("--runs-dir", runs_dir, "run", exp)
    assert r.exit_code == 0, r.stderr
    return last_path(r)


def test_reproduce_index_compares_token_offsets_and_the_faiss_file(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5, "--scoring", "maxsim")
    run = last_path(r)
    r = invoke("reproduce", run)
    assert r.exit_code == 0, r.stdout + r.stderr
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["token_offsets.npy mismatches", "recorded"] == 6  # 5 documents
    assert verdict.loc[["token_offsets.npy mismatches", "index.faiss sha256", "tokens.npy max |diff|"],
                       "verdict"].eq("OK").all()

    def rewrite(name: str, change) -> None:
        path = run / "index" / name
        data = path.read_bytes() if name.endswith(".faiss") else np.load(path).copy()
        path.unlink()  # a new file: the read-only original may be hard-linked elsewhere
        if name.endswith(".faiss"):
            path.write_bytes(change(data))
        else:
            np.save(path, change(data))

    def moved(offsets):  # one token counted in the next document: same tokens, same embeddings
        offsets[2] += 1
        return offsets

    rewrite("token_offsets.npy", moved)
    r = invoke("reproduce", run)
    assert r.exit_code == 1
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["token_offsets.npy mismatches", "difference"] == 1
    assert verdict.loc["token_offsets.npy mismatches", "verdict"] == "DIFF"
    assert verdict.loc["embeddings.npy max |diff|", "verdict"] == "OK"
    rewrite("token_offsets.npy", lambda o: (o.__setitem__(2, o[2] - 1), o)[1])
    rewrite("index.faiss", lambda b: b[:-1] + bytes([b[-1] ^ 1]))  # one bit of the stored index
    r = invoke("reproduce", run)
    assert r.exit_code == 1
    verdict = pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").set_index("measure")
    assert verdict.loc["index.faiss sha256", "verdict"] == "DIFF"
    assert (verdict.drop(index="index.faiss sha256").verdict == "OK").all()
    r = invoke("reproduce", run, "--atol", "1e-6")  # with a tolerance the bytes may differ: not compared
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "index.faiss sha256" not in set(pd.read_csv(last_path(r) / "metrics" / "reproduce.csv").measure)


def test_reproduce_grid_runs_every_child_again(grid_run):
    grid = grid_run
    r = invoke("reproduce", grid)
    assert r.exit_code == 0, r.stdout + r.stderr
    new = last_path(r)
    old_children = json.loads((grid / "children.json").read_text())["eval"]
    new_children = json.loads((new / "children.json").read_text())["eval"]
    assert len(new_children) == 1 and new_children[0]["run"] != old_children[0]["run"]  # reuse = true ignored
    verdict = pd.read_csv(new / "metrics" / "reproduce.csv")
    assert set(verdict.measure) == {"nDCG@10", "RR@10", "nDCG@10_sd", "RR@10_sd"}
    assert (verdict.table == "aggregate").all() and (verdict.verdict == "OK").all()
    assert json.loads((new / "config.json").read_text()) == json.loads((grid / "config.json").read_text())


def test_reproduce_grid_finds_its_children_beside_it(grid_run, beir5, tmp_path):
    """The runs directory moved: children.json's paths are stale, but the steps are the grid's
    siblings, so their inputs are still checked; a step that is gone is named, exit 2."""
    moved = tmp_path / "moved-runs"
    shutil.move(grid_run.parent, moved)
    grid = moved / grid_run.name
    (child,) = [Path(c["run"]).name for c in json.loads((grid / "children.json").read_text())["eval"]]
    assert not (grid_run.parent / child).exists() and (moved / child).is_dir()
    with open(beir5 / "corpus.jsonl", "a", encoding="utf-8") as f:  # an input only the child records
        f.write(json.dumps({"_id": "d6", "title": "", "text": "A new document.", "lang": "en"}) + "\n")
    before = runs(moved)
    r = invoke("reproduce", grid)
    assert r.exit_code == 1 and "input changed" in r.stderr and "corpus.jsonl" in r.stderr
    assert runs(moved) == before
    shutil.rmtree(moved / child)
    r = invoke("reproduce", grid)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"step {child} of the grid {grid.name} is missing" in " ".join(r.stderr.split())
    assert runs(moved) == before - {child}


def test_bare_attack_records_its_resolved_target_and_reproduces(tiny_model, tmp_path, runs_dir):
    dataset = write_beir(tmp_path / "beir-long", queries=[("q1", "sleeping kitten resting on warm carpet"),
                                                          ("q2", "central banking interest decision markets"),
                                                          ("q3", "weather forecast mountains tomorrow")],
                         card={"name": "beir-long"})

    def fake_distill(name: str) -> Path:
        run = runs_dir / name
        shutil.copytree(tiny_model, run / "checkpoint")
        (run / "config.json").write_text(json.dumps({"command": "distill", "teacher": str(tiny_model),
                                                     "side": "query", "bitext": str(dataset), "seed": 0}))
        (run / "status.json").write_text(json.dumps({"status": "completed"}))
        return run

    chosen = fake_distill("20260101-000000-distill-aaaaaaaa")
    r = invoke("--runs-dir", runs_dir, "attack", "--rate", "0.5", "--seeds", "1", "--measures", MEASURES)
    assert r.exit_code == 0, r.stderr
    attack = last_path(r)
    config = json.loads((attack / "config.json").read_text())
    assert config["model"] == [str(chosen)] and config["dataset"] == str(dataset)
    fake_distill("20260102-000000-distill-bbbbbbbb")  # now the newest: a bare re-run would take it
    r = invoke("reproduce", attack)
    assert r.exit_code == 0, r.stdout + r.stderr
    new = last_path(r)
    assert json.loads((new / "manifest.json").read_text())["systems"][0]["name"] == chosen.name
    verdict = pd.read_csv(new / "metrics" / "reproduce.csv")
    assert (verdict.table == "robustness").all() and len(verdict) == 4 and (verdict.verdict == "OK").all()


@pytest.mark.parametrize("state", ["failed", "running", "no-run", "report"])
def test_unreproducible_folder_is_one_line_exit_2(eval_run, tmp_path, state):
    target = eval_run
    if state == "no-run":
        target = tmp_path / "empty"
        target.mkdir()
    elif state == "report":
        config = json.loads((eval_run / "config.json").read_text())
        (eval_run / "config.json").write_text(json.dumps({**config, "command": "report"}))
    else:
        (eval_run / "status.json").write_text(json.dumps({"status": state}))
    r = invoke("reproduce", target)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and str(target) in r.stderr
    assert {"failed": "failed", "running": "running", "no-run": "not an experiment directory",
            "report": "cannot reproduce a 'report' run"}[state] in r.stderr


# --------------------------------------------------------------------------- pinned expected results


def _set_state(run: Path, state: str) -> Path:
    """Leave ``run`` running, failed (as a crash or a Ctrl-C does) or still under its temporary name."""
    if state == "in-progress":
        tmp = run.parent / f".{run.name}.tmp"  # status completed, but not renamed yet
        run.rename(tmp)
        return tmp
    error = {"failed": "ValueError: boom", "interrupted": "KeyboardInterrupt: signal 15"}.get(state)
    status = "running" if state == "running" else "failed"
    (run / "status.json").write_text(json.dumps({"status": status, **({"error": error} if error else {})}))
    return run


@pytest.mark.parametrize("state", ["running", "failed", "interrupted", "in-progress"])
def test_commands_reading_a_finished_run_refuse_an_unfinished_one(eval_run, grid_run, tmp_path, state):
    """check-expected (check and --write), reproduce and report read a run's results: a run that is
    not completed is one line naming its state, exit 2, nothing written."""
    pinned = tmp_path / "pinned.json"
    assert invoke("check-expected", eval_run, pinned, "--write").exit_code == 0
    before = pinned.read_text()
    run, grid = _set_state(eval_run, state), _set_state(grid_run, state)
    want = f"the run is {'failed' if state == 'interrupted' else 'running' if state == 'in-progress' else state}"
    existing = runs(run.parent)
    for args in [("check-expected", run, pinned), ("check-expected", run, tmp_path / "new.json", "--write"),
                 ("check-expected", run, pinned, "--write"), ("reproduce", run),
                 ("--runs-dir", run.parent, "report", grid)]:
        r = invoke(*args)
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert want in r.stderr and r.stdout == "", (args, r.stderr)
    assert pinned.read_text() == before and not (tmp_path / "new.json").exists()
    assert runs(run.parent) == existing  # no report, no reproduction started




def test_check_expected_write_then_check(eval_run, tmp_path):
    pinned = tmp_path / "expected" / "tiny.json"
    r = invoke("check-expected", eval_run, pinned, "--write")
    assert r.exit_code == 0, r.stderr
    data = json.loads(pinned.read_text())
    assert data["format"] == 1 and data["command"] == "eval" and "runs_dir" not in data["config"]
    agg = pd.read_csv(eval_run / "metrics" / "aggregate.csv").iloc[0]
    (row,) = data["results"]
    assert row["dataset"] == "beir5" and row["scores"] == {"nDCG@10": agg["nDCG@10"], "RR@10": agg["RR@10"]}
    r = invoke("check-expected", eval_run, pinned)
    assert r.exit_code == 0 and "2 of 2 pinned results agree" in r.stderr
    assert last_path(r) == eval_run
    row["scores"]["RR@10"] += 0.01
    row["scores"]["R@1000"] = 1.0  # pinned but not in the run: a DIFF, not a pass
    pinned.write_text(json.dumps(data))
    r = invoke("check-expected", eval_run, pinned)
    assert r.exit_code == 1 and "2 differ" in r.stderr and "DIFF" in r.stdout
    assert invoke("check-expected", eval_run, pinned, "--atol", "0.02").exit_code == 1  # R@1000 still missing


def test_check_expected_bad_file_is_one_line_exit_2(eval_run, tmp_path):
    r = invoke("check-expected", eval_run, tmp_path / "none.json")
    assert r.exit_code == 2 and "--write" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": []}))
    r = invoke("check-expected", eval_run, bad)
    assert r.exit_code == 2 and "not a pinned-scores file" in r.stderr


def test_a_reproduction_shares_what_it_computes_itself(tiny_model, beir5, runs_dir):
    """Inside fresh_run an index built by the reproduction is reused by its later steps (as the original
    grid shared it), while one stored before the reproduction is not."""
    import time

    before = last_path(invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5))
    key = json.loads((before / "manifest.json").read_text())["index"]["key"]
    with fresh_run():
        time.sleep(1.1)  # run ids have a one-second resolution
        assert find_stored(runs_dir, "index", key) is None
        inside = last_path(invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5))
        assert json.loads((inside / "manifest.json").read_text())["index"]["reused_from"] is None
        assert find_stored(runs_dir, "index", key) == inside / "index"
    assert find_stored(runs_dir, "index", key) == inside / "index"
