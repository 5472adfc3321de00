"""Distillation losses (OPTICAL token-level OT, the debiased Sinkhorn divergence, sentence-level MSE,
and sums of a token term and MSE), registered by name.

Every loss is an ``nn.Module`` whose constructor arguments all reach ``forward`` (house rule
5), takes one :class:`DistillBatch` and returns a :class:`LossOutput` whose ``parts`` a
training loop can log. :func:`build_loss` validates parameters against the class and
:meth:`DistillLoss.as_config` records every resolved parameter (and the pinned OT backend)
for the experiment manifest.

The teacher is frozen: its tensors and the token weights are detached here, so a caller that
forgets ``torch.no_grad()`` around the teacher still trains only the student.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clirkit.errors import ClirkitError
from clirkit.ot import BACKEND, SinkhornConfig, sinkhorn_log
from clirkit.registry import Registry

LOSSES: Registry[type[DistillLoss]] = Registry("loss")


@dataclass
class DistillBatch:
    """One batch of aligned sentence pairs, as every loss consumes it.

    Student tensors come from the student encoder on the foreign sentences and carry grad;
    teacher tensors come from the frozen English teacher (typically cached) and do not.
    Token weights are non-negative; special and padding tokens have weight 0 (excluded),
    and each row need not sum to 1 (the OT solver normalises). A loss only needs some fields
    (``mse`` the sentences, ``ot`` the tokens and weights); the others may be None.

    Attributes:
        student_tokens: (B, Ls, D) student token embeddings of the foreign sentences.
        student_weights: (B, Ls) student token weights (``uniform_weights`` / ``idf_weights``).
        student_sentence: (B, D) student sentence embeddings (pooled).
        teacher_tokens: (B, Lt, D) teacher token embeddings of the English sentences.
        teacher_weights: (B, Lt) teacher token weights.
        teacher_sentence: (B, D) teacher sentence embeddings.
    """

    student_tokens: Tensor | None = None
    student_weights: Tensor | None = None
    student_sentence: Tensor | None = None
    teacher_tokens: Tensor | None = None
    teacher_weights: Tensor | None = None
    teacher_sentence: Tensor | None = None

    def __post_init__(self) -> None:
        present = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        sizes = {name: t.shape[0] for name, t in present.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"DistillBatch fields disagree on the batch size: {sizes}")
        for side in ("student", "teacher"):
            tokens, weights = present.get(f"{side}_tokens"), present.get(f"{side}_weights")
            if tokens is not None and tokens.dim() != 3:
                raise ValueError(f"{side}_tokens must be (B, L, D), got {tuple(tokens.shape)}")
            if tokens is not None and weights is not None and weights.shape != tokens.shape[:2]:
                raise ValueError(f"{side}_weights {tuple(weights.shape)} do not match "
                                 f"{side}_tokens {tuple(tokens.shape)}")
        for kind in ("tokens", "sentence"):
            s, t = present.get(f"student_{kind}"), present.get(f"teacher_{kind}")
            if s is not None and t is not None and s.shape[-1] != t.shape[-1]:
                raise ValueError(f"student_{kind} and teacher_{kind} differ in dimension: "
                                 f"{s.shape[-1]} vs {t.shape[-1]}")

    def require(self, *names: str) -> tuple[Tensor, ...]:
        """Return the named fields; a missing one is a bug in the training loop (ValueError)."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"this loss needs DistillBatch fields {missing}, which are None")
        return tuple(getattr(self, n) for n in names)


@dataclass
class LossOutput:
    """A loss value to backpropagate and named float parts to log (``parts`` never carry grad)."""

    loss: Tensor
    parts: dict[str, float]


class DistillLoss(nn.Module):
    """Base class: the parameter contract shared by the registered losses."""

    name: ClassVar[str]

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor parameters ``build_loss`` accepts for this loss."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in list(sig.parameters.values())[1:] if p.kind is p.KEYWORD_ONLY
                or p.kind is p.POSITIONAL_OR_KEYWORD]

    def params(self) -> dict:
        """Every resolved constructor parameter (defaults written out)."""
        raise NotImplementedError

    def as_config(self) -> dict:
        """``{"name", "params", "backend"}``; ``build_loss(c["name"], **c["params"])`` rebuilds the loss."""
        return {"name": self.name, "params": self.params(), "backend": self.backend()}

    def backend(self) -> str | None:
        """The OT solver this loss uses, pinned and recorded (house rule 5); None without OT."""
        return None

    def forward(self, batch: DistillBatch) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _register(name: str) -> Callable[[type[DistillLoss]], type[DistillLoss]]:
    def deco(cls: type[DistillLoss]) -> type[DistillLoss]:
        cls.name = name
        return LOSSES.register(name)(cls)

    return deco


def _bad(message: str) -> ClirkitError:
    return ClirkitError(message, fix="see the loss docstrings in clirkit/losses.py")


# --- costs ---------------------------------------------------------------------------------

COSTS = ("cosine", "sqeuclidean")
COST_SCALES = ("none", "dim")
EPS_SCALES = ("cost", "median", "spread")


def pairwise_cost(x: Tensor, y: Tensor, cost: str) -> Tensor:
    """Token-to-token cost matrices.

    Args:
        x: (B, n, D) student tokens.
        y: (B, m, D) teacher tokens.
        cost: ``"cosine"`` (``1 - cos``, in [0, 2]; a zero vector has cost 1 to everything) or
            ``"sqeuclidean"`` (``|x - y|^2`` on the unnormalised vectors, so that norms, and with
            them the mean-pooled sentence vectors, are pulled together too).

    Returns:
        (B, n, m) costs.
    """
    if cost == "cosine":
        # Rounding can put cos of a vector with itself a hair above 1.
        return (1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)).clamp_min(0)
    if cost == "sqeuclidean":
        # The expansion costs one matmul instead of a (B, n, m, D) difference tensor; rounding
        # can make it slightly negative for near-identical vectors.
        sq = x.pow(2).sum(-1)[:, :, None] + y.pow(2).sum(-1)[:, None, :] - 2 * x @ y.transpose(1, 2)
        return sq.clamp_min(0)
    raise _bad(f"unknown cost {cost!r}; use one of {', '.join(COSTS)}")


def eps_unit(cost: Tensor, valid: Tensor, how: str) -> Tensor:
    """The unit ``u`` of ``eps`` for a batch of costs (the solver runs at ``eps * u``), detached.

    Args:
        cost: (B, n, m) costs.
        valid: (B, n, m) bool, true where both tokens have weight > 0. Only these entries enter
            the statistics, so padding never changes ``u``.
        how: ``"cost"`` (``u = 1``: eps in cost units), ``"median"`` (the median valid cost of
            the batch) or ``"spread"`` (the root mean square of the valid costs after removing
            each problem's row and column means, i.e. of ``C_ij - r_i - c_j + m``). An entropic
            plan does not change when a constant is added to a row or a column of ``C`` (the
            potentials absorb it), so ``"spread"`` measures exactly the part of the cost the
            plan responds to, and a fixed ``eps`` then means a fixed sharpness.

    Returns:
        A scalar tensor; 1 when the statistic is 0 (e.g. one token on a side: the plan is forced).
    """
    if how == "cost":
        return cost.new_ones(())
    cost = cost.detach()
    if how == "median":
        entries = cost[valid]
        value = entries.median() if entries.numel() else cost.new_zeros(())
    else:
        v = valid.to(cost.dtype)
        rows = (cost * v).sum(2, keepdim=True) / v.sum(2, keepdim=True).clamp_min(1)
        cols = (cost * v).sum(1, keepdim=True) / v.sum(1, keepdim=True).clamp_min(1)
        mean = (cost * v).sum((1, 2), keepdim=True) / v.sum((1, 2), keepdim=True).clamp_min(1)
        residual = (cost - rows - cols + mean)[valid]
        value = residual.pow(2).mean().sqrt() if residual.numel() else cost.new_zeros(())
    return torch.where(value > 1e-12, value, torch.ones_like(value))


# --- losses --------------------------------------------------------------------------------


@_register("ot")
class OTLoss(DistillLoss):
    """OPTICAL token-level optimal-transport distillation (Huang, Yu, Allan, WSDM 2023, arXiv 2301.12566).

    The student's token embeddings of the foreign sentence are aligned with the teacher's token
    embeddings of the English sentence by an entropic OT plan ``P`` (Cuturi 2013), computed by
    :func:`clirkit.ot.sinkhorn_log`; the loss is the Frobenius inner product ``<P, C>`` of the
    plan and the (scaled) cost, averaged over the problems of the batch that have tokens on
    both sides (a sentence with every weight 0 contributes nothing).

    Units. ``cost_scale`` fixes the units of the cost and of the loss, with no batch statistic,
    so loss values compare across batches and training steps: ``"none"`` (cosine, in [0, 2]),
    ``"dim"`` (divide by the dimension D: sqeuclidean becomes the per-coordinate mean squared
    error, the units of ``mse``), or a positive number; ``"auto"`` resolves to ``"none"`` for
    cosine and ``"dim"`` for sqeuclidean. ``eps_scale`` fixes what ``eps`` is relative to: the
    solver runs at ``eps * u`` with ``u`` from :func:`eps_unit` on the batch: ``"cost"`` (u = 1),
    ``"median"`` or ``"spread"`` (default). The plan's sharpness depends on eps relative to the
    cost's spread, which differs by cost and moves during training: on zero-shot MiniLM
    Tagalog/English token clouds cosine costs lie in about [0.86, 1.06], where an absolute
    ``eps=0.05`` spreads each student token over ~17 of ~22 teacher tokens and recovers half of
    the exact-OT gain over the independent coupling, while ``eps=0.2`` relative to the spread
    gives 3.7 tokens and 95 % for cosine (7 and 93 % for sqeuclidean), and stays sharp on
    already aligned clouds (2.6 tokens, 99 %) (``bench/bench_ot.py`` part b). ``parts`` log the
    ``eps * u`` used (``ot_eps``) and the solver's marginal error (``ot_marginal_err``).

    Args:
        cost: ``"cosine"`` or ``"sqeuclidean"`` (see :func:`pairwise_cost`).
        cost_scale: ``"auto"``, ``"none"``, ``"dim"`` or a positive number (divides the cost).
        eps_scale: ``"cost"``, ``"median"`` or ``"spread"``: the unit of ``eps`` and ``anneal_from``.
        eps: final entropic regularisation, in units of ``eps_scale``.
        iters: Sinkhorn iterations.
        anneal_from: first eps of the eps-scaling schedule.
        anneal_iters: iterations spent annealing from ``anneal_from`` to ``eps``.
        overrelax: over-relaxation factor of the Sinkhorn iterations at the final eps (1 = plain).
        tol: optional early stop on the row-marginal L1 error.
        grad_plan: if False (default) the plan is a constant: the solver runs without autograd
            and the gradient is ``sum_ij P_ij dC_ij`` (the envelope-theorem gradient of the
            entropic OT value). If True, autograd differentiates through the unrolled iterations
            (the eps unit ``u`` stays a constant either way).
    """

    def __init__(self, cost: str = "cosine", cost_scale: str | float = "auto", eps_scale: str = "spread",
                 eps: float = 0.2, iters: int = 100, anneal_from: float = 1.0, anneal_iters: int = 20,
                 overrelax: float = 1.7, tol: float | None = None, grad_plan: bool = False) -> None:
        super().__init__()
        if cost not in COSTS:
            raise _bad(f"unknown cost {cost!r} for loss 'ot'; use one of {', '.join(COSTS)}")
        if cost_scale == "auto":
            cost_scale = "none" if cost == "cosine" else "dim"
        is_number = isinstance(cost_scale, int | float) and not isinstance(cost_scale, bool)
        if not (cost_scale in COST_SCALES or (is_number and cost_scale > 0 and math.isfinite(cost_scale))):
            raise _bad(f"cost_scale must be 'auto', {', '.join(map(repr, COST_SCALES))} or a positive number, "
                       f"got {cost_scale!r}")
        if eps_scale not in EPS_SCALES:
            raise _bad(f"eps_scale must be one of {', '.join(map(repr, EPS_SCALES))}, got {eps_scale!r}")
        if not isinstance(grad_plan, bool):
            raise _bad(f"grad_plan must be true or false, got {grad_plan!r}")
        self.cost = cost
        self.cost_scale = float(cost_scale) if is_number else cost_scale
        self.eps_scale = eps_scale
        self.sinkhorn = SinkhornConfig(eps=eps, iters=iters, anneal_from=anneal_from,
                                       anneal_iters=anneal_iters, overrelax=overrelax, tol=tol)
        self.grad_plan = grad_plan

    def params(self) -> dict:
        return {"cost": self.cost, "cost_scale": self.cost_scale, "eps_scale": self.eps_scale,
                **self.sinkhorn.as_dict(), "grad_plan": self.grad_plan}

    def backend(self) -> str:
        return BACKEND

    def forward(self, batch: DistillBatch) -> LossOutput:
        x, wx, y, wy = batch.require("student_tokens", "student_weights", "teacher_tokens", "teacher_weights")
        y, wx, wy = y.detach(), wx.detach(), wy.detach()
        cost = pairwise_cost(x, y, self.cost)
        valid = (wx > 0)[:, :, None] & (wy > 0)[:, None, :]
        # Padding may hold anything; masking here keeps it out of the statistics and the sum.
        cost = torch.where(valid, cost, torch.zeros_like(cost))
        if self.cost_scale != "none":
            cost = cost / (x.shape[-1] if self.cost_scale == "dim" else self.cost_scale)
        unit = eps_unit(cost, valid, self.eps_scale)
        # Solving on C / u at eps is solving on C at eps * u (anneal_from likewise), same plan.
        with torch.set_grad_enabled(self.grad_plan and torch.is_grad_enabled()):
            plan, diag = sinkhorn_log((cost if self.grad_plan else cost.detach()) / unit, wx, wy,
                                      **self.sinkhorn.as_dict(), return_diagnostics=True)
        per_problem = (plan * cost).sum((1, 2))
        n_problems = diag.nonempty.sum().clamp_min(1)
        loss = per_problem.sum() / n_problems
        parts = {
            "ot": loss.item(),
            "ot_eps": self.sinkhorn.eps * unit.item(),
            "ot_marginal_err": diag.marginal_err_a.max().item(),
            "ot_iters": float(diag.iters),
        }
        return LossOutput(loss=loss, parts=parts)


@_register("mse")
class MSELoss(DistillLoss):
    """Sentence-level distillation (Reimers & Gurevych 2020, "Making Monolingual Sentence
    Embeddings Multilingual using Knowledge Distillation", EMNLP).

    The mean squared error between the student's embedding of the foreign sentence and the
    teacher's embedding of the English sentence, averaged over batch and dimensions as in
    sentence-transformers' ``MSELoss``. The paper also distils the student's embedding of the
    English sentence itself; a training loop gets that term by adding those rows to the batch.
    It has no parameters.
    """

    def params(self) -> dict:
        return {}

    def forward(self, batch: DistillBatch) -> LossOutput:
        s, t = batch.require("student_sentence", "teacher_sentence")
        loss = F.mse_loss(s, t.detach())
        return LossOutput(loss=loss, parts={"mse": loss.item()})



def _term_weights(ot_weight: float, mse_weight: float) -> tuple[float, float]:
    """Validated weights of a token term and the ``mse`` term (both >= 0, not both 0)."""
    for name, w in (("ot_weight", ot_weight), ("mse_weight", mse_weight)):
        if isinstance(w, bool) or not isinstance(w, int | float) or not (w >= 0 and math.isfinite(w)):
            raise _bad(f"{name} must be a non-negative number, got {w!r}")
    if ot_weight == 0 and mse_weight == 0:
        raise _bad("ot_weight and mse_weight are both 0: the loss would be constant")
    return float(ot_weight), float(mse_weight)

@_register("ot+mse")
class OTMSELoss(DistillLoss):
    """``ot_weight * ot + mse_weight * mse``: OPTICAL's token-level OT (Huang et al. 2023) plus
    sentence-level MSE (Reimers & Gurevych 2020), so pooled vectors are pulled together even
    when the OT cost alone does not constrain them (e.g. the cosine cost ignores norms).

    Args:
        ot_weight: weight of the ``ot`` term (>= 0).
        mse_weight: weight of the ``mse`` term (>= 0).
        **ot_params: the parameters of :class:`OTLoss` (``cost``, ``eps``, ...).
    """

    def __init__(self, ot_weight: float = 1.0, mse_weight: float = 1.0, **ot_params) -> None:
        super().__init__()
        self.ot_weight, self.mse_weight = _term_weights(ot_weight, mse_weight)
        self.ot = OTLoss(**ot_params)
        self.mse = MSELoss()

    @classmethod
    def param_names(cls) -> list[str]:
        # **ot_params is not a named parameter of this class: list OTLoss's in its place.
        return super().param_names() + OTLoss.param_names()

    def params(self) -> dict:
        return {"ot_weight": self.ot_weight, "mse_weight": self.mse_weight, **self.ot.params()}

    def backend(self) -> str:
        return self.ot.backend()

    def forward(self, batch: DistillBatch) -> LossOutput:
        ot, mse = self.ot(batch), self.mse(batch)
        loss = self.ot_weight * ot.loss + self.mse_weight * mse.loss
        return LossOutput(loss=loss, parts={**ot.parts, **mse.parts})


# --- the debiased Sinkhorn divergence (geomloss) ---------------------------------------------

# geomloss' backends: "tensorized" holds the (B, n, m) cost matrices in memory, the right choice
# for batches of sentence-sized clouds; "online" (KeOps) computes them on the fly and needs
# pykeops. "auto" is not offered: geomloss would pick by problem size (house rule 5: pinned).
GEOMLOSS_BACKENDS = ("tensorized", "online")


def _samples_loss(name: str):
    """geomloss' ``SamplesLoss``, imported on first use; a missing geomloss is a user error."""
    try:
        from geomloss import SamplesLoss
    except ImportError as err:
        raise ClirkitError(f"--loss {name} needs geomloss: pip install geomloss") from err
    return SamplesLoss


def eps_levels(diameter: float, blur: float, scaling: float) -> int:
    """Number of eps values in geomloss' eps-scaling schedule (its ``epsilon_schedule``):
    ``diameter``, then ``diameter * scaling^k`` while above ``blur``, then ``blur``; geomloss runs
    one symmetrised Sinkhorn iteration per value."""
    return 2 + max(0, math.ceil(math.log(blur / diameter) / math.log(scaling)))


@_register("ot-divergence")
class OTDivergenceLoss(DistillLoss):
    """Debiased Sinkhorn divergence between the student's and the teacher's token clouds.

    For each sentence pair, ``S(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2``
    (Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré 2019, "Interpolating between Optimal
    Transport and MMD using Sinkhorn Divergences", AISTATS; Genevay, Peyré, Cuturi 2018), where
    ``OT_eps`` is the entropic OT value (transport cost plus ``eps`` times the KL of the plan,
    Cuturi 2013) and ``a``, ``b`` are the token clouds weighted by the token weights (special and
    padding tokens weigh 0). Unlike the ``ot`` loss's ``<P, C>``, ``S`` is 0 for identical clouds
    and positive otherwise at any ``eps`` (the entropic bias is removed), so ``eps`` only sets the
    scale below which differences are blurred. Computed by geomloss'
    ``SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, reach=reach, debias=True,
    backend=backend)`` on batched (B, N, D) clouds; the loss is the mean of ``S`` over the
    problems with tokens on both sides.

    Geometry and units. geomloss' cost is ``|x - y|^p / p`` on the points it is given. With
    ``cost="cosine"`` the tokens are first normalised to the unit sphere, where
    ``|x - y|^2 / 2 = 1 - cos``: with ``p=2`` the cost is the ``ot`` loss's cosine cost, in [0, 2].
    With ``cost="sqeuclidean"`` the tokens are multiplied by ``sqrt(2 / D)``, so that
    ``|x - y|^2 / 2`` becomes ``|x - y|^2 / D``: with ``p=2`` the cost is the per-coordinate mean
    squared error, the ``ot`` loss's sqeuclidean cost at ``cost_scale="dim"`` and the units of
    ``mse``. The divergence is in the units of the cost; ``eps = blur^p`` in the same units.
    With ``p=1`` the cost is the Euclidean distance between those points (for cosine the chord
    ``sqrt(2 (1 - cos))``).

    The eps-scaling schedule starts at ``diameter^p`` and divides ``blur`` by ``1 / scaling`` at each
    iteration, one (symmetrised) Sinkhorn iteration per level, down to ``blur``: about
    ``log(diameter / blur) / log(1 / scaling) + 2`` iterations. ``diameter`` is 2 on the unit
    sphere; for sqeuclidean it is the diagonal of the bounding box of the tokens of weight > 0
    (geomloss' own estimate would include padding, whose content would then change the value).
    ``parts`` log the divergence (``ot_divergence``), ``eps`` (``otd_eps``) and the number of eps
    levels (``otd_levels``, see :func:`eps_levels`). The gradient is geomloss' envelope-theorem
    gradient (its last extrapolation step), which reaches the student's tokens only.

    Args:
        cost: ``"cosine"`` or ``"sqeuclidean"`` (the geometry, above).
        blur: the blur scale ``eps^(1/p)``, in the units of the (scaled) points; > 0.
        scaling: ratio of successive blur values in the eps-scaling descent, in (0, 1): larger is
            more iterations and a more accurate value.
        p: exponent of the ground cost ``|x - y|^p / p``: 1 or 2.
        reach: None (balanced OT) or the scale ``rho^(1/p)`` of unbalanced OT's soft marginal
            constraints (Séjourné et al. 2019), > 0.
        backend: geomloss' backend, ``"tensorized"`` (default) or ``"online"`` (needs pykeops).
    """

    def __init__(self, cost: str = "cosine", blur: float = 0.1, scaling: float = 0.9, p: int = 2,
                 reach: float | None = None, backend: str = "tensorized") -> None:
        super().__init__()
        samples_loss = _samples_loss(self.name)
        if cost not in COSTS:
            raise _bad(f"unknown cost {cost!r} for loss {self.name!r}; use one of {', '.join(COSTS)}")
        for label, value in (("blur", blur), ("reach", reach)):
            if label == "reach" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
                raise _bad(f"{label} must be a positive number, got {value!r}")
        if isinstance(scaling, bool) or not isinstance(scaling, int | float) or not 0 < scaling < 1:
            raise _bad(f"scaling must be a number in (0, 1), got {scaling!r}")
        if p not in (1, 2) or isinstance(p, bool):
            raise _bad(f"p must be 1 or 2, got {p!r}")
        if backend not in GEOMLOSS_BACKENDS:
            raise _bad(f"backend must be one of {', '.join(map(repr, GEOMLOSS_BACKENDS))} (pinned, never 'auto'), "
                       f"got {backend!r}")
        if backend == "online":
            try:
                import pykeops  # noqa: F401
            except ImportError as err:
                raise ClirkitError("backend 'online' needs pykeops", fix="pip install pykeops, or use "
                                   "backend 'tensorized'") from err
        self.cost = cost
        self.blur = float(blur)
        self.scaling = float(scaling)
        self.p = int(p)
        self.reach = None if reach is None else float(reach)
        self.backend_name = backend
        self._samples_loss = samples_loss

    def params(self) -> dict:
        return {"cost": self.cost, "blur": self.blur, "scaling": self.scaling, "p": self.p, "reach": self.reach,
                "backend": self.backend_name}

    def backend(self) -> str:
        return f"geomloss.SamplesLoss(sinkhorn, debias=True, backend={self.backend_name})"

    def points(self, x: Tensor) -> Tensor:
        """The points geomloss sees: unit vectors (cosine) or ``x * sqrt(2 / D)`` (sqeuclidean)."""
        if self.cost == "cosine":
            return F.normalize(x, dim=-1)
        return x * math.sqrt(2 / x.shape[-1])

    def diameter(self, x: Tensor, wx: Tensor, y: Tensor, wy: Tensor) -> float:
        """Start scale of the eps-scaling descent: 2 on the unit sphere, else the bounding-box
        diagonal of the tokens of weight > 0 (what geomloss estimates, without the padding)."""
        if self.cost == "cosine":
            return 2.0
        points = torch.cat([x[wx > 0], y[wy > 0]]).detach()
        if points.shape[0] < 2:
            return 1.0
        return max((points.max(0).values - points.min(0).values).norm().item(), 1e-6)

    def forward(self, batch: DistillBatch) -> LossOutput:
        x, wx, y, wy = batch.require("student_tokens", "student_weights", "teacher_tokens", "teacher_weights")
        y, wx, wy = y.detach(), wx.detach(), wy.detach()
        x, y = self.points(x), self.points(y)
        nonempty = (wx.sum(1) > 0) & (wy.sum(1) > 0)
        # geomloss' balanced OT expects probability weights; a problem without mass on a side gets
        # uniform weights so that it stays finite, and its value is dropped below.
        a = torch.where(nonempty[:, None], wx, torch.ones_like(wx))
        b = torch.where(nonempty[:, None], wy, torch.ones_like(wy))
        a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
        diameter = self.diameter(x, wx, y, wy)
        solver = self._samples_loss("sinkhorn", p=self.p, blur=self.blur, scaling=self.scaling, reach=self.reach,
                                    diameter=diameter, debias=True, backend=self.backend_name)
        # geomloss' Sinkhorn loop switches autograd on for its last extrapolation and leaves it on,
        # which would make a caller's torch.no_grad() (dev evaluation) build graphs: restore it.
        grad_mode = torch.is_grad_enabled()
        try:
            per_problem = solver(a, x, b, y)
        finally:
            torch.set_grad_enabled(grad_mode)
        per_problem = torch.where(nonempty, per_problem, torch.zeros_like(per_problem))
        loss = per_problem.sum() / nonempty.sum().clamp_min(1)
        parts = {"ot_divergence": loss.item(), "otd_eps": self.blur ** self.p,
                 "otd_levels": float(eps_levels(diameter, self.blur, self.scaling))}
        return LossOutput(loss=loss, parts=parts)


@_register("ot-divergence+mse")
class OTDivergenceMSELoss(DistillLoss):
    """``ot_weight * ot-divergence + mse_weight * mse``: the debiased Sinkhorn divergence between
    token clouds (Feydy et al. 2019) plus sentence-level MSE (Reimers & Gurevych 2020).

    Units: the divergence is in the units of its cost (see :class:`OTDivergenceLoss`): with
    ``cost="sqeuclidean"`` (and ``p=2``) it is a per-coordinate mean squared error between
    tokens, the units of ``mse``, so equal weights weigh the token and sentence terms alike;
    with ``cost="cosine"`` it is in ``1 - cos`` (in [0, 2]) while ``mse`` stays in squared
    coordinates (for unit vectors ``mse = 2 (1 - cos) / D``, ~D/2 times smaller), so
    ``mse_weight`` must be set accordingly.

    Args:
        ot_weight: weight of the ``ot-divergence`` term (>= 0).
        mse_weight: weight of the ``mse`` term (>= 0).
        **divergence_params: the parameters of :class:`OTDivergenceLoss` (``cost``, ``blur``, ...).
    """

    def __init__(self, ot_weight: float = 1.0, mse_weight: float = 1.0, **divergence_params) -> None:
        super().__init__()
        _samples_loss(self.name)  # a missing geomloss names the loss the user chose
        self.ot_weight, self.mse_weight = _term_weights(ot_weight, mse_weight)
        self.divergence = OTDivergenceLoss(**divergence_params)
        self.mse = MSELoss()

    @classmethod
    def param_names(cls) -> list[str]:
        return super().param_names() + OTDivergenceLoss.param_names()

    def params(self) -> dict:
        return {"ot_weight": self.ot_weight, "mse_weight": self.mse_weight, **self.divergence.params()}

    def backend(self) -> str:
        return self.divergence.backend()

    def forward(self, batch: DistillBatch) -> LossOutput:
        otd, mse = self.divergence(batch), self.mse(batch)
        loss = self.ot_weight * otd.loss + self.mse_weight * mse.loss
        return LossOutput(loss=loss, parts={**otd.parts, **mse.parts})


def build_loss(name: str, **params) -> DistillLoss:
    """Build a registered loss from its name and parameters (as read from an experiment config).

    Raises:
        ClirkitError: for an unknown loss name (listing the known ones), an unknown parameter
            (listing the accepted ones) or an out-of-range value.
    """
    cls = LOSSES.get(name)
    accepted = cls.param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ClirkitError(
            f"unknown parameter(s) {', '.join(unknown)} for loss {name!r}",
            fix=f"accepted: {', '.join(accepted)}" if accepted else f"loss {name!r} takes no parameters",
        )
    return cls(**params)


# --- token weights -------------------------------------------------------------------------


def uniform_weights(mask: Tensor) -> Tensor:
    """Weight 1 for every included token, 0 for special and padding tokens.

    Args:
        mask: (B, L) bool or 0/1, true for tokens to include
            (``attention_mask & ~special_tokens_mask``).
    """
    return mask.to(torch.float32)


def document_frequency(input_ids: Tensor, mask: Tensor, vocab_size: int) -> Tensor:
    """Per-token-id count of the sentences (rows) containing it, for :func:`idf_weights`.

    Sum the result over every batch of the collection that defines the idf (e.g. the English
    and foreign sides of the bitext); the number of rows summed is ``n_docs``.

    Args:
        input_ids: (B, L) token ids.
        mask: (B, L) true for tokens to count (special and padding tokens excluded).
        vocab_size: size of the tokenizer's vocabulary.

    Returns:
        (vocab_size,) int64 counts; a token repeated within a sentence counts once.
    """
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(input_ids)
    present = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.bool, device=input_ids.device)
    present[rows[mask.bool()], input_ids[mask.bool()]] = True
    return present.sum(0)


def idf_weights(input_ids: Tensor, mask: Tensor, df: Tensor, n_docs: int) -> Tensor:
    """Smoothed inverse document frequency per token (Sparck Jones 1972; the smoothed form
    ``log((1 + N) / (1 + df)) + 1`` of scikit-learn's ``TfidfVectorizer(smooth_idf=True)``).

    The smoothing keeps every included token's weight >= 1 (> 0), so no real token is dropped
    from the transport, and an id never seen (df 0) gets the largest weight.

    Args:
        input_ids: (B, L) token ids.
        mask: (B, L) true for tokens to include; special and padding tokens get weight 0.
        df: (vocab_size,) document frequencies (see :func:`document_frequency`).
        n_docs: number of documents (sentences) ``df`` was counted over.

    Returns:
        (B, L) float32 weights.

    Raises:
        ValueError: if an id is outside ``df`` or ``df`` exceeds ``n_docs``.
    """
    if input_ids.numel() and int(input_ids.max()) >= df.shape[0]:
        raise ValueError(f"token id {int(input_ids.max())} is outside df of size {df.shape[0]}")
    if n_docs < 0 or (df.numel() and int(df.max()) > n_docs):
        raise ValueError(f"df counts must be <= n_docs={n_docs}")
    idf = torch.log((1.0 + n_docs) / (1.0 + df.to(torch.float32))) + 1.0
    return idf.to(input_ids.device)[input_ids] * mask.to(torch.float32)
