import json
import shutil

import ir_measures
import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.data.formats import load_dataset
from clirkit.errors import ClirkitError
from clirkit.retrieval.fusion import FusionSearcher, fuse_runs
from tests.conftest import write_beir

A = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 5.0, "y": 4.0}}
B = {"q1": {"c": 0.9, "a": 0.5, "d": 0.1}}  # returned nothing for q2


def approx(d):
    return {q: pytest.approx(docs, rel=1e-12, abs=1e-12) for q, docs in d.items()}


# --------------------------------------------------------------------------- fuse_runs


@pytest.mark.parametrize("k", [60, 1])
def test_rrf_is_the_sum_of_reciprocal_ranks(k):
    ranks = {"A": {"a": 1, "b": 2, "c": 3}, "B": {"c": 1, "a": 2, "d": 3}}
    want = {d: sum(1 / (k + r[d]) for r in ranks.values() if d in r) for d in "abcd"}
    got = fuse_runs([A, B], "rrf", None, {"k": k})
    assert got == approx({"q1": want, "q2": {"x": 1 / (k + 1), "y": 1 / (k + 2)}})


def test_rrf_ties_keep_the_listed_order():
    # equal scores: the run's own order is its ranking (as read back from run.trec)
    got = fuse_runs([{"q": {"b": 1.0, "a": 1.0}}, {"q": {"z": 1.0}}], "rrf", None, {"k": 0})
    assert got == approx({"q": {"b": 1.0, "a": 0.5, "z": 1.0}})


def test_combsum_min_max_and_combmnz():
    # min-max per query: A -> a 1, b .5, c 0 ; B -> c 1, a .5, d 0 ; q2: x 1, y 0
    assert fuse_runs([A, B], "combsum", None, {"norm": "min-max"}) == approx(
        {"q1": {"a": 1.5, "b": 0.5, "c": 1.0, "d": 0.0}, "q2": {"x": 1.0, "y": 0.0}})
    # CombMNZ multiplies by the number of runs that retrieved the document
    assert fuse_runs([A, B], "combmnz", None, {}) == approx(
        {"q1": {"a": 3.0, "b": 0.5, "c": 2.0, "d": 0.0}, "q2": {"x": 1.0, "y": 0.0}})
    assert fuse_runs([A, B], "combsum", None, {"norm": "none"})["q1"] == pytest.approx(
        {"a": 3.5, "b": 2.0, "c": 1.9, "d": 0.1})


def test_weights_change_the_fusion():
    w = [1.0, 3.0]
    rrf = fuse_runs([A, B], "rrf", w, {"k": 60})["q1"]
    assert rrf == pytest.approx({"a": 1 / 61 + 3 / 62, "b": 1 / 62, "c": 1 / 63 + 3 / 61, "d": 3 / 63}, rel=1e-12)
    assert max(rrf, key=rrf.get) == "c"  # unweighted, "a" wins (rank 1 + rank 2 beats 1 + 3)
    plain = fuse_runs([A, B], "rrf", None, {"k": 60})["q1"]
    assert max(plain, key=plain.get) == "a"
    assert fuse_runs([A, B], "combsum", w, {})["q1"] == pytest.approx({"a": 2.5, "b": 0.5, "c": 3.0, "d": 0.0})
    # ranx wmnz: normalised score sum times the summed weights of the runs that retrieved it
    assert fuse_runs([A, B], "combmnz", w, {})["q1"] == pytest.approx({"a": 6.0, "b": 0.5, "c": 4.0, "d": 0.0})
    assert fuse_runs([A, B], "combsum", [1.0, 1.0], {}) == approx(fuse_runs([A, B], "combsum", None, {}))


@pytest.mark.parametrize("runs,method,weights,params,message", [
    ([A], "rrf", None, {}, "at least two runs"),
    ([A, B], "borda", None, {}, "unknown fusion method 'borda'"),
    ([A, B], "rrf", [1.0], {}, "1 weights for 2 runs"),
    ([A, B], "rrf", [0.0, 0.0], {}, "not all 0"),
    ([A, B], "rrf", None, {"norm": "min-max"}, "rrf takes no parameter 'norm'"),
    ([A, B], "combsum", None, {"norm": "l2"}, "unknown score normalisation"),
])
def test_bad_fusion_requests(runs, method, weights, params, message):
    with pytest.raises(ClirkitError, match=message):
        fuse_runs(runs, method, weights, params)


def test_a_member_without_any_document():
    got = fuse_runs([A, {"q1": {}}], "rrf", None, {"k": 60})
    assert got == approx({"q1": {"a": 1 / 61, "b": 1 / 62, "c": 1 / 63}, "q2": {"x": 1 / 61, "y": 1 / 62}})


# --------------------------------------------------------------------------- FusionSearcher


class Recording:
    """A real BM25 searcher that remembers the query texts it was given."""

    def __init__(self, searcher):
        self.searcher, self.seen, self.name = searcher, [], searcher.name

    def search(self, queries, k):
        self.seen.append(dict(queries))
        return self.searcher.search(queries, k)


def test_fusion_searcher_fuses_its_members_on_the_same_texts():
    from clirkit.analysis import Analyzer
    from clirkit.retrieval.bm25 import BM25Searcher
    from tests.conftest import DOCS

    members = [Recording(BM25Searcher.build(DOCS, Analyzer("en"), show_progress=False)),
               Recording(BM25Searcher.build(DOCS, Analyzer("en", stem=False), k1=0.5, b=0.2, method="robertson",
                                            show_progress=False))]
    queries = {"q1": "cats sitting on mats", "q2": "the bank rates", "q3": "kitten rain"}
    fusion = FusionSearcher(members, "rrf", [2.0, 1.0], {"k": 10})
    got = fusion.search(queries, 2)
    assert all(m.seen == [queries] for m in members)
    want = fuse_runs([m.searcher.search(queries, 2) for m in members], "rrf", [2.0, 1.0], {"k": 10})
    assert got == {q: dict(sorted(d.items(), key=lambda x: (-x[1], x[0]))[:2]) for q, d in want.items()}
    assert all(len(d) <= 2 for d in got.values()) and got["q1"]
    with pytest.raises(ClirkitError, match="greedy search is not supported for fused systems"):
        fusion.encode(["x"])


# --------------------------------------------------------------------------- the command

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_trec(path):
    rows = [line.split() for line in path.read_text().splitlines()]
    return rows


@pytest.fixture(scope="module")
def evals(tiny_model, tmp_path_factory):
    """Eval runs: dense and maxsim on one dataset, dense on a copy, dense on changed queries."""
    root = tmp_path_factory.mktemp("fuse")
    card = {"name": "beir5", "languages": {"query": "en", "document": "en"}}
    ds, other = write_beir(root / "beir5", card=card), write_beir(root / "other", card=card)
    runs_dir = root / "runs"

    def eval_(dataset, *extra):
        r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", dataset, *extra)
        assert r.exit_code == 0, r.output
        return r.stdout.strip().splitlines()[-1]

    out = {"ds": ds, "runs_dir": runs_dir, "dense": eval_(ds), "maxsim": eval_(ds, "--scoring", "maxsim"),
           "other": eval_(other)}
    original = (ds / "queries.jsonl").read_text()
    (ds / "queries.jsonl").write_text(original.replace("cat on a mat", "dog on a mat"))
    out["changed"] = eval_(ds)
    (ds / "queries.jsonl").write_text(original)
    return out


def test_fuse_end_to_end(evals):
    from pathlib import Path

    runs_dir = evals["runs_dir"]
    r = invoke("--runs-dir", runs_dir, "fuse", evals["dense"], Path(evals["maxsim"]).name, "--rrf-k", 2)
    assert r.exit_code == 0, r.output
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.parent == runs_dir and "-fuse-" in path.name
    # RRF recomputed from the members' rank columns
    want: dict = {}
    for member in (evals["dense"], evals["maxsim"]):
        for qid, _, doc, rank, _, _ in read_trec(Path(member) / "run.trec"):
            want.setdefault(qid, {}).setdefault(doc, 0.0)
            want[qid][doc] += 1 / (2 + int(rank))
    got: dict = {}
    for qid, q0, doc, _rank, score, tag in read_trec(path / "run.trec"):
        got.setdefault(qid, {})[doc] = float(score)
        assert q0 == "Q0" and tag == "clirkit-fuse-rrf"
    assert got == {q: pytest.approx(d, abs=1e-6) for q, d in want.items()}
    # the metrics are ir_measures' scores of the fused run
    measures = [ir_measures.parse_measure(m) for m in ("nDCG@10", "RR@10", "R@100", "AP")]
    qrels = load_dataset(evals["ds"]).qrels
    ref = ir_measures.calc_aggregate(measures, qrels, list(ir_measures.read_trec_run(str(path / "run.trec"))))
    agg = pd.read_csv(path / "metrics" / "aggregate.csv")
    for m in measures:
        assert agg.loc[0, str(m)] == pytest.approx(ref[m])
    assert len(pd.read_csv(path / "metrics" / "per_query.csv")) == 3
    manifest = json.loads((path / "manifest.json").read_text())
    fusion = manifest["fusion"]
    assert [m["id"] for m in fusion["members"]] == [Path(evals["dense"]).name, Path(evals["maxsim"]).name]
    import hashlib
    assert fusion["members"][0]["run_trec_sha256"] == hashlib.sha256(
        (Path(evals["dense"]) / "run.trec").read_bytes()).hexdigest()
    assert (fusion["method"], fusion["params"], fusion["norm"], fusion["weights"]) == ("rrf", {"k": 2}, "none", None)
    config = json.loads((path / "config.json").read_text())
    assert config["command"] == "fuse" and config["method"] == "rrf" and config["rrf_k"] == 2
    # a fuse run is itself a member; CombMNZ with weights
    r = invoke("--runs-dir", runs_dir, "fuse", path, evals["dense"], "--method", "combmnz", "--weights", "1,0.5")
    assert r.exit_code == 0, r.output
    second = json.loads((Path(r.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())["fusion"]
    assert (second["method"], second["norm"], second["weights"]) == ("combmnz", "min-max", [1.0, 0.5])


def _failed_copy(evals, tmp_path):
    bad = tmp_path / "failed-eval"
    shutil.copytree(evals["dense"], bad)
    (bad / "status.json").write_text(json.dumps({"status": "failed"}))
    return bad


@pytest.mark.parametrize("args,message", [
    (lambda e, t: [e["dense"], e["other"]], "runs of different datasets"),
    (lambda e, t: [e["dense"], e["changed"]], "runs of different query sets"),
    (lambda e, t: [e["dense"]], "fusion needs at least two runs"),
    (lambda e, t: [e["dense"], e["maxsim"], "--weights", "1,2,3"], "3 weights for 2 runs"),
    (lambda e, t: [e["dense"], e["maxsim"], "--method", "borda"], "invalid method"),
    (lambda e, t: [e["dense"], e["maxsim"], "--norm", "min-max"], "does not apply to rrf"),
    (lambda e, t: [e["dense"], e["ds"]], "is not a completed eval or fuse run"),
    (lambda e, t: [e["dense"], _failed_copy(e, t)], "is not a completed eval or fuse run"),
    (lambda e, t: [e["dense"], e["dense"]], "the same run is given twice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(evals, tmp_path, args, message):
    runs_dir = evals["runs_dir"]
    before = sorted(runs_dir.iterdir())
    r = invoke("--runs-dir", runs_dir, "fuse", *args(evals, tmp_path))
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output
    assert sorted(runs_dir.iterdir()) == before
