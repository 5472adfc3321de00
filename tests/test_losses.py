"""Tests of the distillation losses: OT properties, gradients, padding, the registry contract."""

from __future__ import annotations

import math
import sys
import warnings

import ot as pot
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clirkit.errors import ClirkitError
from clirkit.losses import (
    LOSSES,
    DistillBatch,
    MSELoss,
    OTDivergenceLoss,
    OTLoss,
    build_loss,
    document_frequency,
    eps_unit,
    idf_weights,
    pairwise_cost,
    uniform_weights,
)
from clirkit.ot import sinkhorn_log

# A converged solver, for properties of the OT value itself rather than of the default schedule.
CONVERGED = dict(iters=2000, tol=1e-6)
# (cost, cost_scale, eps_scale) combinations the properties are checked on.
FORMULATIONS = [("cosine", "none", "spread"), ("cosine", "none", "cost"), ("sqeuclidean", "dim", "spread"),
                ("sqeuclidean", "dim", "median")]


def make_batch(seed: int, batch: int = 3, ls: int = 5, lt: int = 6, dim: int = 8, pad_s: int = 0,
               pad_t: int = 0, requires_grad: bool = True, dtype=torch.float32) -> DistillBatch:
    """Random batch; the last ``pad_*`` tokens are padding (weight 0) with wild embeddings."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, ls + pad_s, dim, generator=g, dtype=dtype)
    xt = torch.randn(batch, lt + pad_t, dim, generator=g, dtype=dtype)
    xs[:, ls:] *= 1e3
    xt[:, lt:] = 0  # a zero vector: the worst case for the cosine cost
    ws = torch.rand(batch, ls + pad_s, generator=g, dtype=dtype) + 0.1
    wt = torch.rand(batch, lt + pad_t, generator=g, dtype=dtype) + 0.1
    ws[:, ls:] = 0
    wt[:, lt:] = 0
    xs.requires_grad_(requires_grad)
    return DistillBatch(student_tokens=xs, student_weights=ws, student_sentence=xs[:, :ls].mean(1),
                        teacher_tokens=xt, teacher_weights=wt, teacher_sentence=xt[:, :lt].mean(1))


def pad(batch: DistillBatch, extra: int, seed: int) -> DistillBatch:
    """The same batch with ``extra`` zero-weight tokens of arbitrary embedding on both sides."""
    g = torch.Generator().manual_seed(seed)

    def grow(tokens, weights):
        junk = 100 * torch.randn(tokens.shape[0], extra, tokens.shape[2], generator=g, dtype=tokens.dtype)
        zeros = torch.zeros(weights.shape[0], extra, dtype=weights.dtype)
        return torch.cat([tokens, junk], 1), torch.cat([weights, zeros], 1)

    st_, sw = grow(batch.student_tokens, batch.student_weights)
    tt, tw = grow(batch.teacher_tokens, batch.teacher_weights)
    return DistillBatch(st_, sw, batch.student_sentence, tt, tw, batch.teacher_sentence)


# --- OT: values ---------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 8), st.integers(2, 12), st.sampled_from(FORMULATIONS))
def test_ot_of_a_cloud_with_itself_is_near_zero(seed, n, dim, formulation):
    """OT(x, x) <= eps' * log(n), eps' the eps the solver used in cost units: the identity plan is
    feasible with cost 0, and the entropic plan costs at most eps' * KL(identity / n | uniform x
    uniform) = eps' * log(n) more. eps = 0.01 (times the eps unit, itself ~ a typical cost
    difference) keeps the bound a few % of a typical cost: a loss that did not match tokens to
    themselves would exceed it (see the next test)."""
    cost, cost_scale, eps_scale = formulation
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, dim, generator=g)
    # Distinct points, so that the batch statistics are real distances, not float noise.
    assume(pairwise_cost(x, x, "sqeuclidean").add(torch.eye(n)).min() > 1e-2)
    loss = build_loss("ot", cost=cost, cost_scale=cost_scale, eps_scale=eps_scale, eps=0.01, **CONVERGED)
    ones = torch.ones(2, n)
    out = loss(DistillBatch(student_tokens=x, student_weights=ones, teacher_tokens=x.clone(), teacher_weights=ones))
    assert 0 <= out.loss.item() <= out.parts["ot_eps"] * math.log(n) + 1e-4


def test_ot_of_different_clouds_is_not_near_zero():
    """The counterpart of the property above, so that it cannot pass with a loss that is always 0."""
    b = make_batch(0)
    assert build_loss("ot", eps=0.01)(b).loss.item() > 0.3
    assert build_loss("ot", cost="sqeuclidean", eps=0.01)(b).loss.item() > 0.3


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from(FORMULATIONS))
def test_padding_does_not_change_the_loss_or_gradient(seed, extra, formulation):
    cost, cost_scale, eps_scale = formulation
    # The default schedule: padding invariance is exact, not a consequence of convergence.
    loss = build_loss("ot", cost=cost, cost_scale=cost_scale, eps_scale=eps_scale)
    plain = make_batch(seed, pad_s=1, pad_t=2)
    padded = pad(plain, extra, seed + 1)
    out_plain, out_padded = loss(plain), loss(padded)
    assert math.isclose(out_plain.parts["ot_eps"], out_padded.parts["ot_eps"], rel_tol=1e-5)
    assert math.isclose(out_plain.loss.item(), out_padded.loss.item(), rel_tol=1e-5, abs_tol=1e-6)
    (g_plain,) = torch.autograd.grad(out_plain.loss, plain.student_tokens)
    (g_padded,) = torch.autograd.grad(out_padded.loss, padded.student_tokens)
    assert torch.allclose(g_padded[:, : g_plain.shape[1]], g_plain, rtol=1e-4, atol=1e-6)
    assert (g_padded[:, g_plain.shape[1]:] == 0).all()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(FORMULATIONS))
def test_cost_is_symmetric_when_sides_and_weights_swap(seed, formulation):
    cost, cost_scale, eps_scale = formulation
    loss = build_loss("ot", cost=cost, cost_scale=cost_scale, eps_scale=eps_scale, **CONVERGED)
    b = make_batch(seed, ls=4, lt=6, pad_s=2, pad_t=1, requires_grad=False)
    swapped = DistillBatch(student_tokens=b.teacher_tokens, student_weights=b.teacher_weights,
                           teacher_tokens=b.student_tokens, teacher_weights=b.student_weights)
    assert math.isclose(loss(b).loss.item(), loss(swapped).loss.item(), rel_tol=1e-4, abs_tol=1e-5)


def test_ot_loss_is_the_mean_transport_cost_of_each_problem():
    """The loss is <P, C> averaged over the problems: check against an independent float64 solve."""
    b = make_batch(3, dtype=torch.float64, requires_grad=False)
    loss = build_loss("ot", eps_scale="cost", eps=0.05, **CONVERGED)(b).loss
    cost = 1 - F.normalize(b.student_tokens, dim=-1) @ F.normalize(b.teacher_tokens, dim=-1).transpose(1, 2)
    plan = sinkhorn_log(cost, b.student_weights, b.teacher_weights, eps=0.05, iters=5000, tol=1e-10)
    assert math.isclose(loss.item(), (plan * cost).sum((1, 2)).mean().item(), rel_tol=1e-5)


def test_empty_sentence_contributes_nothing():
    b = make_batch(1, batch=3)
    b.student_weights[1] = 0
    loss = build_loss("ot")
    out = loss(b)
    assert math.isfinite(out.loss.item())
    kept = DistillBatch(student_tokens=b.student_tokens[[0, 2]], student_weights=b.student_weights[[0, 2]],
                        teacher_tokens=b.teacher_tokens[[0, 2]], teacher_weights=b.teacher_weights[[0, 2]])
    assert math.isclose(out.loss.item(), loss(kept).loss.item(), rel_tol=1e-6)
    out.loss.backward()
    assert torch.isfinite(b.student_tokens.grad).all() and (b.student_tokens.grad[1] == 0).all()


def test_eps_units():
    """median and spread by their definitions; spread ignores row and column offsets."""
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 4, 5, generator=g, dtype=torch.float64)
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    valid[1, 3:] = False
    assert eps_unit(cost, valid, "cost") == 1
    assert eps_unit(cost, valid, "median") == cost[valid].median()
    residual = []
    for c in (cost[0], cost[1, :3]):
        residual.append(c - c.mean(1, keepdim=True) - c.mean(0, keepdim=True) + c.mean())
    expected = torch.cat([r.flatten() for r in residual]).pow(2).mean().sqrt()
    assert torch.isclose(eps_unit(cost, valid, "spread"), expected)
    offsets = torch.rand(2, 4, 1, generator=g, dtype=torch.float64) + torch.rand(2, 1, 5, generator=g,
                                                                                 dtype=torch.float64)
    assert torch.isclose(eps_unit(cost + 10 * offsets, valid, "spread"), expected)
    # One token on a side: the plan is forced, spread is 0 and the unit falls back to 1.
    assert eps_unit(cost[:, :1], valid[:, :1], "spread") == 1


# --- OT: gradients ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ot", "mse", "ot+mse", "ot-divergence", "ot-divergence+mse"])
def test_gradients_reach_only_the_student(name):
    b = make_batch(4)
    for t in (b.teacher_tokens, b.teacher_sentence, b.teacher_weights, b.student_weights):
        t.requires_grad_(True)
    out = build_loss(name)(b)
    out.loss.backward()
    assert b.student_tokens.grad is not None and b.student_tokens.grad.abs().sum() > 0
    for t in (b.teacher_tokens, b.teacher_sentence, b.teacher_weights, b.student_weights):
        assert t.grad is None


@pytest.mark.parametrize("cost,cost_scale,eps_scale", FORMULATIONS)
def test_detached_plan_gradient_is_the_constant_plan_gradient(cost, cost_scale, eps_scale):
    """The gradient with the plan held constant, written out by hand for each cost with an
    independent plan (POT's converged float64 Sinkhorn at the eps the loss reports): for
    sqeuclidean d/dx_i sum_j P_ij |x_i - y_j|^2 / s = (2 / s) sum_j P_ij (x_i - y_j); for cosine
    d/dx_i sum_j P_ij (1 - u_i . v_j) = -(I - u_i u_i^T) sum_j P_ij v_j / |x_i| (u, v unit vectors).
    A gradient through the eps unit, a missing 1/B, a wrong scale or a plan that ignored the
    weights would each miss it."""
    b = make_batch(5, requires_grad=True)
    loss = build_loss("ot", cost=cost, cost_scale=cost_scale, eps_scale=eps_scale, **CONVERGED)
    out = loss(b)
    (grad,) = torch.autograd.grad(out.loss, b.student_tokens)

    x, y = b.student_tokens.detach().double(), b.teacher_tokens.double()
    scale = x.shape[-1] if cost_scale == "dim" else 1.0
    c = pairwise_cost(x, y, cost) / scale
    expected = torch.zeros_like(x)
    for k in range(x.shape[0]):
        wa, wb = b.student_weights[k].double().numpy(), b.teacher_weights[k].double().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plan = torch.from_numpy(pot.sinkhorn(wa / wa.sum(), wb / wb.sum(), c[k].numpy(), out.parts["ot_eps"],
                                                 method="sinkhorn_log", numItermax=50_000, stopThr=1e-9))
        if cost == "sqeuclidean":
            expected[k] = 2 / scale * (plan.sum(1)[:, None] * x[k] - plan @ y[k])
        else:
            u, v = F.normalize(x[k], dim=-1), F.normalize(y[k], dim=-1)
            pulled = plan @ v
            expected[k] = -(pulled - (pulled * u).sum(1, keepdim=True) * u) / x[k].norm(dim=1, keepdim=True)
    expected /= x.shape[0]
    assert torch.allclose(grad.double(), expected, rtol=2e-3, atol=1e-6)


def test_grad_plan_differentiates_through_sinkhorn():
    b = make_batch(6, batch=2, ls=3, lt=4, dim=4, dtype=torch.float64)
    # eps in cost units: a batch-statistic unit is detached by design, which gradcheck would flag.
    fixed = dict(cost="sqeuclidean", cost_scale="dim", eps_scale="cost", eps=0.2, iters=15, anneal_iters=5)
    loss = build_loss("ot", **fixed, grad_plan=True)

    def value(x):
        return loss(DistillBatch(student_tokens=x, student_weights=b.student_weights,
                                 teacher_tokens=b.teacher_tokens, teacher_weights=b.teacher_weights)).loss

    assert torch.autograd.gradcheck(value, (b.student_tokens,), eps=1e-6, atol=1e-5)
    # ... and it is not the constant-plan gradient, which ignores how the plan moves.
    detached = build_loss("ot", **fixed)
    g_through = torch.autograd.grad(value(b.student_tokens), b.student_tokens)[0]
    g_const = torch.autograd.grad(detached(b).loss, b.student_tokens)[0]
    assert not torch.allclose(g_through, g_const, rtol=1e-3)


# --- mse and ot+mse -------------------------------------------------------------------------


def test_mse_is_the_mean_over_batch_and_dimensions():
    """Written out, not compared with F.mse_loss (which the loss calls): a sum, a per-row mean
    or an un-squared difference would each give another number, and so would swapped sides
    only through the gradient, which must reach the student alone."""
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 4.0]], requires_grad=True)
    out = build_loss("mse")(DistillBatch(student_sentence=student, teacher_sentence=teacher))
    # squared differences 0, 4, 9 | 4, 4, 0: sum 21 over 2 x 3 entries
    assert out.loss.item() == pytest.approx(21 / 6)
    assert out.parts == {"mse": pytest.approx(3.5)}
    out.loss.backward()
    assert torch.allclose(student.grad, 2 * (student - teacher).detach() / 6)
    assert teacher.grad is None


@pytest.mark.parametrize("ot_weight,mse_weight", [(1.0, 1.0), (0.3, 2.0), (0.0, 1.0), (2.0, 0.0)])
def test_ot_plus_mse_is_the_weighted_sum(ot_weight, mse_weight):
    b = make_batch(8)
    both = build_loss("ot+mse", ot_weight=ot_weight, mse_weight=mse_weight, cost="sqeuclidean", eps=0.1)
    ot = build_loss("ot", cost="sqeuclidean", eps=0.1)(b).loss
    mse = MSELoss()(b).loss
    out = both(b)
    assert torch.allclose(out.loss, ot_weight * ot + mse_weight * mse)
    assert out.parts["ot"] == pytest.approx(ot.item()) and out.parts["mse"] == pytest.approx(mse.item())


# --- the registry contract -------------------------------------------------------------------


def test_registered_losses():
    assert LOSSES.names() == ["mse", "ot", "ot+mse", "ot-divergence", "ot-divergence+mse"]


# (loss, parameter, a non-default value): each must change the output, the gradient or the
# logged parts, which is what "every constructor argument reaches forward" means (an ignored
# parameter would leave all three bit-identical: the computation is deterministic).
PARAM_CHANGES = [
    ("ot", "cost", "sqeuclidean"), ("ot", "cost_scale", 2.0), ("ot", "eps_scale", "median"), ("ot", "eps", 0.5),
    ("ot", "iters", 30),
    ("ot", "anneal_from", 10.0), ("ot", "anneal_iters", 0), ("ot", "overrelax", 1.0), ("ot", "tol", 0.5),
    ("ot", "grad_plan", True), ("ot+mse", "ot_weight", 0.5), ("ot+mse", "mse_weight", 3.0),
    ("ot+mse", "eps", 0.5),  # the OT parameters of ot+mse are OTLoss's: one shows they are passed on
    ("ot-divergence", "cost", "sqeuclidean"), ("ot-divergence", "blur", 0.3), ("ot-divergence", "scaling", 0.5),
    ("ot-divergence", "p", 1), ("ot-divergence", "reach", 0.5),
    ("ot-divergence+mse", "ot_weight", 0.5), ("ot-divergence+mse", "mse_weight", 3.0),
    ("ot-divergence+mse", "blur", 0.3),
]
# geomloss' other backend needs pykeops (not a dependency): test_online_backend_needs_pykeops covers it.
UNCOVERED = {"ot-divergence": {"backend"}}


def test_every_parameter_is_covered():
    assert {p for n, p, _ in PARAM_CHANGES if n == "ot"} == set(OTLoss.param_names())
    assert {p for n, p, _ in PARAM_CHANGES if n == "ot+mse"} >= {"ot_weight", "mse_weight"}
    assert ({p for n, p, _ in PARAM_CHANGES if n == "ot-divergence"} | UNCOVERED["ot-divergence"]
            == set(OTDivergenceLoss.param_names()))
    assert {p for n, p, _ in PARAM_CHANGES if n == "ot-divergence+mse"} >= {"ot_weight", "mse_weight"}
    assert MSELoss.param_names() == []


@pytest.mark.parametrize("name,param,value", PARAM_CHANGES)
def test_every_parameter_reaches_forward(name, param, value):
    def run(**params):
        b = make_batch(9)
        out = build_loss(name, **params)(b)
        (grad,) = torch.autograd.grad(out.loss, b.student_tokens)
        return out.loss.detach(), grad, out.parts

    base_loss, base_grad, base_parts = run()
    new_loss, new_grad, new_parts = run(**{param: value})
    assert not (torch.equal(base_loss, new_loss) and torch.equal(base_grad, new_grad) and base_parts == new_parts)


@pytest.mark.parametrize("name,params", [
    ("mse", {}), ("ot", {"cost": "sqeuclidean", "eps": 0.1}),
    ("ot+mse", {"mse_weight": 0.5, "cost_scale": 2.5, "eps_scale": "cost", "tol": 1e-4}),
])
def test_as_config_resolves_everything_and_rebuilds(name, params):
    config = build_loss(name, **params).as_config()
    assert config["name"] == name
    assert sorted(config["params"]) == sorted(LOSSES.get(name).param_names())
    assert "auto" not in config["params"].values()
    assert config["backend"] == (None if name == "mse" else "clirkit.ot.sinkhorn_log")
    assert build_loss(config["name"], **config["params"]).as_config() == config


def test_auto_cost_scale_is_resolved_per_cost():
    assert build_loss("ot").as_config()["params"]["cost_scale"] == "none"
    assert build_loss("ot", cost="sqeuclidean").as_config()["params"]["cost_scale"] == "dim"


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ClirkitError, match="unknown loss 'sinkhorn'.*mse, ot, ot\\+mse"):
        build_loss("sinkhorn")


def test_unknown_parameter_lists_the_accepted_ones():
    with pytest.raises(ClirkitError) as err:
        build_loss("ot+mse", epsilon=0.1)
    message = str(err.value)
    assert "epsilon" in message
    for accepted in ("ot_weight", "mse_weight", "eps", "iters", "cost", "grad_plan"):
        assert accepted in message
    with pytest.raises(ClirkitError, match="takes no parameters"):
        build_loss("mse", eps=0.1)


@pytest.mark.parametrize("name,params,fragment", [
    ("ot", {"cost": "l1"}, "unknown cost 'l1'"),
    ("ot", {"cost_scale": "median"}, "cost_scale"),
    ("ot", {"eps_scale": "std"}, "eps_scale"),
    ("ot", {"cost_scale": -1.0}, "cost_scale"),
    ("ot", {"eps": 0}, "eps"),
    ("ot", {"anneal_iters": 160}, "anneal_iters"),
    ("ot", {"overrelax": 2.0}, "overrelax"),
    ("ot", {"grad_plan": "yes"}, "grad_plan"),
    ("ot+mse", {"ot_weight": -1}, "ot_weight"),
    ("ot+mse", {"ot_weight": 0, "mse_weight": 0}, "both 0"),
])
def test_bad_values_are_user_errors(name, params, fragment):
    with pytest.raises(ClirkitError, match=fragment):
        build_loss(name, **params)


# --- the batch ------------------------------------------------------------------------------


def test_batch_checks_shapes():
    b = make_batch(0)
    with pytest.raises(ValueError, match="batch size"):
        DistillBatch(student_sentence=b.student_sentence, teacher_sentence=b.teacher_sentence[:2])
    with pytest.raises(ValueError, match="dimension"):
        DistillBatch(student_sentence=b.student_sentence, teacher_sentence=b.teacher_sentence[:, :3])
    with pytest.raises(ValueError, match="student_weights"):
        DistillBatch(student_tokens=b.student_tokens, student_weights=b.student_weights[:, :2])
    with pytest.raises(ValueError, match="teacher_tokens"):
        build_loss("ot")(DistillBatch(student_tokens=b.student_tokens, student_weights=b.student_weights))


# --- token weights --------------------------------------------------------------------------


def test_idf_weights():
    ids = torch.tensor([[101, 5, 6, 5, 102, 0], [101, 6, 7, 102, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]).bool()
    mask = attention & (ids != 101) & (ids != 102)
    df = document_frequency(ids, mask, vocab_size=200)
    assert df[5] == 1 and df[6] == 2 and df[7] == 1 and df[101] == 0 and df.sum() == 4
    w = idf_weights(ids, mask, df, n_docs=2)
    assert (w[~mask] == 0).all()
    assert w[0, 1] == pytest.approx(math.log(3 / 2) + 1) and w[0, 2] == pytest.approx(1.0)
    assert w[0, 1] > w[0, 2]  # rarer token, larger weight
    assert torch.equal(uniform_weights(mask), mask.float())
    with pytest.raises(ValueError, match="outside df"):
        idf_weights(ids, mask, df[:50], n_docs=2)
    with pytest.raises(ValueError, match="n_docs"):
        idf_weights(ids, mask, df, n_docs=1)


def test_ot_loss_with_idf_weights_runs_and_excludes_special_tokens():
    ids = torch.tensor([[101, 5, 6, 102], [101, 7, 102, 0]])
    mask = (ids > 0) & (ids != 101) & (ids != 102)
    w = idf_weights(ids, mask, document_frequency(ids, mask, 200), n_docs=2)
    x = torch.randn(2, 4, 8, requires_grad=True)
    b = DistillBatch(student_tokens=x, student_weights=w, teacher_tokens=torch.randn(2, 5, 8),
                     teacher_weights=torch.ones(2, 5))
    OTLoss()(b).loss.backward()
    assert (x.grad[:, 0] == 0).all() and (x.grad[0, 3] == 0).all() and x.grad[0, 1].abs().sum() > 0


# --- ot-divergence (geomloss) ---------------------------------------------------------------


def debiased_divergence(x, wx, y, wy, eps: float, cost: str) -> torch.Tensor:
    """S = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2 per problem, from converged float64
    plans of clirkit's solver (itself checked against POT in test_ot.py), OT_eps = <P, C> + eps KL(P | ab)."""
    scale = x.shape[-1] if cost == "sqeuclidean" else 1

    def ot_eps(u, wu, v, wv):
        c = pairwise_cost(u.double(), v.double(), cost) / scale
        plan = sinkhorn_log(c, wu.double(), wv.double(), eps=eps, iters=20_000, anneal_iters=20, tol=1e-10)
        pu, pv = wu.double() / wu.sum(1, keepdim=True), wv.double() / wv.sum(1, keepdim=True)
        log_ratio = (plan / (pu[:, :, None] * pv[:, None, :]).clamp_min(1e-300)).clamp_min(1e-300).log()
        return (plan * c).sum((1, 2)) + eps * torch.where(plan > 0, plan * log_ratio, 0).sum((1, 2))

    return ot_eps(x, wx, y, wy) - (ot_eps(x, wx, x, wx) + ot_eps(y, wy, y, wy)) / 2


@pytest.mark.parametrize("cost", ["cosine", "sqeuclidean"])
def test_divergence_is_the_debiased_sinkhorn_divergence_in_the_documented_units(cost):
    """The value against S computed from its definition with the documented cost (1 - cos, or
    |x - y|^2 / D) at eps = blur^2: geomloss' own cost |x - y|^2 / 2 on the raw tokens, a
    missing debiasing, or weights that kept the padding would each be off by far more."""
    b = make_batch(11, batch=3, ls=4, lt=5, dim=6, pad_s=2, pad_t=1, requires_grad=False)
    blur = 0.3
    out = build_loss("ot-divergence", cost=cost, blur=blur, scaling=0.99)(b)
    expected = debiased_divergence(b.student_tokens, b.student_weights, b.teacher_tokens, b.teacher_weights,
                                   blur**2, cost)
    assert out.parts["otd_eps"] == pytest.approx(blur**2)
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-3)
    assert expected.min() > 0.05  # far from 0: the comparison is not between two near-zero numbers


two_clouds = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1), "ls": st.integers(1, 6), "lt": st.integers(1, 6), "dim": st.integers(2, 10),
    "cost": st.sampled_from(["cosine", "sqeuclidean"]), "blur": st.sampled_from([0.05, 0.1, 0.3]),
})


@settings(max_examples=20, deadline=None)
@given(two_clouds)
def test_divergence_of_a_cloud_with_itself_is_zero(spec):
    b = make_batch(spec["seed"], batch=2, ls=spec["ls"], lt=spec["lt"], dim=spec["dim"], requires_grad=False)
    loss = build_loss("ot-divergence", cost=spec["cost"], blur=spec["blur"])
    same = DistillBatch(student_tokens=b.student_tokens, student_weights=b.student_weights,
                        teacher_tokens=b.student_tokens.clone(), teacher_weights=b.student_weights.clone())
    assert abs(loss(same).loss.item()) < 1e-5


@pytest.mark.parametrize("cost", ["cosine", "sqeuclidean"])
def test_divergence_of_different_clouds_is_positive(cost):
    """A fixed example: random single points in 2-d can be almost parallel, so the property
    above cannot also ask for a floor on different clouds."""
    b = make_batch(3, batch=2, ls=4, lt=5, dim=8, requires_grad=False)
    assert build_loss("ot-divergence", cost=cost, blur=0.05)(b).loss.item() > 1e-2


@settings(max_examples=20, deadline=None)
@given(two_clouds)
def test_divergence_is_symmetric_and_nonnegative(spec):
    b = make_batch(spec["seed"], batch=2, ls=spec["ls"], lt=spec["lt"], dim=spec["dim"], pad_s=1, pad_t=2,
                   requires_grad=False)
    loss = build_loss("ot-divergence", cost=spec["cost"], blur=spec["blur"])
    swapped = DistillBatch(student_tokens=b.teacher_tokens, student_weights=b.teacher_weights,
                           teacher_tokens=b.student_tokens, teacher_weights=b.student_weights)
    forward, backward = loss(b).loss.item(), loss(swapped).loss.item()
    assert forward == pytest.approx(backward, rel=1e-4, abs=1e-6)
    assert forward >= -1e-6


@settings(max_examples=20, deadline=None)
@given(two_clouds, st.integers(1, 4))
def test_divergence_ignores_zero_weight_tokens(spec, extra):
    """Padding of any content (here up to 100x the real tokens' scale) changes neither the value
    nor the gradient of the real tokens, and gets no gradient itself. In float64: in float32 the
    iterative Sinkhorn solver's rounding alone moves small gradients by ~1e-4 relative."""
    plain = make_batch(spec["seed"], batch=2, ls=spec["ls"], lt=spec["lt"], dim=spec["dim"], dtype=torch.float64)
    padded = pad(plain, extra, spec["seed"] + 1)
    padded.student_tokens.requires_grad_(True)
    loss = build_loss("ot-divergence", cost=spec["cost"], blur=spec["blur"])
    out_plain, out_padded = loss(plain), loss(padded)
    assert out_padded.loss.item() == pytest.approx(out_plain.loss.item(), rel=1e-5, abs=1e-6)
    (g_plain,) = torch.autograd.grad(out_plain.loss, plain.student_tokens)
    (g_padded,) = torch.autograd.grad(out_padded.loss, padded.student_tokens)
    assert torch.allclose(g_padded[:, : g_plain.shape[1]], g_plain, rtol=1e-7, atol=1e-10)
    assert (g_padded[:, g_plain.shape[1]:] == 0).all()


def test_divergence_gradient_moves_the_student_towards_the_teacher():
    """A small step against the gradient lowers the divergence (the gradient flows and has the right sign)."""
    b = make_batch(12, requires_grad=True)
    loss = build_loss("ot-divergence")
    before = loss(b).loss
    (grad,) = torch.autograd.grad(before, b.student_tokens)
    assert grad.abs().sum() > 0
    stepped = DistillBatch(student_tokens=(b.student_tokens - 0.5 * grad / grad.norm()).detach(),
                           student_weights=b.student_weights, teacher_tokens=b.teacher_tokens,
                           teacher_weights=b.teacher_weights)
    assert loss(stepped).loss.item() < before.item()


def test_divergence_empty_sentence_contributes_nothing():
    b = make_batch(13, batch=3)
    b.teacher_weights[1] = 0
    loss = build_loss("ot-divergence")
    out = loss(b)
    kept = DistillBatch(student_tokens=b.student_tokens[[0, 2]], student_weights=b.student_weights[[0, 2]],
                        teacher_tokens=b.teacher_tokens[[0, 2]], teacher_weights=b.teacher_weights[[0, 2]])
    assert out.loss.item() == pytest.approx(loss(kept).loss.item(), rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(b.student_tokens.grad).all() and (b.student_tokens.grad[1] == 0).all()


@pytest.mark.parametrize("ot_weight,mse_weight", [(1.0, 1.0), (0.3, 2.0), (2.0, 0.0)])
def test_ot_divergence_plus_mse_is_the_weighted_sum(ot_weight, mse_weight):
    b = make_batch(14)
    both = build_loss("ot-divergence+mse", ot_weight=ot_weight, mse_weight=mse_weight, cost="sqeuclidean")
    otd = build_loss("ot-divergence", cost="sqeuclidean")(b).loss
    mse = MSELoss()(b).loss
    out = both(b)
    assert torch.allclose(out.loss, ot_weight * otd + mse_weight * mse)
    assert out.parts["ot_divergence"] == pytest.approx(otd.item()) and out.parts["mse"] == pytest.approx(mse.item())


@pytest.mark.parametrize("name", ["ot-divergence", "ot-divergence+mse"])
def test_divergence_config_records_the_pinned_backend_and_rebuilds(name):
    config = build_loss(name, blur=0.2).as_config()
    assert config["params"]["backend"] == "tensorized"
    assert {k: config["params"][k] for k in ("blur", "scaling", "p", "reach")} == {
        "blur": 0.2, "scaling": 0.9, "p": 2, "reach": None}
    assert config["backend"] == "geomloss.SamplesLoss(sinkhorn, debias=True, backend=tensorized)"
    assert sorted(config["params"]) == sorted(LOSSES.get(name).param_names())
    assert build_loss(config["name"], **config["params"]).as_config() == config


@pytest.mark.parametrize("params,fragment", [
    ({"cost": "l1"}, "unknown cost 'l1'"), ({"blur": 0}, "blur"), ({"blur": "big"}, "blur"),
    ({"scaling": 1.0}, "scaling"), ({"p": 3}, "p must be 1 or 2"), ({"reach": -1.0}, "reach"),
    ({"backend": "auto"}, "never 'auto'"), ({"ot_weight": 0, "mse_weight": 0}, "both 0"),
])
def test_bad_divergence_values_are_user_errors(params, fragment):
    name = "ot-divergence+mse" if "ot_weight" in params else "ot-divergence"
    with pytest.raises(ClirkitError, match=fragment):
        build_loss(name, **params)


def test_online_backend_needs_pykeops(monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeops", None)  # an import of a None entry raises ImportError
    with pytest.raises(ClirkitError, match="backend 'online' needs pykeops"):
        build_loss("ot-divergence", backend="online")


@pytest.mark.parametrize("name", ["ot-divergence", "ot-divergence+mse"])
def test_missing_geomloss_is_one_line_user_error(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "geomloss", None)
    with pytest.raises(ClirkitError) as err:
        build_loss(name)
    assert err.value.one_line() == f"--loss {name} needs geomloss: pip install geomloss"
    # the other losses do not need it
    assert build_loss("ot").backend() == "clirkit.ot.sinkhorn_log"


def test_ot_divergence_leaves_no_grad_mode_on():
    """geomloss turns autograd on inside its loop; under torch.no_grad() the loss must not leak that."""
    torch.manual_seed(0)
    loss = build_loss("ot-divergence")
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    batch = DistillBatch(student_tokens=x, student_weights=uniform_weights(mask), student_sentence=x.mean(1),
                         teacher_tokens=x.flip(1), teacher_weights=uniform_weights(mask),
                         teacher_sentence=x.mean(1))
    with torch.no_grad():
        loss(batch)
        assert not torch.is_grad_enabled()
