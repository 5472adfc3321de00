"""Tests of the batched log-domain Sinkhorn solver against its definition and against POT."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot as pot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clirkit.errors import ClirkitError
from clirkit.ot import SinkhornConfig, sinkhorn_log

# A converged solve: the properties below are about the fixed point, not about how many
# iterations the defaults spend (bench/bench_ot.py measures that on real token clouds).
CONVERGED = dict(iters=3000, anneal_iters=10, tol=1e-6)


def make_problem(seed: int, batch: int, n: int, m: int, pad_n: int = 0, pad_m: int = 0,
                 weights: str = "random", dtype=torch.float32):
    """Random cosine-like costs in [0, 2] with optional zero-weight padding at the end."""
    g = torch.Generator().manual_seed(seed)
    cost = 2 * torch.rand(batch, n + pad_n, m + pad_m, generator=g, dtype=dtype)
    if weights == "uniform":
        a, b = torch.ones(batch, n + pad_n, dtype=dtype), torch.ones(batch, m + pad_m, dtype=dtype)
    else:
        # Spread over four orders of magnitude: tiny weights are where marginals go wrong first.
        a = 10 ** (-4 * torch.rand(batch, n + pad_n, generator=g, dtype=dtype))
        b = 10 ** (-4 * torch.rand(batch, m + pad_m, generator=g, dtype=dtype))
    a[:, n:] = 0
    b[:, m:] = 0
    # Padding may hold anything, including values no real cost has.
    cost[:, n:, :] = 1e6
    cost[:, :, m:] = -1e6
    return cost, a, b


def normalised(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum(-1, keepdim=True)


problems = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "batch": st.integers(1, 3),
    "n": st.integers(1, 7),
    "m": st.integers(1, 7),
    "pad_n": st.integers(0, 3),
    "pad_m": st.integers(0, 3),
    "weights": st.sampled_from(["random", "uniform"]),
})


@settings(max_examples=25, deadline=None)
@given(problems, st.sampled_from([0.05, 0.1]))
def test_marginals_match_weights_and_padding_gets_no_mass(spec, eps):
    cost, a, b = make_problem(**spec)
    n, m = spec["n"], spec["m"]
    plan, diag = sinkhorn_log(cost, a, b, eps=eps, **CONVERGED, return_diagnostics=True)
    assert torch.isfinite(plan).all()
    row_err = (plan.sum(2) - normalised(a)).abs().sum(-1)
    col_err = (plan.sum(1) - normalised(b)).abs().sum(-1)
    assert row_err.max() < 1e-3 and col_err.max() < 1e-3
    assert torch.allclose(diag.marginal_err_a, row_err, atol=1e-6)
    assert torch.allclose(diag.marginal_err_b, col_err, atol=1e-6)
    # Exactly zero, not merely small: padded tokens must not receive any gradient either.
    assert (plan[:, n:, :] == 0).all() and (plan[:, :, m:] == 0).all()


@settings(max_examples=25, deadline=None)
@given(problems)
def test_padding_does_not_change_the_plan(spec):
    """The padded problem's plan, restricted to the real tokens, is the unpadded plan; this
    holds at the default (unconverged) schedule too, since padding contributes exact zeros
    (only the summation order of the log-sum-exp differs: float32 rounding)."""
    cost, a, b = make_problem(**spec)
    n, m = spec["n"], spec["m"]
    padded = sinkhorn_log(cost, a, b)
    plain = sinkhorn_log(cost[:, :n, :m].contiguous(), a[:, :n].contiguous(), b[:, :m].contiguous())
    assert (padded[:, :n, :m] - plain).abs().sum((1, 2)).max() < 1e-5


def pot_sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float) -> list[np.ndarray]:
    """POT's log-domain Sinkhorn plans, per problem, in float64; a POT non-convergence
    warning fails the test, so the reference is always converged (to a 1e-7 marginal error)."""
    plans = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for c, x, y in zip(cost.double().numpy(), normalised(a).double().numpy(), normalised(b).double().numpy(),
                           strict=True):
            plans.append(pot.sinkhorn(x, y, c, eps, method="sinkhorn_log", numItermax=20_000, stopThr=1e-7))
    return plans


def pot_emd(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """POT's exact (unregularised) transport cost per problem."""
    return np.array([pot.emd2(x, y, c) for c, x, y in zip(
        cost.double().numpy(), normalised(a).double().numpy(), normalised(b).double().numpy(), strict=True)])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(2, 6), st.sampled_from([0.05, 0.1, 0.5]),
       st.sampled_from([1.0, 1.7]))
def test_matches_pot_converged_sinkhorn(seed, n, m, eps, overrelax):
    """Plain and over-relaxed iterations reach POT's fixed point (plan and cost)."""
    cost, a, b = make_problem(seed, 2, n, m, dtype=torch.float64)
    plan = sinkhorn_log(cost, a, b, eps=eps, iters=5000, anneal_iters=10, overrelax=overrelax, tol=1e-10)
    ref = pot_sinkhorn(cost, a, b, eps)
    for ours, theirs, c in zip(plan.numpy(), ref, cost.numpy(), strict=True):
        assert np.abs(ours - theirs).sum() < 1e-5
        assert abs((ours * c).sum() - (theirs * c).sum()) < 1e-6


def token_clouds(seed: int, batch: int, n: int, m: int, dim: int = 16) -> torch.Tensor:
    """Cosine costs between clouds where each of the n student tokens has a noisy teacher
    counterpart among the m: the structure of translated sentences, unlike i.i.d. costs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, n, dim, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(batch, m, dim, generator=g), dim=-1)
    y[:, :n] = torch.nn.functional.normalize(x + 0.3 * torch.randn(batch, n, dim, generator=g), dim=-1)
    return 1 - x @ y.transpose(1, 2)


def test_default_schedule_in_float32_is_close_to_pot():
    """The defaults (50 iterations, float32, eps 0.05) on token-like problems with idf-like
    weights: transport cost within 1e-4 of POT's converged value at the same eps."""
    g = torch.Generator().manual_seed(1)
    cost = token_clouds(0, 4, 8, 10)
    a, b = 1 + 9 * torch.rand(4, 8, generator=g), 1 + 9 * torch.rand(4, 10, generator=g)
    plan, diag = sinkhorn_log(cost, a, b, return_diagnostics=True)
    assert diag.marginal_err_a.max() < 1e-3
    ref = [(p * c).sum() for p, c in zip(pot_sinkhorn(cost, a, b, 0.05), cost.double().numpy(), strict=True)]
    assert np.allclose((plan * cost).sum((1, 2)).numpy(), ref, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(2, 6))
def test_small_eps_is_close_to_exact_emd(seed, n, m):
    """0 <= <P_eps, C> - EMD <= eps * log(min(n, m)): the entropic plan is feasible (so it cannot
    beat EMD) and its cost exceeds EMD by at most eps * KL(P* | a b^T) <= eps * log min(n, m)."""
    eps = 0.01
    cost, a, b = make_problem(seed, 2, n, m, dtype=torch.float64)
    plan = sinkhorn_log(cost, a, b, eps=eps, iters=20_000, anneal_iters=20, tol=1e-9)
    gap = (plan * cost).sum((1, 2)).numpy() - pot_emd(cost, a, b)
    assert (gap > -1e-6).all()
    assert (gap <= eps * math.log(min(n, m)) + 1e-6).all()


def test_gradient_through_the_iterations_is_correct():
    cost, a, b = make_problem(3, 2, 3, 4, pad_m=1, dtype=torch.float64)
    cost = cost.clone().requires_grad_(True)
    weight = torch.rand(cost.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def f(c):
        return (sinkhorn_log(c, a, b, eps=0.2, iters=15, anneal_iters=5) * weight).sum()

    assert torch.autograd.gradcheck(f, (cost,), eps=1e-6, atol=1e-5)


def test_empty_problem_gets_a_zero_plan():
    cost, a, b = make_problem(0, 3, 4, 5)
    a[1] = 0
    b[2] = 0
    plan, diag = sinkhorn_log(cost, a, b, return_diagnostics=True)
    assert torch.isfinite(plan).all()
    assert (plan[1] == 0).all() and (plan[2] == 0).all()
    assert diag.nonempty.tolist() == [True, False, False]
    assert torch.isclose(plan[0].sum(), torch.tensor(1.0))


def test_tol_stops_early_and_reports():
    cost, a, b = make_problem(5, 4, 6, 6)
    plan, diag = sinkhorn_log(cost, a, b, eps=0.1, iters=1000, anneal_iters=10, tol=1e-4, return_diagnostics=True)
    assert 10 < diag.iters < 1000
    assert diag.converged is True and diag.marginal_err_a.max() < 1e-4
    assert diag.eps_final == 0.1
    _, fixed = sinkhorn_log(cost, a, b, eps=0.1, iters=12, anneal_iters=10, return_diagnostics=True)
    assert fixed.iters == 12 and fixed.converged is None


def test_half_precision_input_is_solved_in_float32():
    cost, a, b = make_problem(2, 2, 5, 6)
    plan = sinkhorn_log(cost.half(), a.half(), b.half())
    assert plan.dtype == torch.float32
    assert torch.allclose(plan, sinkhorn_log(cost.half().float(), a.half().float(), b.half().float()))


def test_schedule_is_geometric_then_constant():
    config = SinkhornConfig(eps=0.01, iters=50, anneal_from=1.0, anneal_iters=30)
    sched = config.schedule()
    assert len(sched) == 50 and sched[0] == 1.0 and sched[29:] == [0.01] * 21
    ratios = np.array(sched[1:30]) / np.array(sched[:29])
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1
    assert SinkhornConfig(eps=2.0, anneal_from=1.0).schedule() == [2.0] * 50
    assert SinkhornConfig(anneal_iters=0).schedule() == [0.05] * 50
    assert SinkhornConfig(**config.as_dict()) == config


@pytest.mark.parametrize("kwargs", [
    {"eps": 0.0}, {"eps": float("nan")}, {"iters": 0}, {"iters": 2.5}, {"anneal_iters": 51},
    {"anneal_iters": -1}, {"anneal_from": -1.0}, {"tol": 0.0},
])
def test_bad_config_is_a_user_error(kwargs):
    with pytest.raises(ClirkitError) as err:
        SinkhornConfig(**kwargs)
    assert next(iter(kwargs)) in str(err.value)


def test_bad_inputs_are_rejected():
    cost, a, b = make_problem(0, 2, 3, 4)
    with pytest.raises(ValueError, match="expected cost"):
        sinkhorn_log(cost[0], a[0], b[0])
    with pytest.raises(ValueError, match="do not match"):
        sinkhorn_log(cost, a[:, :2], b)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn_log(cost, -a, b)


def test_entropic_value_agrees_with_geomloss():
    """The conventions bench/bench_ot.py part (d) relies on: on unit vectors geomloss' p=2 cost
    |x - y|^2 / 2 is 1 - cos and its eps is blur^2, so its (non-debiased) OT_eps value equals the
    dual value <a, f> + <b, g> of this solver's converged potentials at eps = blur^2. A factor 2
    in the cost or eps = blur would change the value by far more than the tolerance."""
    from geomloss import SamplesLoss

    g = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(2, 5, 6, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(2, 7, 6, generator=g, dtype=torch.float64), dim=-1)
    a, b = normalised(torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.1), normalised(torch.ones(2, 7,
                                                                                                   dtype=torch.float64))
    eps = 0.1
    _, diag = sinkhorn_log(1 - x @ y.transpose(1, 2), a, b, eps=eps, iters=5000, tol=1e-12, return_diagnostics=True)
    ours = (a * diag.f).sum(1) + (b * diag.g).sum(1)
    theirs = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps), scaling=0.999, diameter=2.0, debias=False,
                         backend="tensorized")(a, x, b, y)
    assert torch.allclose(ours, theirs, rtol=1e-4)
    assert (ours > 0.5).all()  # typical 1 - cos of random directions: not a comparison of two zeros
