"""What the student is trained to minimise: the loss named by the config and the batches it reads.

The losses themselves live in :mod:`clirkit.losses` (OPTICAL's optimal-transport token
alignment, Huang, Yu, Allan, WSDM 2023, arXiv:2301.12566; sentence MSE, Reimers & Gurevych,
EMNLP 2020); here they are built from a :class:`~clirkit.config.DistillConfig` and fed
:class:`~clirkit.losses.DistillBatch` es with uniform or idf token weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from clirkit.config import DistillConfig
from clirkit.errors import ClirkitError

#: the ``loss`` value that trains nothing: the student is the teacher
ZERO_SHOT = "zero-shot"


def make_loss(cfg: DistillConfig):
    """The loss module named by ``cfg.loss`` with every option it takes (see :mod:`clirkit.losses`)."""
    from clirkit.losses import build_loss

    return build_loss(cfg.loss, **loss_params(cfg))


def loss_params(cfg: DistillConfig) -> dict[str, Any]:
    """The constructor arguments of ``cfg.loss`` that ``cfg`` sets; the others keep the loss's defaults."""
    if cfg.loss in ("ot", "ot+mse"):
        params = {"cost": cfg.cost, "cost_scale": cfg.cost_scale, "eps_scale": cfg.eps_scale, "eps": cfg.eps,
                  "iters": cfg.iters, "anneal_from": cfg.anneal_from, "anneal_iters": cfg.anneal_iters,
                  "grad_plan": cfg.ot_grad_plan}
    elif cfg.loss in ("ot-divergence", "ot-divergence+mse"):
        params = {"cost": cfg.cost, "blur": cfg.blur, "scaling": cfg.scaling}
    else:
        return {}
    if cfg.loss.endswith("+mse"):
        params.update(ot_weight=cfg.ot_weight, mse_weight=cfg.mse_weight)
    return {k: v for k, v in params.items() if v is not None}


def check_loss(cfg: DistillConfig) -> None:
    """Reject an unknown loss, or one that cannot be built (bad parameters, geomloss missing), before any work."""
    from clirkit.losses import LOSSES

    if cfg.loss == ZERO_SHOT:
        return
    if cfg.loss not in LOSSES:
        raise ClirkitError(f"unknown loss {cfg.loss!r}",
                           fix=f"use one of: {', '.join([*LOSSES.names(), ZERO_SHOT])}")
    make_loss(cfg)


def document_frequencies(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], vocab: int
                         ) -> tuple[torch.Tensor, int]:
    """Sentence counts per token id over ``(input_ids, mask)`` batches, and the number of sentences."""
    from clirkit.losses import document_frequency

    df = torch.zeros(vocab, dtype=torch.long)
    n = 0
    for ids, mask in batches:
        df += document_frequency(ids, mask, vocab)
        n += ids.shape[0]
    return df, n


@dataclass
class IdfTables:
    """Document frequencies of each side of the training bitext, for idf token weights."""

    student_df: torch.Tensor
    student_n: int
    teacher_df: torch.Tensor
    teacher_n: int

    @classmethod
    def count(cls, student_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], student_vocab: int,
              teacher_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], teacher_vocab: int) -> IdfTables:
        """Count both sides from ``(input_ids, content mask)`` batches (the teacher side first)."""
        t_df, t_n = document_frequencies(teacher_batches, teacher_vocab)
        s_df, s_n = document_frequencies(student_batches, student_vocab)
        return cls(s_df, s_n, t_df, t_n)


def distill_batch(s_tokens, s_mask, s_sentence, s_ids, t_tokens, t_mask, t_ids, t_sentence,
                  idf: IdfTables | None):
    """Assemble a :class:`clirkit.losses.DistillBatch`; special and padding tokens weigh 0."""
    from clirkit.losses import DistillBatch, idf_weights, uniform_weights

    dev = s_tokens.device
    if idf is None:
        s_w, t_w = uniform_weights(s_mask), uniform_weights(t_mask)
    else:
        s_w = idf_weights(s_ids, s_mask.to(s_ids.device), idf.student_df, idf.student_n)
        t_w = idf_weights(t_ids, t_mask, idf.teacher_df, idf.teacher_n)
    return DistillBatch(student_tokens=s_tokens, student_weights=s_w.to(dev), student_sentence=s_sentence,
                        teacher_tokens=t_tokens.to(dev), teacher_weights=t_w.to(dev),
                        teacher_sentence=t_sentence.to(dev))
