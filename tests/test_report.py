"""``report``: a tiny finished experiment (two systems x two seeds of eval runs, one random attack)
-> the report's tables hold the right means, sds, paired tests and robustness rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clirkit.report import build_report

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
    attack = tmp_path / "attack"
    (attack / "metrics").mkdir(parents=True)
    pd.DataFrame([{"system": "x", "perturbation": "char-swap", "rate": 0.2, "measure": "nDCG@10", "clean": 0.6,
                   "attacked": 0.45, "drop": 0.15, "rel_drop": 0.25, "ci_low": 0.1, "ci_high": 0.2,
                   "p_value": 0.01, "seeds": 2, "queries": 4}]).to_csv(attack / "metrics" / "robustness.csv",
                                                                          index=False)
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
    assert rob.loc[0, "system"] == "optical" and rob.loc[0, "drop"] == pytest.approx(0.15)
    report = (out / "report.md").read_text()
    assert f"{np.mean(seed_means['optical']):.4f} ± {np.std(seed_means['optical'], ddof=1):.4f}" in report
    assert "[0.1000, 0.2000]" in report and "plots/nDCG@10.png" in report
