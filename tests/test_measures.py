"""Paired comparisons of two systems (:mod:`clirkit.measures`): each number against an
independent computation (the t interval from its formula, the randomisation test by enumerating
every sign assignment), Holm over one family, and the edge cases scipy leaves as NaN."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clirkit.measures import compare_pairs, holm, holm_columns, paired_comparison, paired_ttest

A = np.array([0.9, 0.4, 0.7, 0.2, 1.0, 0.6, 0.3, 0.8])
B = np.array([0.5, 0.5, 0.1, 0.1, 0.6, 0.6, 0.4, 0.2])


def _exact_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the sign-flip test by enumeration (scipy's convention: twice the smaller tail)."""
    observed = d.mean()
    null = np.array([(d * signs).mean() for signs in itertools.product([1, -1], repeat=len(d))])
    eps = 1e-12 * max(1.0, abs(observed))
    greater = np.mean(null >= observed - eps)
    less = np.mean(null <= observed + eps)
    return min(1.0, 2 * min(greater, less))


def test_paired_comparison_matches_its_definitions():
    row = paired_comparison(A, B)
    d = A - B
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert row["n"] == n and row["delta"] == pytest.approx(d.mean())
    assert row["mean_a"] == pytest.approx(A.mean()) and row["mean_b"] == pytest.approx(B.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row["t"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(n)))
    assert row["p_t"] == pytest.approx(2 * stats.t.sf(abs(row["t"]), n - 1))
    assert row["resamples"] == 2**n  # 256 < 10,000: every sign assignment, no randomness
    assert row["p_rand"] == pytest.approx(_exact_sign_flip_p(d))
    # the direction is A - B
    assert paired_comparison(B, A)["delta"] == pytest.approx(-d.mean())


def test_randomisation_test_is_seeded_and_records_its_resamples():
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    first = paired_comparison(a, b, n_resamples=500, seed=3)
    assert first["resamples"] == 500
    assert paired_comparison(a, b, n_resamples=500, seed=3)["p_rand"] == first["p_rand"]
    others = {paired_comparison(a, b, n_resamples=500, seed=s)["p_rand"] for s in range(4, 9)}
    assert others != {first["p_rand"]}  # the seed is used
    # the randomisation and t-test agree on IR-like data (Smucker et al., CIKM 2007)
    assert first["p_rand"] == pytest.approx(first["p_t"], abs=0.08)


def test_identical_and_tiny_samples():
    same = paired_comparison(A, A.copy())
    assert (same["t"], same["p_t"], same["p_rand"]) == (0.0, 1.0, 1.0)
    assert (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    one = paired_comparison(A[:1], B[:1])
    assert one["n"] == 1 and one["delta"] == pytest.approx(0.4) and math.isnan(one["p_t"]) and math.isnan(one["p_rand"])


def test_compare_pairs_and_one_holm_family():
    idx = pd.Index([f"q{i}" for i in range(len(A))], name="query_id")
    per_query = {"a": pd.DataFrame({"nDCG@10": A, "AP": A / 2}, index=idx),
                 "b": pd.DataFrame({"nDCG@10": B, "AP": B / 2}, index=idx),
                 "c": pd.DataFrame({"nDCG@10": B[::-1]}, index=idx[::-1])}  # same values, other order
    table = compare_pairs(per_query, [("a", "b"), ("a", "c"), ("a", "missing")], n_resamples=100)
    assert list(zip(table.system_a, table.system_b, table.measure)) == [
        ("a", "b", "nDCG@10"), ("a", "b", "AP"), ("a", "c", "nDCG@10")]
    # queries are paired by id, not by position
    assert table.iloc[2]["p_t"] == pytest.approx(table.iloc[0]["p_t"])
    assert table.iloc[1]["delta"] == pytest.approx((A - B).mean() / 2)
    with_nan = pd.concat([table, pd.DataFrame([{"p_t": math.nan, "p_rand": math.nan}])], ignore_index=True)
    corrected = holm_columns(with_nan, ["p_t", "p_rand"])
    cols = list(corrected.columns)
    assert cols[cols.index("p_t") + 1] == "p_t_holm" and cols[cols.index("p_rand") + 1] == "p_rand_holm"
    np.testing.assert_allclose(corrected["p_t_holm"][:3], holm(table["p_t"].to_numpy()))
    assert math.isnan(corrected["p_t_holm"].iloc[3])
    assert (corrected["p_t_holm"][:3] >= table["p_t"]).all() and corrected["p_t_holm"][:3].max() <= 1


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04)
    np.testing.assert_allclose(holm(np.array([0.04, 0.01, 0.02])), [0.04, 0.03, 0.04])


def test_holm_leaves_nan_out_of_the_family():
    # a NaN (e.g. a test that could not be run) is not a test: m = 3, not 4, and it stays NaN
    got = holm(np.array([0.01, math.nan, 0.04, 0.03]))
    np.testing.assert_allclose(got[[0, 2, 3]], [0.03, 0.06, 0.06])
    assert math.isnan(got[1])
    # a NaN first in the table does not break the step-down of the others either
    got = holm(np.array([math.nan, 0.04, 0.01, 0.02]))
    assert math.isnan(got[0])
    np.testing.assert_allclose(got[1:], [0.04, 0.03, 0.04])
    assert np.isnan(holm(np.array([math.nan, math.nan]))).all() and len(holm(np.array([]))) == 0
    table = pd.DataFrame({"p_t": [math.nan, 0.02, 0.01]})
    np.testing.assert_allclose(holm_columns(table, ["p_t"])["p_t_holm"][1:], [0.02, 0.02])


def test_paired_tests_refuse_arrays_of_different_lengths():
    # numpy would broadcast the single value: identical "samples", p = 1, a test of nothing
    with pytest.raises(ValueError, match=r"one value per query.*\(3,\) and \(1,\)"):
        paired_ttest(np.array([0.5, 0.5, 0.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="one value per query"):
        paired_ttest(A, B[:-1])
    with pytest.raises(ValueError, match="one value per query"):
        paired_comparison(A, B[:1])
    # fewer than two pairs is no test, even when the one pair agrees
    assert all(math.isnan(x) for x in paired_ttest(np.array([0.3]), np.array([0.3])))
    assert paired_ttest(A, A.copy()) == (0.0, 1.0)
