"""Measures and statistics shared by eval, attack and report.

Measures are ir_measures strings parsed by ``ir_measures.parse_measure`` (never hand-split);
table columns are ``str(measure)``. Per-query values come from ``ir_measures.iter_calc``; a
judged query the system returned nothing for scores 0 (pytrec_eval would silently drop it and
inflate the mean).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from clirkit.errors import ClirkitError

log = logging.getLogger("clirkit")


def parse_measures(names: Sequence[str]) -> list:
    """Parse ir_measures strings; an unknown one is a ClirkitError naming it."""
    import ir_measures

    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, TypeError) as e:
            raise ClirkitError(f"unknown measure {name!r} ({e})",
                               fix="use ir_measures strings such as nDCG@10, RR@10, R@100, AP, P@5") from None
    if not out:
        raise ClirkitError("no measures given", fix="pass e.g. --measures nDCG@10")
    return out


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], measures: list) -> pd.DataFrame:
    """Per-query table (index ``query_id``, one column per ``str(measure)``).

    Judged queries (with at least one grade > 0) that are missing from the run get 0.
    """
    import ir_measures

    judged = sorted(q for q, docs in qrels.items() if any(g > 0 for g in docs.values()))
    if not judged:
        raise ClirkitError("the qrels judge no document relevant", fix="check the dataset's qrels")
    values: dict[str, dict[str, float]] = {q: {str(m): 0.0 for m in measures} for q in judged}
    present = {q: docs for q, docs in run.items() if docs}
    for metric in ir_measures.iter_calc(measures, qrels, present):
        if metric.query_id in values:
            values[metric.query_id][str(metric.measure)] = float(metric.value)
    missing = [q for q in judged if q not in present]
    if missing:
        log.warning("%d judged queries have no results; they score 0", len(missing))
    df = pd.DataFrame.from_dict(values, orient="index")[[str(m) for m in measures]]
    df.index.name = "query_id"
    return df


def aggregate(per_query: pd.DataFrame) -> pd.Series:
    """The mean of each measure over queries."""
    return per_query.mean(axis=0)


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t confidence interval of the mean of ``values`` (NaN with fewer than 2).

    ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)`` with the sample sd (Student, Biometrika 1908).
    """
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float arrays of the same queries; different lengths are a ValueError (numpy
    would broadcast a single value against all of the other's, a test of nothing)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs one value per query on both sides; got shapes {a.shape} and {b.shape}")
    return a, b


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test ``(t, p)``; identical samples give ``(0, 1)`` (scipy would give NaN),
    fewer than two pairs ``(nan, nan)``; arrays of different lengths raise ValueError.

    The paired t-test agrees with the randomization test on IR measures (Smucker, Allan &
    Carterette, "A Comparison of Statistical Significance Tests for Information Retrieval
    Evaluation", CIKM 2007).
    """
    from scipy import stats

    a, b = _paired(a, b)
    if len(a) < 2:
        return math.nan, math.nan
    if np.allclose(a, b):
        return 0.0, 1.0
    t, p = stats.ttest_rel(a, b)
    return float(t), float(p)


def robustness_rows(system: str, perturbation: str, rate: float, clean: pd.DataFrame,
                    attacked: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """Clean vs attacked for each measure column.

    ``drop = clean - attacked`` (positive: the attack hurts), ``rel_drop = drop / clean``. The
    95% interval of the drop is a t-interval over the per-seed drops (NaN with one seed). The
    p-value is a two-sided paired t-test over queries of the clean score against the query's
    perturbed score averaged over seeds; averaging first keeps the test's unit the query (seeds
    are not independent samples of queries), and the t-test agrees with the randomisation test
    on IR measures (Smucker, Allan & Carterette, CIKM 2007).

    Args:
        system: the system's name.
        perturbation: the spec label.
        rate: the perturbation rate.
        clean: per-query table of the clean run (index query_id, one column per measure).
        attacked: one such table per seed, same index.
    """
    rows = []
    n = len(attacked)
    for m in clean.columns:
        c = clean[m]
        per_seed = np.array([a[m].reindex(c.index).mean() for a in attacked])
        drops = c.mean() - per_seed
        drop = float(drops.mean())
        lo, hi = t_interval(drops)
        pooled = pd.concat([a[m].reindex(c.index) for a in attacked], axis=1).mean(axis=1)
        _, p = paired_ttest(c.to_numpy(), pooled.to_numpy())
        clean_mean = float(c.mean())
        rows.append({"system": system, "perturbation": perturbation, "rate": rate, "measure": m,
                     "clean": clean_mean, "attacked": float(per_seed.mean()), "drop": drop,
                     "rel_drop": drop / clean_mean if clean_mean > 0 else math.nan,
                     "ci_low": lo, "ci_high": hi, "p_value": p, "seeds": n, "queries": len(c)})
    return rows


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1; Holm, Scand. J. Statistics 1979).

    NaN p-values (a test that could not be run) stay NaN and are not tests: they do not count in
    Holm's m nor take part in the step-down of the others.
    """
    p = np.asarray(p, dtype=float)
    adj = np.full(len(p), math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        adj[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adj


def significance(per_query: dict[str, pd.DataFrame], baseline: str, corrected: bool = True) -> pd.DataFrame:
    """Paired two-sided t-tests (:func:`paired_ttest`) of every system against ``baseline`` per
    measure, with ``p_holm`` Holm-corrected over all the tests of the table.

    With ``corrected=False`` there is no ``p_holm``: for a caller that joins several tables into
    one family and corrects that once (:func:`holm_columns` on ``p``).
    """
    base = per_query[baseline]
    rows = []
    for system, df in per_query.items():
        if system == baseline:
            continue
        common = base.index.intersection(df.index)
        for measure in base.columns.intersection(df.columns):
            a, b = df.loc[common, measure].to_numpy(), base.loc[common, measure].to_numpy()
            t, p = paired_ttest(a, b)
            rows.append({"system": system, "baseline": baseline, "measure": measure, "n": len(common),
                         "mean": a.mean(), "baseline_mean": b.mean(), "delta": a.mean() - b.mean(),
                         "t": float(t), "p": float(p)})
    out = pd.DataFrame(rows)
    return holm_columns(out, ["p"]) if corrected and not out.empty else out


#: randomisation-test resamples of :func:`paired_comparison` (exact when 2**n is fewer)
N_RESAMPLES = 10_000


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_comparison(a: np.ndarray, b: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, float]:
    """System A against system B on the same queries: the mean difference ``A - B``, its t
    interval, a two-sided paired t-test and a paired randomisation test.

    The t-test and its interval are ``scipy.stats.ttest_rel`` (Student, Biometrika 1908); the
    randomisation test is ``scipy.stats.permutation_test`` with ``permutation_type="samples"``,
    which swaps A and B within queries (Fisher's sign-flip test; Smucker, Allan & Carterette,
    "A Comparison of Statistical Significance Tests for Information Retrieval Evaluation", CIKM
    2007). It is exact when ``2**n <= n_resamples``, else seeded with ``seed``.

    Args:
        a: A's per-query values.
        b: B's per-query values for the same queries, in the same order.
        n_resamples: randomisation-test resamples.
        seed: seed of the resamples.
        confidence: level of the interval.

    Returns:
        ``n, mean_a, mean_b, delta, ci_low, ci_high, t, p_t, p_rand, resamples`` (``resamples``:
        the sign assignments the randomisation test used, ``2**n`` when exact). Identical samples
        give ``t = 0, p = 1`` and a zero-width interval (scipy would give NaN); fewer than two
        queries give NaN statistics.
    """
    from scipy import stats

    a, b = _paired(a, b)
    n = len(a)
    resamples = min(n_resamples, 2**n)  # scipy enumerates all sign assignments when they are fewer
    row = {"n": n, "mean_a": float(a.mean()) if n else math.nan, "mean_b": float(b.mean()) if n else math.nan,
           "delta": float((a - b).mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "t": math.nan, "p_t": math.nan, "p_rand": math.nan, "resamples": resamples}
    if n < 2:
        return row
    if np.allclose(a, b):
        return {**row, "ci_low": 0.0, "ci_high": 0.0, "t": 0.0, "p_t": 1.0, "p_rand": 1.0}
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    perm = stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                  n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return {**row, "ci_low": float(ci.low), "ci_high": float(ci.high), "t": float(res.statistic),
            "p_t": float(res.pvalue), "p_rand": float(perm.pvalue)}


def compare_pairs(per_query: dict[str, pd.DataFrame], pairs: Sequence[Sequence[str]],
                  n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """:func:`paired_comparison` of each ``(A, B)`` pair on every measure both tables hold, over
    the queries both hold.

    Args:
        per_query: system -> per-query table (index ``query_id``, one column per measure); with
            several seeds, pass the per-query mean over seeds (the query stays the unit).
        pairs: ``(A, B)`` system names; a pair naming a system missing here is skipped.
        n_resamples: randomisation-test resamples.
        seed: seed of every randomisation test (each test alone is reproducible).

    Returns:
        One row per pair and measure: ``system_a, system_b, measure`` and the statistics; not
        corrected for multiple tests (see :func:`holm_columns`).
    """
    rows = []
    for a_name, b_name in pairs:
        if a_name not in per_query or b_name not in per_query:
            continue
        a_df, b_df = per_query[a_name], per_query[b_name]
        common = a_df.index.intersection(b_df.index)
        for measure in a_df.columns.intersection(b_df.columns):
            stats_row = paired_comparison(a_df.loc[common, measure].to_numpy(), b_df.loc[common, measure].to_numpy(),
                                          n_resamples=n_resamples, seed=seed)
            rows.append({"system_a": a_name, "system_b": b_name, "measure": measure, **stats_row})
    return pd.DataFrame(rows)


def holm_columns(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Add ``<column>_holm`` for each p-value column: Holm-corrected over every row of the table
    (one family); NaN p-values stay NaN and do not count."""
    out = table.copy()
    for col in columns:
        out.insert(out.columns.get_loc(col) + 1, f"{col}_holm", holm(out[col].to_numpy(dtype=float)))
    return out
