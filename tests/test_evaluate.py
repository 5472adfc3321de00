import ir_measures
import numpy as np
import pandas as pd
import pytest

from clirkit.errors import ClirkitError
from clirkit.evaluate import write_trec
from clirkit.measures import holm, parse_measures, score_run, significance
from clirkit.retrieval import drop_identical, maxsim_scores


def test_parse_measures_rejects_unknown():
    assert [str(m) for m in parse_measures(["nDCG@10", "RR@10", "AP"])] == ["nDCG@10", "RR@10", "AP"]
    with pytest.raises(ClirkitError, match="unknown measure 'nDCG10x'"):
        parse_measures(["nDCG10x"])


def test_score_run_matches_ir_measures_and_zero_fills_missing():
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}, "q3": {"d": 1}, "q4": {"e": 0}}
    run = {"q1": {"b": 0.9, "a": 0.5, "x": 0.1}, "q2": {"x": 0.9, "c": 0.8}}
    measures = parse_measures(["nDCG@10", "RR@10", "AP"])
    df = score_run(qrels, run, measures)
    # q4 judges nothing relevant: not evaluated; q3 retrieved nothing: scores 0
    assert list(df.index) == ["q1", "q2", "q3"]
    assert df.loc["q3"].tolist() == [0.0, 0.0, 0.0]
    ref = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(measures, qrels, run)}
    for q in ("q1", "q2"):
        for m in df.columns:
            assert df.loc[q, m] == pytest.approx(ref[(q, m)])
    assert df.loc["q2", "RR@10"] == pytest.approx(0.5)


def test_write_trec_ranks_by_score(tmp_path):
    write_trec({"q1": {"a": 0.1, "b": 0.9, "c": 0.9}}, tmp_path / "run.trec", "t")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines == ["q1 Q0 b 1 0.900000 t", "q1 Q0 c 2 0.900000 t", "q1 Q0 a 3 0.100000 t"]


def test_maxsim_matches_brute_force():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    docs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 1, 5)]
    got = maxsim_scores([q], docs)[0]
    want = [sum(max(float(qi @ dj) for dj in d) for qi in q) for d in docs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_drop_identical():
    assert drop_identical({"v1": {"v1": 1.0, "v2": 0.5}}) == {"v1": {"v2": 0.5}}


def test_holm_adjustment():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])


def test_significance_detects_a_real_difference():
    rng = np.random.default_rng(1)
    base = pd.DataFrame({"nDCG@10": rng.uniform(0, 0.5, 200)}, index=[f"q{i}" for i in range(200)])
    better = base + 0.2 + rng.normal(0, 0.01, (200, 1))
    same = base.copy()
    table = significance({"zero-shot": base, "better": better, "same": same}, "zero-shot")
    by = table.set_index("system")
    assert by.loc["better", "p"] < 1e-10 and by.loc["better", "delta"] == pytest.approx(0.2, abs=0.005)
    assert by.loc["same", "p"] == 1.0
