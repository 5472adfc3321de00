"""``clirkit attack``: determinism per seed, robustness statistics, the greedy attack's guarantees
(objective never increases, budgets hold), bare runs against the newest distill run, one-line
user errors, and the lexicon query-translation baseline of ``clirkit eval``."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from clirkit.attack import (
    GreedyState,
    first_relevant_rank,
    greedy_query,
    greedy_state,
    write_robustness,
)
from clirkit.cli import app
from clirkit.config import AttackConfig, build
from clirkit.measures import robustness_rows
from clirkit.perturb import parse_spec
from clirkit.tables import file_label
from tests.conftest import DOCS, QRELS, write_beir

runner = CliRunner()
MEASURES = "nDCG@10,RR@10"
QUERIES = [("q1", "sleeping kitten resting on warm carpet"),
           ("q2", "central banking interest decision markets"),
           ("q3", "weather forecast mountains tomorrow rainfall")]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_dir(result, runs_dir: Path) -> Path:
    assert result.exit_code == 0, result.stderr
    return runs_dir / result.stdout.strip().splitlines()[-1].split("/")[-1]


@pytest.fixture
def beir_long(tmp_path) -> Path:
    """The 5-document corpus with longer queries, so every query has words char-swap can edit."""
    return write_beir(tmp_path / "beir-long", queries=QUERIES, card={"name": "beir-long"})


def attack(runs_dir, model, dataset, *args, seed=0):
    return invoke("--runs-dir", runs_dir, "--seed", seed, "attack", "--model", model, "--dataset", dataset,
                  "--measures", MEASURES, *args)


# --------------------------------------------------------------------------- random attack


def test_random_attack_is_deterministic_per_seed(tiny_model, beir_long, runs_dir):
    args = ("--perturb", "char-swap", "--rate", "0.5,1.0", "--seeds", "2")
    first = run_dir(attack(runs_dir, tiny_model, beir_long, *args), runs_dir)
    second = run_dir(attack(runs_dir, tiny_model, beir_long, *args), runs_dir)
    other = run_dir(attack(runs_dir, tiny_model, beir_long, *args, seed=7), runs_dir)
    names = sorted(p.name for p in (first / "queries").iterdir())
    assert names == ["char-swap-rate0.5-seed0.jsonl", "char-swap-rate0.5-seed1.jsonl",
                     "char-swap-rate1-seed0.jsonl", "char-swap-rate1-seed1.jsonl"]
    for name in names:
        assert (first / "queries" / name).read_text() == (second / "queries" / name).read_text()
    for name in ("per_query.csv", "robustness.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(first / "metrics" / name), pd.read_csv(second / "metrics" / name))
    a = (first / "queries" / "char-swap-rate1-seed0.jsonl").read_text()
    assert a != (first / "queries" / "char-swap-rate1-seed1.jsonl").read_text()  # seeds differ
    assert a != (other / "queries" / "char-swap-rate1-seed7.jsonl").read_text()
    perturbed = [json.loads(line)["text"] for line in a.splitlines()]
    assert all(p != q for p, (_, q) in zip(perturbed, QUERIES))  # rate 1 changes every query
    # one directory: per-query long table, robustness csv + md, one plot per measure, status completed
    pq = pd.read_csv(first / "metrics" / "per_query.csv")
    assert list(pq.columns) == ["system", "perturbation", "rate", "seed", "query_id", "nDCG@10", "RR@10"]
    assert len(pq) == 3 * (1 + 4)  # clean + 2 rates x 2 seeds
    assert (first / "plots" / "nDCG@10.png").stat().st_size > 0 and (first / "plots" / "RR@10.png").is_file()
    assert (first / "metrics" / "robustness.md").is_file()
    assert json.loads((first / "status.json").read_text())["status"] == "completed"


def test_rate_zero_gives_zero_drop_and_alias_works(tiny_model, beir_long, runs_dir):
    r = invoke("--runs-dir", runs_dir, "perturb", "--model", tiny_model, "--dataset", beir_long,
               "--perturb", "char-swap", "--perturb", "word-drop", "--rate", "0", "--seeds", "1",
               "--measures", MEASURES)
    run = run_dir(r, runs_dir)
    table = pd.read_csv(run / "metrics" / "robustness.csv")
    assert set(table["perturbation"]) == {"char-swap", "word-drop"} and set(table["rate"]) == {0.0}
    assert (table["drop"] == 0).all() and (table["clean"] == table["attacked"]).all()
    assert (table["p_value"] == 1.0).all() and table["ci_low"].isna().all()
    assert "n/a" in (run / "metrics" / "robustness.md").read_text()  # one seed: no interval


def test_robustness_rows_drop_ci_and_p_value(tmp_path):
    idx = pd.Index(["a", "b", "c", "d"], name="query_id")
    clean = pd.DataFrame({"nDCG@10": [1.0, 0.8, 0.6, 0.4]}, index=idx)
    wobble = pd.DataFrame({"nDCG@10": [0.02, -0.02, 0.01, -0.01]}, index=idx)  # mean 0 per seed
    seeds = [clean - d + wobble * (i + 1) for i, d in enumerate((0.1, 0.2, 0.3))]
    (row,) = robustness_rows("sys", "char-swap", 0.2, clean, seeds)
    assert row["clean"] == pytest.approx(0.7) and row["attacked"] == pytest.approx(0.5)
    assert row["drop"] == pytest.approx(0.2) and row["rel_drop"] == pytest.approx(0.2 / 0.7)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert row["ci_low"] == pytest.approx(0.2 - half) and row["ci_high"] == pytest.approx(0.2 + half)
    pooled = sum(seeds) / 3  # each query's perturbed score averaged over seeds, then a paired t-test
    assert row["p_value"] == pytest.approx(stats.ttest_rel(clean["nDCG@10"], pooled["nDCG@10"]).pvalue)
    assert row["p_value"] < 0.01
    (one,) = robustness_rows("sys", "char-swap", 0.2, clean, seeds[:1])
    assert math.isnan(one["ci_low"]) and one["drop"] == pytest.approx(0.1)
    shown = write_robustness(pd.DataFrame([row, one]), tmp_path / "robustness")
    assert shown["drop 95% CI"].tolist()[1] == "n/a"
    assert pd.read_csv(tmp_path / "robustness.csv")["ci_low"].isna().tolist() == [False, True]


# --------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("max_edits,max_queries,scoring", [(3, 200, "dense"), (2, 7, "dense"), (2, 30, "maxsim")])
def test_greedy_never_worse_and_respects_budgets(tiny_model, beir_long, runs_dir, max_edits, max_queries, scoring):
    run = run_dir(attack(runs_dir, tiny_model, beir_long, "--search", "greedy", "--success-k", "1",
                         "--max-edits", max_edits, "--max-queries", max_queries, "--scoring", scoring), runs_dir)
    trails = [json.loads(line) for line in (run / "queries" / "greedy.jsonl").read_text().splitlines()]
    assert len(trails) == 3 and any(t["edits"] for t in trails)
    for t in trails:
        assert t["edits"] <= max_edits and t["model_queries"] <= max_queries
        assert len(t["trail"]) == t["edits"]
        objectives = [t["objective_clean"], *(step["objective"] for step in t["trail"])]
        assert all(b < a for a, b in zip(objectives, objectives[1:]))  # only improving edits
        assert t["objective_final"] == objectives[-1]  # the final state is the last accepted edit's
        assert t["attacked"] == (t["trail"][-1]["text"] if t["trail"] else t["original"])
        scored = sum(step["candidates"] for step in t["trail"])
        if t["stop"] in ("success", "max-edits"):  # every scored batch led to an accepted edit
            assert scored == t["model_queries"]
        else:
            assert scored < t["model_queries"] or t["stop"] == "skipped"
        if t["status"] != "skipped":  # success: no relevant document left in the top success_k = 1
            assert (t["status"] == "success") == (t["rank_final_est"] > 1)
    summary = pd.read_csv(run / "metrics" / "greedy_summary.csv")
    assert summary.loc[0, "queries"] == 3 and 0 <= summary.loc[0, "success_rate"] <= 1
    assert summary.loc[0, "mean_model_queries"] <= max_queries
    assert (run / "metrics" / "robustness.csv").is_file() and (run / "metrics" / "per_query.csv").is_file()


class _ToyScorer:
    """A stand-in scorer: a text's vector counts letters, documents are fixed vectors; it records
    every batch it is asked to encode."""

    def __init__(self, docs: np.ndarray) -> None:
        self.docs = docs
        self.batches: list[int] = []

    def encode(self, texts):
        self.batches.append(len(texts))
        return [np.array([t.count(c) for c in "aeiou"], dtype=float) for t in texts]

    def score(self, reps, rows):
        return np.stack(reps) @ self.docs[np.asarray(rows, dtype=int)].T if len(rows) else np.zeros((len(reps), 0))

    def top(self, reps, k):
        s = np.stack(reps) @ self.docs.T
        rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return rows, np.take_along_axis(s, rows, axis=1)


@pytest.mark.parametrize("max_queries", [1, 5, 40, 1000])
def test_greedy_query_budget_and_one_batch_per_step(max_queries):
    rng = np.random.default_rng(0)
    scorer = _ToyScorer(rng.normal(size=(30, 5)))
    cfg = build(AttackConfig, max_edits=4, max_queries=max_queries, success_k=3)
    text = "a relevant query about unusual adversarial examples"
    rel = np.array([int(np.argmax(scorer.docs @ scorer.encode([text])[0]))])
    scorer.batches.clear()
    r = greedy_query(scorer, parse_spec("char-swap"), "q", text, rel, set(), cfg, random.Random(0))
    assert r.model_queries == sum(scorer.batches[1:]) <= max_queries  # batches[0]: the clean query
    assert len(scorer.batches) - 1 == len(r.trail) + (r.stop in ("no-improvement",))  # one batch per step
    assert r.edits <= 4 and r.objective_final <= r.objective_clean
    objs = [r.objective_clean] + [s["objective"] for s in r.trail]
    assert objs == sorted(objs, reverse=True) and len(set(objs)) == len(objs)


def test_first_relevant_rank():
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}
    assert first_relevant_rank(run, {"q": {"b": 1}}, 1000) == {"q": 2}
    assert first_relevant_rank(run, {"q": {"z": 1}}, 1000) == {"q": 1001}


def test_greedy_state_objective_is_best_relevant_minus_kth_competitor():
    docs = np.array([[5.0, 0, 0, 0, 0], [4, 0, 0, 0, 0], [3, 0, 0, 0, 0], [2, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    scorer = _ToyScorer(docs)
    rep = np.array([1.0, 0, 0, 0, 0])  # scores = 5, 4, 3, 2, 1
    state = greedy_state(scorer, rep, np.array([2]), {0}, np.zeros(0, np.int64), 2, "topk")
    # relevant row 2 scores 3; row 0 is excluded; competitors 4, 2, 1: the 2nd best is 2
    assert isinstance(state, GreedyState) and state.best_relevant == 3.0 and state.reference == 2.0
    assert state.objective == 1.0 and state.rank == 2 and state.pool.tolist() == [1, 3, 4]
    top1 = greedy_state(scorer, rep, np.array([2]), {0}, np.zeros(0, np.int64), 2, "top1")
    assert top1.objective == -1.0 and top1.reference == 4.0


# --------------------------------------------------------------------------- bare attack


def _fake_distill(runs_dir: Path, name: str, tiny_model: Path, dataset: Path, status: str = "completed") -> Path:
    run = runs_dir / name
    shutil.copytree(tiny_model, run / "checkpoint")
    (run / "config.json").write_text(json.dumps({"command": "distill", "teacher": str(tiny_model),
                                                 "side": "query", "bitext": str(dataset), "seed": 0}))
    (run / "status.json").write_text(json.dumps({"status": status}))
    return run


def test_bare_attack_uses_newest_completed_distill_run(tiny_model, beir_long, runs_dir):
    r = invoke("--runs-dir", runs_dir, "attack", "--perturb", "char-swap")
    assert r.exit_code == 2 and "clirkit distill" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    _fake_distill(runs_dir, "20260101-000000-distill-aaaaaaaa", tiny_model, beir_long)
    newest = _fake_distill(runs_dir, "20260102-000000-distill-bbbbbbbb", tiny_model, beir_long)
    _fake_distill(runs_dir, "20260103-000000-distill-cccccccc", tiny_model, beir_long, status="failed")
    r = invoke("--runs-dir", runs_dir, "attack", "--perturb", "char-swap", "--rate", "0.5", "--seeds", "1",
               "--measures", MEASURES)
    run = run_dir(r, runs_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["attacked_run"] == str(newest) and manifest["dataset"] == str(beir_long)
    assert newest.name in (run / "log.txt").read_text()
    assert manifest["systems"][0]["name"] == newest.name


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("args,message", [
    (("--perturb", "char-swop"), "unknown perturbation 'char-swop'"),
    (("--rate", "1.5"), "outside [0, 1]"),
    (("--rate", "-0.1"), "outside [0, 1]"),
    (("--search", "greedy", "--max-edits", "0"), "max_edits"),
    (("--search", "greedy", "--max-queries", "0"), "max_queries"),
    (("--perturb", "char-swap:rate=2"), "outside [0, 1]"),
    (("--measures", "nDCG@x"), "unknown measure"),
])
def test_bad_input_is_one_line_exit_2(tiny_model, beir_long, runs_dir, args, message):
    r = attack(runs_dir, tiny_model, beir_long, *args)
    assert r.exit_code == 2, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not runs_dir.exists() or not any(runs_dir.glob("*-attack-*"))  # failed before any work


def test_empty_query_is_one_line_exit_2(tiny_model, tmp_path, runs_dir):
    ds = write_beir(tmp_path / "empty-q", queries=[*QUERIES[:2], ("q3", "   ")], card={"name": "e"})
    r = attack(runs_dir, tiny_model, ds)
    assert r.exit_code == 2 and "'q3' is empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- query translation


def _rank(run: Path, qid: str, doc: str) -> int:
    for line in (run / "run.trec").read_text().splitlines():
        q, _, d, rank, *_ = line.split()
        if q == qid and d == doc:
            return int(rank)
    raise AssertionError(f"{doc} not retrieved for {qid}")


def test_eval_lexicon_translation_moves_queries(tiny_model, tmp_path, runs_dir):
    # "foreign" queries whose lexicon maps every word onto d2's words: d2 must rise to the top
    ds = write_beir(tmp_path / "foreign", queries=[("q1", "Aaa bbb ccc"), ("q2", "zzz yyy")],
                    qrels=[("q1", "d2", 1), ("q2", "d4", 1)], card={"name": "foreign"})
    lex = tmp_path / "lex.tsv"
    lex.write_text("foreign\tenglish\tscore\naaa\tstock\t1\nbbb\tmarkets\t1\nccc\tfell\t1\n")
    plain = run_dir(invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", ds), runs_dir)
    translated = run_dir(invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", ds,
                                "--query-translation", f"lexicon:{lex}"), runs_dir)
    assert _rank(translated, "q1", "d2") == 1 and _rank(plain, "q1", "d2") >= _rank(translated, "q1", "d2")
    assert json.loads((translated / "config.json").read_text())["query_translation"] == f"lexicon:{lex}"
    # untranslatable words are kept: q2's ranking is the untranslated one
    assert _rank(translated, "q2", "d4") == _rank(plain, "q2", "d4")


def test_translator_for_induces_and_caches(tmp_path, monkeypatch):
    from clirkit.data.formats import load_dataset
    from clirkit.lexicon import translator_for

    monkeypatch.setenv("CLIRKIT_CACHE", str(tmp_path / "cache"))
    ds_path = write_beir(tmp_path / "with-bitext", docs=DOCS, queries=[("q1", "pusa sa banig")], qrels=QRELS[:1],
                         card={"name": "with-bitext"})
    (ds_path / "bitext").mkdir()
    pairs = [("the cat", "ang pusa"), ("a cat sleeps", "natutulog ang pusa"), ("on the mat", "sa banig"),
             ("the mat", "ang banig"), ("a black cat", "itim na pusa"), ("red mat", "pulang banig")]
    (ds_path / "bitext" / "train.tsv").write_text(
        "id\tsrc\ttgt\n" + "".join(f"p{i}\t{s}\t{t}\n" for i, (s, t) in enumerate(pairs)))
    ds = load_dataset(ds_path)
    out = translator_for("lexicon", ds)({"q1": "Pusa sa banig"})
    assert out["q1"].split()[0] == "Cat" and out["q1"].split()[-1] == "mat"
    cached = list((tmp_path / "cache" / "lexicon").glob("*.tsv"))
    assert len(cached) == 1
    assert translator_for("lexicon", ds)({"q1": "Pusa sa banig"}) == out  # from the cache this time


def test_attack_compares_systems_with_and_without_translation(tiny_model, beir_long, tmp_path, runs_dir):
    lex = tmp_path / "lex.tsv"
    lex.write_text("foreign\tenglish\tscore\nkitten\tcat\t1\nrainfall\train\t1\n")
    run = run_dir(attack(runs_dir, tiny_model, beir_long, "--rate", "0.5", "--seeds", "1",
                         "--query-translation", "none", "--query-translation", f"lexicon:{lex}"), runs_dir)
    table = pd.read_csv(run / "metrics" / "robustness.csv")
    assert set(table["system"]) == {tiny_model.name, f"{tiny_model.name}+lexicon:lex.tsv"}


def test_dataset_of_run_reads_config_then_manifest(tmp_path, beir_long):
    from clirkit.attack import dataset_of_run
    from clirkit.errors import ClirkitError

    run = tmp_path / "20260101-000000-distill-x"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"bitext": None, "pair": "en-tl", "teacher": "minilm"}))
    (run / "manifest.json").write_text(json.dumps({"bitext": {"folder": str(beir_long), "pair": "en-tl"}}))
    assert dataset_of_run(run) == beir_long
    (run / "config.json").write_text(json.dumps({"bitext": str(beir_long / "bitext" / "train.tsv")}))
    assert dataset_of_run(run) == beir_long  # the table sits inside the test collection
    (run / "config.json").write_text(json.dumps({"bitext": str(tmp_path)}))
    (run / "manifest.json").write_text(json.dumps({}))
    with pytest.raises(ClirkitError, match="records no test collection"):
        dataset_of_run(run)


def test_attack_xglue_per_language(tiny_model, runs_dir):
    fixtures = Path(__file__).parent / "fixtures" / "xglue"
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "attack", "--benchmark", "xglue", "--task", "qam",
                            "--model", str(tiny_model), "--data-dir", str(fixtures), "--rate", "0,0.5",
                            "--seeds", "2"])
    assert r.exit_code == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    table = pd.read_csv(run / "metrics" / "xglue_qam_robustness.csv")
    assert set(table["lang"]) == {"de", "en", "fr"} and set(table["rate"]) == {0.0, 0.5}
    zero = table[table["rate"] == 0.0]
    assert (zero["drop"] == 0).all() and (zero["attacked"] == zero["clean"]).all()  # rate 0 is no attack
    assert (zero["ci_low"] == 0).all() and (zero["ci_high"] == 0).all()  # two equal drops: a zero-width interval
    for _, g in table.groupby("lang"):
        assert g["clean"].nunique() == 1  # the clean score does not depend on the rate
    half = table[table["rate"] == 0.5]
    moved = half[half["ci_high"] > half["ci_low"]]
    assert ((moved["ci_low"] < moved["drop"]) & (moved["drop"] < moved["ci_high"])).all()
    # the interval is symmetric around the drop (a t-interval of the per-seed drops)
    np.testing.assert_allclose(half["drop"] - half["ci_low"], half["ci_high"] - half["drop"], atol=1e-12)


# --------------------------------------------------------------------------- bm25 and fused systems


@pytest.mark.slow
def test_random_and_greedy_attacks_of_bm25(beir_long, runs_dir):
    from clirkit.data.formats import load_dataset
    from clirkit.retrieval import BM25Searcher, document_analyzer

    run = run_dir(attack(runs_dir, "bm25", beir_long, "--rate", "0.5", "--seeds", "2"), runs_dir)
    table = pd.read_csv(run / "metrics" / "robustness.csv")
    assert set(table["system"]) == {"bm25"} and len(table) == 2  # two measures
    # the attacked nDCG@10 is BM25's on the perturbed queries written next to it
    ds = load_dataset(beir_long)
    searcher = BM25Searcher.build(((d, t) for d, t, _ in ds.iter_corpus()), document_analyzer(ds),
                                  show_progress=False)
    pq = pd.read_csv(run / "metrics" / "per_query.csv")
    for seed in (0, 1):
        texts = {json.loads(line)["_id"]: json.loads(line)["text"] for line in
                 (run / "queries" / f"char-swap-rate0.5-seed{seed}.jsonl").read_text().splitlines()}
        import ir_measures

        want = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], ds.qrels,
                                          searcher.search(texts, 1000))
        got = pq[(pq.seed == seed) & (pq.perturbation == "char-swap")]["nDCG@10"].mean()
        assert got == pytest.approx(next(iter(want.values())))
    assert read_json_file(run / "manifest.json")["systems"][0]["system"] == "bm25"
    assert (run / "bm25" / "manifest.json").is_file() and not (run / "index").exists()

    greedy = run_dir(attack(runs_dir, "bm25", beir_long, "--search", "greedy", "--max-edits", "2"), runs_dir)
    summary = pd.read_csv(greedy / "metrics" / "greedy_summary.csv")
    assert summary["system"].tolist() == ["bm25"] and summary["queries"].iloc[0] == 3
    trail = [json.loads(line) for line in (greedy / "queries" / "greedy.jsonl").read_text().splitlines()]
    assert all(r["objective_final"] <= r["objective_clean"] for r in trail)
    assert any(r["edits"] > 0 for r in trail)  # BM25 terms break under char swaps


def test_code_switch_specs_whose_lexicons_share_a_file_name_keep_their_own_rows(beir_long, tmp_path, runs_dir):
    args = []
    for sub, line in (("a", "kitten\tcat"), ("b", "weather\tclimate")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "lex.tsv").write_text(f"foreign\tenglish\tscore\n{line}\t1\n", encoding="utf-8")
        args += ["--perturb", f"code-switch:rate=1,lexicon={tmp_path / sub / 'lex.tsv'}"]
    run = run_dir(attack(runs_dir, "bm25", beir_long, *args, "--seeds", "1"), runs_dir)
    table = pd.read_csv(run / "metrics" / "robustness.csv")
    labels = ["code-switch:lexicon=a/lex.tsv", "code-switch:lexicon=b/lex.tsv"]
    assert sorted(set(table["perturbation"])) == labels and len(table) == 2 * 2  # 2 specs x 2 measures
    assert (table["seeds"] == 1).all()  # no spec's seeds pooled with the other's
    texts = {label: [json.loads(x)["text"] for x in (run / "queries" / f"{file_label(label)}-rate1-seed0.jsonl")
                     .read_text().splitlines()] for label in labels}
    assert "sleeping cat resting on warm carpet" in texts[labels[0]]
    assert "climate forecast mountains tomorrow rainfall" in texts[labels[1]]


def read_json_file(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_fused_attack_gives_every_member_the_same_perturbed_text(tiny_model, beir_long, tmp_path, runs_dir):
    from clirkit.data.formats import load_dataset
    from clirkit.measures import parse_measures, score_run
    from clirkit.retrieval.fusion import fuse_runs

    lex = tmp_path / "lex.tsv"
    lex.write_text("foreign\tenglish\tscore\nkitten\tcat\t1\nrainfall\train\t1\n")
    run = run_dir(attack(runs_dir, "bm25", beir_long, "--model", tiny_model, "--fuse", "rrf", "--rate", "0.5",
                         "--seeds", "1", "--query-translation", f"lexicon:{lex}", "--query-translation", "none"),
                  runs_dir)
    table = pd.read_csv(run / "metrics" / "robustness.csv")
    assert set(table["system"]) == {f"rrf(bm25+lexicon:lex.tsv, {tiny_model.name})"}
    manifest = read_json_file(run / "manifest.json")
    assert [m["name"] for m in manifest["systems"][0]["members"]] == ["bm25+lexicon:lex.tsv", tiny_model.name]
    # recompute: the perturbed text, translated for bm25 only, searched by each member, fused
    from clirkit.attack.common import attach_indexes, load_systems
    from clirkit.config import AttackConfig

    cfg = AttackConfig(model=["bm25", str(tiny_model)], dataset=beir_long, query_translation=[f"lexicon:{lex}", "none"],
                       fuse="rrf", runs_dir=runs_dir)
    ds = load_dataset(beir_long)
    texts = {json.loads(line)["_id"]: json.loads(line)["text"] for line in
             (run / "queries" / "char-swap-rate0.5-seed0.jsonl").read_text().splitlines()}
    from clirkit.rundir import start_run

    with start_run(runs_dir, "attack", cfg, 0) as scratch:
        members = load_systems(cfg, cfg.model, ds)
        attach_indexes(members, ds, cfg, scratch)
        fused = fuse_runs([m.searcher.search(texts, 1000) for m in members], "rrf", params={"k": 60})
    want = score_run({q: ds.qrels[q] for q in texts}, fused, parse_measures(MEASURES.split(",")))["nDCG@10"].mean()
    pq = pd.read_csv(run / "metrics" / "per_query.csv")
    assert pq[pq.perturbation == "char-swap"]["nDCG@10"].mean() == pytest.approx(want)
    bad = attack(runs_dir, "bm25", beir_long, "--model", tiny_model, "--fuse", "rrf", "--search", "greedy")
    assert bad.exit_code == 2 and "random search only" in bad.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--fuse", "rrf", "--fuse-weights", "1"], "--fuse-weights has 1 values for 2 --model values"),
    (["--fuse", "combsum", "--fuse-weights", "1,2,3"], "--fuse-weights has 3 values for 2 --model values"),
    (["--fuse", "rrf", "--fuse-weights", "1,-1"], "fusion weights must be finite, >= 0 and not all 0"),
    (["--fuse", "rrf", "--fuse-weights", "0,0"], "fusion weights must be finite, >= 0 and not all 0"),
    (["--fuse-weights", "1,2"], "--fuse-weights applies to a fused system"),
    (["--fuse-norm", "max"], "--fuse-norm applies to a fused system"),
])
def test_fused_attack_options_are_checked_by_the_config_before_anything_runs(beir_long, runs_dir, args, says):
    r = attack(runs_dir, "bm25", beir_long, "--model", "bm25", *args)
    assert r.exit_code == 2 and says in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr and "Value error" not in r.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # no run, not even a failed one
