"""Dev evaluation: the dev loss, and foreign dev sentences retrieving their English mates.

Mate retrieval is a cheap proxy for cross-lingual retrieval that needs no relevance judgements:
every dev sentence of one side must find its translation among all the dev sentences of the
other side (the bitext-mining check of Reimers & Gurevych, EMNLP 2020, arXiv:2004.09813).
"""

from __future__ import annotations

import numpy as np
import torch

from clirkit.config import BEST_BY, DistillConfig, dev_column
from clirkit.distill.cache import TeacherOutputs
from clirkit.distill.objective import IdfTables, distill_batch

DEV_MEASURES = (BEST_BY, "R@1")  # BEST_BY (clirkit.config) picks the best checkpoint


def dev_retrieval(s_sent: np.ndarray, t_sent: np.ndarray, side: str, scoring: str, rerank_k: int,
                  s_tokens: list[np.ndarray] | None = None, t_tokens: list[np.ndarray] | None = None
                  ) -> dict[str, float]:
    """Mate retrieval on dev: every sentence of one side retrieves its translation among all of the other.

    ``side="query"``: foreign (student) queries, English (teacher) documents; ``"document"``:
    the reverse. Scored with ir_measures (RR@10, R@1). ``maxsim`` re-ranks the dense top
    ``rerank_k`` by ColBERT MaxSim (Khattab & Zaharia, SIGIR 2020) over L2-normalised tokens.
    """
    from clirkit.measures import parse_measures, score_run
    from clirkit.retrieval import maxsim_scores

    def norm(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    q, d = (s_sent, t_sent) if side == "query" else (t_sent, s_sent)
    sims = norm(q) @ norm(d).T
    k = min(rerank_k if scoring == "maxsim" else 10, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    run: dict[str, dict[str, float]] = {}
    if scoring == "maxsim":
        assert s_tokens is not None and t_tokens is not None
        q_tok, d_tok = (s_tokens, t_tokens) if side == "query" else (t_tokens, s_tokens)
        for i, cands in enumerate(top):
            docs = [norm(d_tok[j]) for j in cands]
            if len(q_tok[i]) and any(len(x) for x in docs):
                scores = maxsim_scores([norm(q_tok[i])], docs)[0]
            else:
                scores = np.full(len(cands), -np.inf, np.float32)
            run[f"q{i}"] = {f"d{j}": float(s) for j, s in zip(cands, scores) if np.isfinite(s)}
    else:
        for i, cands in enumerate(top):
            run[f"q{i}"] = {f"d{j}": float(sims[i, j]) for j in cands}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(q))}
    per_query = score_run(qrels, run, parse_measures(list(DEV_MEASURES)))
    return {str(m): float(v) for m, v in per_query.mean(axis=0).items()}


def dev_scores(cfg: DistillConfig, s_sent: list[np.ndarray], s_tokens: list[np.ndarray], dev: TeacherOutputs
               ) -> dict[str, float]:
    """:func:`dev_retrieval` of the student's dev outputs (batches of sentences, token lists) against the teacher's."""
    maxsim = cfg.scoring == "maxsim"
    return dev_retrieval(np.concatenate(s_sent), dev.sentence, cfg.side, cfg.scoring, cfg.dev_rerank_k,
                         s_tokens or None, dev.token_lists(range(len(dev))) if maxsim else None)


def content_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    """Each text's content token vectors (float32), for MaxSim."""
    return [t[m] for t, m in zip(tokens.float().cpu().numpy(), mask.cpu().numpy())]


def evaluate_dev(cfg: DistillConfig, student, loss_fn, texts: list[str], dev: TeacherOutputs,
                 idf: IdfTables | None, batch_size: int) -> dict[str, float]:
    """Dev loss (and its parts) and dev mate retrieval of ``student`` on the foreign dev ``texts``.

    Returns:
        ``dev_loss``, ``dev_<part>`` for each part of the loss and ``dev_<measure>`` for
        :data:`DEV_MEASURES`, averaged over the dev pairs.
    """
    student.eval()
    total, parts_sum, n = 0.0, {}, 0
    sents, toks = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows = np.arange(start, min(start + batch_size, len(texts)))
            feats = student.tokenize([texts[r] for r in rows])
            s_tok, s_mask, s_sent = student(feats)
            out = loss_fn(distill_batch(s_tok, s_mask, s_sent, feats["input_ids"], *dev.batch(rows), idf))
            total += float(out.loss) * len(rows)
            for k, v in out.parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(rows)
            n += len(rows)
            sents.append(s_sent.float().cpu().numpy())
            if cfg.scoring == "maxsim":
                toks.extend(content_tokens(s_tok, s_mask))
    student.train()
    result = {"dev_loss": total / n, **{dev_column(k): v / n for k, v in parts_sum.items()}}
    result.update({dev_column(k): v for k, v in dev_scores(cfg, sents, toks, dev).items()})
    return result
