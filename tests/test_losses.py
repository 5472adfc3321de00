"""Tests of the distillation losses: OT properties, gradients, padding, the registry contract."""

from __future__ import annotations

import math

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
        junk = 100 * torch.randn(tokens.shape[0], extra, tokens.shape[2], generator=g)
        return torch.cat([tokens, junk], 1), torch.cat([weights, torch.zeros(weights.shape[0], extra)], 1)

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


@pytest.mark.parametrize("name", ["ot", "mse", "ot+mse"])
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
    b = make_batch(5)
    loss = build_loss("ot", cost=cost, cost_scale=cost_scale, eps_scale=eps_scale)
    (grad,) = torch.autograd.grad(loss(b).loss, b.student_tokens)

    x = b.student_tokens
    c = pairwise_cost(x, b.teacher_tokens, cost) / (x.shape[-1] if cost_scale == "dim" else 1)
    valid = (b.student_weights > 0)[:, :, None] & (b.teacher_weights > 0)[:, None, :]
    with torch.no_grad():
        plan = sinkhorn_log(c / eps_unit(c, valid, eps_scale), b.student_weights, b.teacher_weights,
                            **loss.sinkhorn.as_dict())
    (expected,) = torch.autograd.grad((plan * c).sum() / x.shape[0], x)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7)


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


def test_mse_is_torch_mse():
    b = make_batch(7)
    assert torch.equal(build_loss("mse")(b).loss, F.mse_loss(b.student_sentence, b.teacher_sentence))


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
    assert LOSSES.names() == ["mse", "ot", "ot+mse"]


# (loss, parameter, a non-default value): each must change the output, the gradient or the
# logged parts, which is what "every constructor argument reaches forward" means (an ignored
# parameter would leave all three bit-identical: the computation is deterministic).
PARAM_CHANGES = [
    ("ot", "cost", "sqeuclidean"), ("ot", "cost_scale", 2.0), ("ot", "eps_scale", "median"), ("ot", "eps", 0.5),
    ("ot", "iters", 30),
    ("ot", "anneal_from", 10.0), ("ot", "anneal_iters", 0), ("ot", "overrelax", 1.0), ("ot", "tol", 0.5),
    ("ot", "grad_plan", True), ("ot+mse", "ot_weight", 0.5), ("ot+mse", "mse_weight", 3.0),
    ("ot+mse", "eps", 0.5),  # the OT parameters of ot+mse are OTLoss's: one shows they are passed on
]


def test_every_parameter_is_covered():
    assert {p for n, p, _ in PARAM_CHANGES if n == "ot"} == set(OTLoss.param_names())
    assert {p for n, p, _ in PARAM_CHANGES if n == "ot+mse"} >= {"ot_weight", "mse_weight"}
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
