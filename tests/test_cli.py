"""The CLI contract: one experiment directory per computing command, its path as stdout's last
line, user errors as one line with exit code 2, and aggregate tables that ir_measures
reproduces independently from run.trec and the qrels."""

import json

import ir_measures
import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.startswith("clirkit ")


def test_eval_end_to_end_matches_ir_measures(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5,
               "--measures", "nDCG@10,RR@10,R@100,AP")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    assert run.is_dir()
    for f in ("config.json", "manifest.json", "status.json", "log.txt", "run.trec", "metrics/per_query.csv",
              "metrics/aggregate.csv", "metrics/aggregate.md", "index/index.faiss", "index/embeddings.npy"):
        assert (run / f).is_file(), f
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    agg = pd.read_csv(run / "metrics" / "aggregate.csv").iloc[0]
    qrels = list(ir_measures.read_trec_qrels(_trec_qrels(beir5)))
    trec_run = list(ir_measures.read_trec_run(str(run / "run.trec")))
    measures = [ir_measures.parse_measure(m) for m in ("nDCG@10", "RR@10", "R@100", "AP")]
    expected = ir_measures.calc_aggregate(measures, qrels, trec_run)
    for m in measures:
        assert agg[str(m)] == pytest.approx(expected[m], abs=1e-6)
    manifest = json.loads((run / "manifest.json").read_text())
    assert any(k.endswith("corpus.jsonl") for k in manifest["inputs"]["dataset"])
    assert any(k.endswith("model.safetensors") for k in manifest["inputs"]["doc_model"])


def _trec_qrels(beir):
    lines = (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    path = beir / "qrels.trec"
    path.write_text("".join(f"{q} 0 {d} {s}\n" for q, d, s in (line.split("\t") for line in lines)))
    return str(path)


def test_index_is_reused_by_fingerprint(tiny_model, beir5, runs_dir):
    first = invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5)
    assert first.exit_code == 0, first.stderr
    second = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5)
    assert second.exit_code == 0, second.stderr
    run1 = runs_dir / first.stdout.strip().split("/")[-1]
    run2 = runs_dir / second.stdout.strip().splitlines()[-1].split("/")[-1]
    m2 = json.loads((run2 / "manifest.json").read_text())
    assert m2["index"]["reused_from"] == str(run1)
    assert (run2 / "index" / "embeddings.npy").read_bytes() == (run1 / "index" / "embeddings.npy").read_bytes()


def test_maxsim_scoring_runs(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5, "--scoring", "maxsim")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    assert (run / "index" / "tokens.npy").is_file()
    assert len((run / "run.trec").read_text().splitlines()) == 3 * 5


@pytest.mark.parametrize("args, message", [
    (["--measures", "nDCG@x"], "unknown measure 'nDCG@x'"),
    (["--model", "/nonexistent/model"], "model not found"),
    (["--model", "someone/not-cached-model"], "not in the local Hugging Face cache"),
])
def test_user_errors_are_one_line_exit_2(tiny_model, beir5, runs_dir, args, message):
    base = ["--runs-dir", runs_dir, "eval", "--dataset", beir5]
    if "--model" not in args:
        base += ["--model", tiny_model]
    r = invoke(*base, *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_bad_dataset_names_file_and_line(tiny_model, beir5, runs_dir):
    with open(beir5 / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write('{"_id": 5}\n')
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5)
    assert r.exit_code == 2
    assert "corpus.jsonl:6: missing or non-string field '_id'" in r.stderr


def test_prepare_beir_imports_and_validates(beir5, tmp_path):
    out = tmp_path / "imported"
    r = invoke("prepare", "beir", beir5, "--out", out, "--licence", "CC0")
    assert r.exit_code == 0, r.stderr
    card = json.loads((out / "dataset.json").read_text())
    assert card["counts"]["documents"] == 5 and card["licence"] == "CC0"
    again = invoke("prepare", "beir", beir5, "--out", out)
    assert again.exit_code == 2 and "already exists" in again.stderr


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_eval_xglue_benchmark(tiny_model, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--benchmark", "xglue", "--task", "qam", "--model", tiny_model,
               "--data-dir", FIXTURES / "xglue")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    table = pd.read_csv(run / "metrics" / "xglue_qam.csv").set_index("lang")
    assert list(table.index) == ["de", "en", "fr", "avg"]
    assert table.loc["avg", "accuracy"] == pytest.approx(table.loc[["de", "en", "fr"], "accuracy"].mean())
    assert table["threshold"].nunique() == 1  # fixed on English dev, applied to every language


def test_eval_xglue_missing_data_is_one_line(tiny_model, runs_dir, tmp_path):
    r = invoke("--runs-dir", runs_dir, "eval", "--benchmark", "xglue", "--model", tiny_model,
               "--data-dir", tmp_path / "nowhere")
    assert r.exit_code == 2 and "XGLUE data missing" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
