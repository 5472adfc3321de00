"""``report``: a tiny finished experiment (two systems x two seeds of eval runs, one random attack)
-> the report's tables hold the right means, sds, paired tests and robustness rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.report import build_report

runner = CliRunner()

QIDS = ["q1", "q2", "q3", "q4"]
VALUES = {  # system -> seed -> nDCG@10 per query
    "zero-shot": {0: [0.1, 0.2, 0.3, 0.4], 1: [0.3, 0.2, 0.1, 0.4]},
    "optical": {0: [0.5, 0.6, 0.4, 0.9], 1: [0.7, 0.6, 0.6, 0.7]},
}


def _eval_run(root, name, values):
    run = root / name
    (run / "metrics").mkdir(parents=True)
    pd.DataFrame({"query_id": QIDS, "nDCG@10": values}).to_csv(run / "metrics" / "per_query.csv", index=False)
    return run


def test_report_tables_hold_the_right_numbers(tmp_path):
    children = {"eval": []}
    for system, seeds in VALUES.items():
        for seed, values in seeds.items():
            run = _eval_run(tmp_path, f"{system}-{seed}", values)
            children["eval"].append({"run": str(run), "system": system, "dataset": "/data/bible-en-tl",
                                     "scoring": "dense", "seed": seed})
    attack = _attack_run(tmp_path, "attack", [0.6, 0.7, 0.5, 0.6], {0: [0.5, 0.5, 0.3, 0.5], 1: [0.4, 0.5, 0.4, 0.5]})
    children["attack"] = [{"run": str(attack), "system": "optical", "scoring": "dense", "search": "random"}]
    out = tmp_path / "exp"
    out.mkdir()
    cfg = SimpleNamespace(name="tiny", description="", baseline="zero-shot",
                          eval=SimpleNamespace(measures=["nDCG@10"]))
    build_report(out, children, cfg)

    agg = pd.read_csv(out / "metrics" / "aggregate.csv").set_index("system")
    seed_means = {s: [np.mean(v) for v in seeds.values()] for s, seeds in VALUES.items()}
    for system, means in seed_means.items():
        assert agg.loc[system, "nDCG@10"] == pytest.approx(np.mean(means))
        assert agg.loc[system, "nDCG@10_sd"] == pytest.approx(np.std(means, ddof=1))
        assert agg.loc[system, "seeds"] == 2 and agg.loc[system, "dataset"] == "bible-en-tl"

    sig = pd.read_csv(out / "metrics" / "significance.csv")
    assert len(sig) == 1 and sig.loc[0, "system"] == "optical"
    a = np.mean(list(VALUES["optical"].values()), axis=0)  # per query, mean over seeds
    b = np.mean(list(VALUES["zero-shot"].values()), axis=0)
    assert sig.loc[0, "delta"] == pytest.approx((a - b).mean())
    assert sig.loc[0, "p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert sig.loc[0, "p_holm"] == pytest.approx(sig.loc[0, "p"])  # one test: Holm changes nothing

    rob = pd.read_csv(out / "metrics" / "robustness.csv")
    assert rob.loc[0, "system"] == "optical" and rob.loc[0, "scoring"] == "dense"
    # clean mean 0.6; each perturbation seed's attacked mean 0.45: drops 0.15 and 0.15, a zero-width interval
    assert rob.loc[0, "drop"] == pytest.approx(0.15) and rob.loc[0, "seeds"] == 2 and rob.loc[0, "training_seeds"] == 1
    assert rob.loc[0, "p_value"] == pytest.approx(stats.ttest_rel([0.6, 0.7, 0.5, 0.6], [0.45, 0.5, 0.35, 0.5]).pvalue)
    assert (rob.loc[0, "ci_low"], rob.loc[0, "ci_high"]) == pytest.approx((0.15, 0.15))
    report = (out / "report.md").read_text()
    assert f"{np.mean(seed_means['optical']):.4f} ± {np.std(seed_means['optical'], ddof=1):.4f}" in report
    assert "[0.1500, 0.1500]" in report and "plots/nDCG@10.png" in report
    assert "## Comparisons under attack" not in report  # no compare pairs


def _attack_run(root, name, clean, attacked, rate=0.2):
    """A random attack's directory as ``clirkit attack`` writes it: ``metrics/per_query.csv``,
    long (the clean run with an empty seed, then each perturbation seed's values)."""
    run = root / name
    (run / "metrics").mkdir(parents=True)
    rows = [{"system": "model", "perturbation": "none", "rate": 0.0, "seed": None, "query_id": q, "nDCG@10": v}
            for q, v in zip(QIDS, clean)]
    rows += [{"system": "model", "perturbation": "char-swap", "rate": rate, "seed": seed, "query_id": q,
              "nDCG@10": v} for seed, values in attacked.items() for q, v in zip(QIDS, values)]
    pd.DataFrame(rows).astype({"seed": "Int64"}).to_csv(run / "metrics" / "per_query.csv", index=False)
    return run


# system -> training seed -> (clean, perturbation seed -> attacked) nDCG@10 per query
ATTACKED = {
    "ot+mse": {0: ([0.9, 0.8, 0.7, 0.6], {7: [0.5, 0.4, 0.6, 0.2], 8: [0.7, 0.4, 0.5, 0.2]}),
               1: ([0.8, 0.8, 0.9, 0.5], {7: [0.6, 0.5, 0.7, 0.1], 8: [0.6, 0.3, 0.5, 0.3]})},
    "mse": {0: ([0.7, 0.9, 0.6, 0.6], {7: [0.2, 0.3, 0.5, 0.1], 8: [0.3, 0.2, 0.2, 0.0]}),
            1: ([0.9, 0.7, 0.8, 0.6], {7: [0.4, 0.1, 0.3, 0.2], 8: [0.1, 0.3, 0.4, 0.1]})},
}


def test_report_compares_systems_under_attack_over_training_seeds(tmp_path):
    """``every_seed`` attacks: the robustness row pools each system's training seeds per query, and
    the comparison under attack pairs the systems per query on the same perturbed queries."""
    children = _children(tmp_path, {s: {0: [0.5] * 4} for s in ATTACKED})
    children["attack"] = [
        {"run": str(_attack_run(tmp_path, f"attack-{system}-{seed}", clean, attacked)), "system": system,
         "seed": seed, "scoring": "dense", "search": "random"}
        for system, seeds in ATTACKED.items() for seed, (clean, attacked) in seeds.items()]
    out = tmp_path / "exp"
    out.mkdir()
    cfg = SimpleNamespace(name="tiny", description="", baseline="mse", seeds=[0, 1], compare=[("ot+mse", "mse")],
                          eval=SimpleNamespace(measures=["nDCG@10"]))
    build_report(out, children, cfg)

    def attacked(system, seed):  # per query: mean over training seeds (and over perturbation seeds if None)
        arrays = [np.array(v[1][seed] if seed is not None else np.mean(list(v[1].values()), axis=0))
                  for v in ATTACKED[system].values()]
        return np.mean(arrays, axis=0)

    rob = pd.read_csv(out / "metrics" / "robustness.csv").set_index("system")
    assert len(rob) == 2 and (rob["training_seeds"] == 2).all() and (rob["seeds"] == 2).all()
    clean = np.mean([np.array(v[0]) for v in ATTACKED["ot+mse"].values()], axis=0)
    drops = [clean.mean() - attacked("ot+mse", s).mean() for s in (7, 8)]
    assert rob.loc["ot+mse", "clean"] == pytest.approx(clean.mean())
    assert rob.loc["ot+mse", "attacked"] == pytest.approx(attacked("ot+mse", None).mean())
    assert (rob.loc["ot+mse", "ci_low"], rob.loc["ot+mse", "ci_high"]) == pytest.approx(
        tuple(stats.t.interval(0.95, 1, loc=np.mean(drops), scale=stats.sem(drops))))
    assert rob.loc["ot+mse", "p_value"] == pytest.approx(stats.ttest_rel(clean, attacked("ot+mse", None)).pvalue)

    comp = pd.read_csv(out / "metrics" / "attack_comparisons.csv")
    assert len(comp) == 1
    row = comp.iloc[0]
    a, b = attacked("ot+mse", None), attacked("mse", None)
    assert (row["scoring"], row["perturbation"], row["rate"], row["system_a"], row["system_b"]) == (
        "dense", "char-swap", 0.2, "ot+mse", "mse")
    assert row["seeds_a"] == 2 and row["seeds_b"] == 2 and row["n"] == 4
    assert row["delta"] == pytest.approx((a - b).mean())
    assert row["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert row["p_t_holm"] == pytest.approx(row["p_t"])  # one test
    report = (out / "report.md").read_text()
    section = report.split("## Comparisons under attack")[1].split("##")[0]
    assert "same sampled queries" in section and "mean over the perturbation seeds" in section
    line = next(x for x in section.splitlines() if x.startswith("| dense "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == ["dense", "char-swap", "0.2", "ot+mse", "mse", "nDCG@10", "4", f"{(a - b).mean():.4f}"]


# --------------------------------------------------------------------------- comparisons between any two systems

THIRD = {"mse": {0: [0.4, 0.1, 0.2, 0.5], 1: [0.2, 0.3, 0.2, 0.7]}}


def _children(root, values):
    children = {"eval": []}
    for system, seeds in values.items():
        for seed, vals in seeds.items():
            for dataset in ("/data/bible-en-tl", "/data/bible-en-tl-xref"):
                run = _eval_run(root, f"{system}-{seed}-{dataset[-4:]}", vals)
                children["eval"].append({"run": str(run), "system": system, "dataset": dataset,
                                         "scoring": "dense", "seed": seed})
    return children


def test_report_compares_any_two_systems(tmp_path):
    values = {**VALUES, **THIRD}
    children = _children(tmp_path, values)
    out = tmp_path / "exp"
    out.mkdir()
    cfg = SimpleNamespace(name="tiny", description="", baseline="zero-shot", seeds=[0, 1],
                          compare=[("optical", "mse"), ("mse", "zero-shot")],
                          eval=SimpleNamespace(measures=["nDCG@10"]))
    build_report(out, children, cfg)

    comp = pd.read_csv(out / "metrics" / "comparisons.csv")
    assert len(comp) == 2 * 2  # 2 pairs x 2 datasets x 1 measure
    assert set(zip(comp.system_a, comp.system_b)) == {("optical", "mse"), ("mse", "zero-shot")}
    row = comp[(comp.system_a == "optical") & (comp.dataset == "bible-en-tl")].iloc[0]
    a = np.mean(list(VALUES["optical"].values()), axis=0)  # per query, mean over seeds
    b = np.mean(list(THIRD["mse"].values()), axis=0)
    res = stats.ttest_rel(a, b)
    assert row["delta"] == pytest.approx((a - b).mean())
    assert row["p_t"] == pytest.approx(res.pvalue)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(res.confidence_interval(0.95)))
    assert row["resamples"] == 2**4 and row["seeds_a"] == 2 and row["seeds_b"] == 2 and row["n"] == 4
    assert 0 < row["p_rand"] <= 1
    # one Holm family over every comparison, dataset and measure: 4 tests
    order = np.argsort(comp["p_t"].to_numpy())
    assert comp["p_t_holm"].iloc[order[0]] == pytest.approx(min(1.0, 4 * comp["p_t"].iloc[order[0]]))
    assert (comp["p_rand_holm"] >= comp["p_rand"]).all()
    # significance.csv: one Holm family too, over both datasets and both systems (4 tests, not 2 per dataset)
    sig = pd.read_csv(out / "metrics" / "significance.csv")
    assert len(sig) == 4 and sig.dataset.nunique() == 2
    p = sig["p"].to_numpy()
    order = np.argsort(p, kind="stable")
    expected = np.minimum(1, np.maximum.accumulate((4 - np.arange(4)) * p[order]))
    np.testing.assert_allclose(sig["p_holm"].to_numpy()[order], expected)
    assert "Holm-corrected over all 4 tests" in (out / "report.md").read_text()

    report = (out / "report.md").read_text()
    section = report.split("## Comparisons")[1].split("##")[0]
    assert "mean over the seeds" in section and "16 resamples" in section and "Holm" in section
    line = next(x for x in section.splitlines() if x.startswith("| bible-en-tl ") and "| optical " in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:6] == ["bible-en-tl", "dense", "optical", "mse", "nDCG@10", "4"]
    assert cells[6] == f"{(a - b).mean():.4f}" and cells[8] == f"{row['p_t_holm']:.3g}"


def test_report_without_compare_has_no_comparisons(tmp_path):
    children = _children(tmp_path, VALUES)
    out = tmp_path / "exp"
    out.mkdir()
    cfg = SimpleNamespace(name="tiny", description="", baseline="zero-shot", eval=SimpleNamespace(measures=["nDCG@10"]))
    build_report(out, children, cfg)
    assert not (out / "metrics" / "comparisons.csv").exists()
    assert "## Comparisons" not in (out / "report.md").read_text()


def _grid(tmp_path, tiny_model, beir5, extra=""):
    path = tmp_path / "exp.toml"
    path.write_text(f"""
name = "tiny"
seeds = [0]
baseline = "zero-shot"
{extra}

[[systems]]
name = "zero-shot"
model = "{tiny_model}"

[[systems]]
name = "same-model"
model = "{tiny_model}"

[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10", "RR@10"]
""", encoding="utf-8")
    return path


def test_compare_naming_an_unknown_system_fails_before_any_work(tmp_path, tiny_model, beir5, runs_dir):
    exp = _grid(tmp_path, tiny_model, beir5, extra='compare = [["same-model", "zero-shot"], ["zero-shot", "nope"]]')
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "'nope'" in r.stderr and "known: zero-shot, same-model" in r.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # nothing ran, nothing written


def test_report_compare_option(tmp_path, tiny_model, beir5, runs_dir):
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(_grid(tmp_path, tiny_model, beir5))])
    assert r.exit_code == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    assert not (run / "metrics" / "comparisons.csv").exists()  # the grid names no pairs

    before = set(runs_dir.iterdir())
    bad = runner.invoke(app, ["--runs-dir", str(runs_dir), "report", str(run), "--compare", "same-model:nope"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "'nope'" in bad.stderr and "zero-shot, same-model" in bad.stderr
    malformed = runner.invoke(app, ["--runs-dir", str(runs_dir), "report", str(run), "--compare", "same-model"])
    assert malformed.exit_code == 2 and "not A:B" in malformed.stderr
    assert set(runs_dir.iterdir()) == before  # no report directory started

    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "report", str(run), "--compare", "same-model:zero-shot"])
    assert r.exit_code == 0, r.stderr
    new = Path(r.stdout.strip().splitlines()[-1])
    comp = pd.read_csv(new / "metrics" / "comparisons.csv")
    assert list(comp.measure) == ["nDCG@10", "RR@10"] and set(comp.system_a) == {"same-model"}
    assert (comp.delta == 0).all() and (comp.p_t == 1).all() and (comp.p_rand_holm == 1).all()  # one model twice
    assert json.loads((new / "config.json").read_text())["compare"] == [["same-model", "zero-shot"]]
    assert "## Comparisons" in (new / "report.md").read_text()


def test_report_of_a_moved_runs_folder_reads_the_steps_beside_the_grid(tmp_path, tiny_model, beir5, runs_dir):
    """children.json records the steps' paths as the grid saw them; a runs folder moved since
    (another machine, an archive) still reports, from the steps beside the grid."""
    import shutil

    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(_grid(tmp_path, tiny_model, beir5))])
    assert r.exit_code == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    moved = tmp_path / "archive"
    shutil.move(str(runs_dir), moved)
    grid = moved / run.name
    r = runner.invoke(app, ["--runs-dir", str(tmp_path / "new-runs"), "report", str(grid)])
    assert r.exit_code == 0, r.stderr
    new = Path(r.stdout.strip().splitlines()[-1])
    pd.testing.assert_frame_equal(pd.read_csv(new / "metrics" / "aggregate.csv"),
                                  pd.read_csv(grid / "metrics" / "aggregate.csv"))
    step = json.loads((grid / "children.json").read_text())["eval"][0]["run"]
    shutil.rmtree(moved / Path(step).name)
    r = runner.invoke(app, ["--runs-dir", str(tmp_path / "new-runs"), "report", str(grid)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"step {Path(step).name} of the grid {grid.name} is missing" in r.stderr
