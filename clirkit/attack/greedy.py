"""The greedy attack: a rank-aware, score-based black-box search of single edits per query
(see :mod:`clirkit.attack`), scoring candidates through the system's
:class:`~clirkit.retrieval.Searcher` in float64."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clirkit.attack.common import System, _long, _retrieve_changed
from clirkit.config import AttackConfig
from clirkit.data.formats import Dataset
from clirkit.measures import robustness_rows, score_run
from clirkit.perturb import PerturbSpec, edit_candidates, spec_label
from clirkit.progress import progress
from clirkit.retrieval import RunDict, Searcher, retrieve
from clirkit.rundir import Run
from clirkit.seeding import set_seed
from clirkit.tables import print_table, write_robustness, write_table

#: non-relevant documents kept as competitors of a greedy query: at least this many, and 3 * k
GREEDY_POOL_MIN = 50
#: an edit must lower the objective by more than this to be accepted; scores are computed in
#: float64 so numerical noise is far below it, which makes "only improving edits" exact
GREEDY_TOL = 1e-9


@dataclass
class GreedyState:
    """Where a query stands: its objective, the estimated rank of its first relevant document,
    and the non-relevant competitors (rows, best first) the next edit is scored against."""

    objective: float
    rank: int
    pool: np.ndarray
    best_relevant: float
    reference: float


@dataclass
class GreedyResult:
    """One query's greedy attack: the final text, status, costs and the edit trail."""

    query_id: str
    original: str
    attacked: str
    status: str  # success | failed | skipped
    stop: str  # success | no-improvement | max-edits | max-queries | no-candidates | skipped
    edits: int
    model_queries: int
    objective_clean: float
    objective_final: float
    rank_clean_est: int
    rank_final_est: int
    trail: list[dict[str, Any]] = field(default_factory=list)


def _reference_index(n_pool: int, k: int, objective: str) -> int:
    # topk: the k-th best competitor; with fewer competitors than k (tiny corpora) the last one,
    # so the objective stays finite and still rewards pushing relevant documents down.
    return 0 if objective == "top1" else max(0, min(k, n_pool) - 1)


def greedy_state(searcher: Searcher, rep: Any, rel_rows: np.ndarray, exclude: set[int],
                 old_pool: np.ndarray, k: int, objective: str) -> GreedyState:
    """Re-search once and evaluate the objective of the current query.

    The competitor pool is the union of the previous pool and the fresh top documents,
    rescored, best ``max(GREEDY_POOL_MIN, 3k)`` kept. Because the union contains the pool the
    accepted edit was scored on, the k-th best competitor can only be at least as strong as
    estimated, so the true objective after an edit is never above the estimate that got it
    accepted: accepted edits strictly lower the objective even with an approximate index.
    """
    size = max(GREEDY_POOL_MIN, 3 * k)
    rows, _ = searcher.top([rep], size + len(rel_rows) + len(exclude))
    fresh = rows[0][rows[0] >= 0]
    rel = set(rel_rows.tolist())
    pool = np.array(list(dict.fromkeys(int(r) for r in (*old_pool, *fresh) if r not in rel and r not in exclude)),
                    dtype=np.int64)
    s_pool = searcher.score([rep], pool)[0]
    order = np.argsort(-s_pool, kind="stable")[:size]
    pool, s_pool = pool[order], s_pool[order]
    best_rel = float(searcher.score([rep], rel_rows)[0].max())
    ref = float(s_pool[_reference_index(len(pool), k, objective)]) if len(pool) else -math.inf
    rank = 1 + int((s_pool > best_rel).sum())
    return GreedyState(best_rel - ref, rank, pool, best_rel, ref)


def greedy_query(searcher: Searcher, spec: PerturbSpec, qid: str, text: str, rel_rows: np.ndarray, exclude: set[int],
                 cfg: AttackConfig, rng: random.Random) -> GreedyResult:
    """Greedily attack one query.

    Each step scores every single edit of the current text (all words and positions of the
    spec's family) in one batched forward pass against the relevant documents and the current
    competitor pool, and accepts the edit with the lowest objective if it is strictly lower;
    then re-searches once (:func:`greedy_state`). When the remaining budget is smaller than the
    number of candidates a seeded random subset is scored (TextAttack's query budget).

    The objective is ``best relevant score - reference``, the reference being the k-th best
    non-relevant score (``topk``: negative exactly when every relevant document is pushed out of
    the top k, the goal of a rank-aware attack) or the best one (``top1``).
    """
    k = cfg.success_k
    rep = searcher.encode([text])[0]
    state = greedy_state(searcher, rep, rel_rows, exclude, np.zeros(0, np.int64), k, cfg.objective)
    clean_obj, clean_rank = state.objective, state.rank
    trail: list[dict[str, Any]] = []
    used = edits = 0
    if state.rank > k:
        return GreedyResult(qid, text, text, "skipped", "skipped", 0, 0, clean_obj, clean_obj, clean_rank,
                            clean_rank, trail)
    current = text
    stop = "max-edits"
    while edits < cfg.max_edits:
        remaining = cfg.max_queries - used
        if remaining <= 0:
            stop = "max-queries"
            break
        cands = edit_candidates(spec, current)
        if not cands:
            stop = "no-candidates"
            break
        if len(cands) > remaining:
            cands = [cands[i] for i in sorted(rng.sample(range(len(cands)), remaining))]
        reps = searcher.encode([c for c, _ in cands])
        used += len(cands)
        best_rel = searcher.score(reps, rel_rows).max(axis=1)
        s_pool = searcher.score(reps, state.pool)
        if s_pool.shape[1]:
            j = _reference_index(s_pool.shape[1], k, cfg.objective)
            ref = -np.partition(-s_pool, j, axis=1)[:, j]
        else:
            ref = np.full(len(reps), -math.inf)
        objs = best_rel - ref
        best = int(np.argmin(objs))  # ties: the first candidate, i.e. the earliest edit
        if not objs[best] < state.objective - GREEDY_TOL:
            stop = "no-improvement"
            break
        current, rep = cands[best][0], reps[best]
        state = greedy_state(searcher, rep, rel_rows, exclude, state.pool, k, cfg.objective)
        edits += 1
        trail.append({"edit": cands[best][1], "text": current, "objective": state.objective,
                      "estimated": float(objs[best]), "rank": state.rank, "candidates": len(cands)})
        if state.rank > k:
            stop = "success"
            break
    status = "success" if state.rank > k else "failed"
    return GreedyResult(qid, text, current, status, stop, edits, used, clean_obj, state.objective, clean_rank,
                        state.rank, trail)


def first_relevant_rank(run: RunDict, qrels: dict[str, dict[str, int]], depth: int) -> dict[str, int]:
    """Rank of the first relevant document per query in ``run`` (``depth + 1`` if not retrieved)."""
    out = {}
    for q, rels in qrels.items():
        ranked = sorted(run.get(q, {}).items(), key=lambda x: (-x[1], x[0]))
        out[q] = next((i for i, (d, _) in enumerate(ranked, 1) if rels.get(d, 0) > 0), depth + 1)
    return out


def greedy_attack(systems: list[System], spec: PerturbSpec, ds: Dataset, qids: list[str], measures: list,
                  cfg: AttackConfig, run: Run) -> pd.DataFrame:
    """Greedy-attack every query for every system; write the trail, summary and tables.

    The clean and attacked queries are finally retrieved and scored exactly as ``clirkit eval``
    does, so the measures (and the first relevant document's rank) are the system's, not the
    attack's internal estimate.
    """
    qrels = {q: ds.qrels[q] for q in qids}
    ignore = bool(ds.card.get("ignore_identical_ids"))
    label = f"greedy:{spec_label(spec)}"
    summary_rows, table_rows, long_rows = [], [], []
    with open(run.sub("queries") / "greedy.jsonl", "w", encoding="utf-8") as trail_file, progress() as bar:
        for system in systems:
            assert system.searcher is not None
            searcher = system.make_searcher(ignore_identical_ids=False, batch_size=None)  # one pass per step
            results: list[GreedyResult] = []
            task = bar.add_task(f"greedy {system.name}", total=len(qids), info="")
            for i, q in enumerate(qids):
                rel_rows = np.array([searcher.row_of[d] for d, g in ds.qrels[q].items()
                                     if g > 0 and d in searcher.row_of], dtype=np.int64)
                exclude = {searcher.row_of[q]} if ignore and q in searcher.row_of else set()
                rng = set_seed(cfg.seed).child(i).py
                r = greedy_query(searcher, spec, q, ds.queries[q], rel_rows, exclude, cfg, rng)
                results.append(r)
                trail_file.write(json.dumps({"system": system.name, **r.__dict__}, ensure_ascii=False) + "\n")
                n_ok = sum(x.status == "success" for x in results)
                bar.update(task, advance=1, info=f"{n_ok} succeeded")
            originals = {r.query_id: r.original for r in results}
            attacked = {r.query_id: r.attacked for r in results}
            clean_run = retrieve(system.searcher, originals, system.eval_cfg.top_k, ignore)
            att_run = _retrieve_changed(system, attacked, originals, clean_run, ignore)
            clean_pq, att_pq = score_run(qrels, clean_run, measures), score_run(qrels, att_run, measures)
            long_rows += [_long(clean_pq, system.name, "none", 0.0, None),
                          _long(att_pq, system.name, label, math.nan, cfg.seed)]
            table_rows += robustness_rows(system.name, label, math.nan, clean_pq, [att_pq])
            r_clean = first_relevant_rank(clean_run, qrels, cfg.top_k)
            r_att = first_relevant_rank(att_run, qrels, cfg.top_k)
            summary_rows.append(greedy_summary(system.name, label, results, r_clean, r_att, clean_pq, att_pq,
                                               searcher.search_encodes))
    metrics = run.sub("metrics")
    pd.concat(long_rows).to_csv(metrics / "per_query.csv", index=False)
    summary = pd.DataFrame(summary_rows)
    write_table(summary, metrics / "greedy_summary")
    table = pd.DataFrame(table_rows)
    shown = write_robustness(table, metrics / "robustness")
    stats_cols = ["system", "queries", "skipped", "succeeded", "success_rate", "mean_edits", "mean_model_queries",
                  "mean_rank_change"]
    print_table(summary[stats_cols], title=f"{ds.path.name}: greedy {spec_label(spec)} (k={cfg.success_k}, "
                                           f"<= {cfg.max_edits} edits, <= {cfg.max_queries} model queries per query)")
    print_table(shown.drop(columns=["rate", "seeds", "drop 95% CI"]), title="clean vs attacked")
    return summary


def greedy_summary(system: str, label: str, results: list[GreedyResult], rank_clean: dict[str, int],
                   rank_attacked: dict[str, int], clean: pd.DataFrame, attacked: pd.DataFrame,
                   search_encodes: int = 0) -> dict[str, Any]:
    """TextAttack's attack summary reframed for ranking.

    ``skipped`` queries already have no relevant document in the top k before any edit (the
    system fails them unattacked); success rate, mean edits and mean model queries are over
    the other (``attacked``) queries, as TextAttack reports them. Ranks are those of the first
    relevant document in the system's own runs (``top_k + 1`` when not retrieved).
    """
    att = [r for r in results if r.status != "skipped"]
    ok = [r for r in att if r.status == "success"]
    ids = [r.query_id for r in att]
    rc = np.array([rank_clean[q] for q in ids], dtype=float)
    ra = np.array([rank_attacked[q] for q in ids], dtype=float)
    row: dict[str, Any] = {
        "system": system, "perturbation": label, "queries": len(results), "skipped": len(results) - len(att),
        "attacked": len(att), "succeeded": len(ok),
        "success_rate": len(ok) / len(att) if att else math.nan,
        "mean_edits": float(np.mean([r.edits for r in att])) if att else math.nan,
        "mean_model_queries": float(np.mean([r.model_queries for r in att])) if att else math.nan,
        "mean_rank_clean": float(rc.mean()) if att else math.nan,
        "mean_rank_attacked": float(ra.mean()) if att else math.nan,
        "mean_rank_change": float((ra - rc).mean()) if att else math.nan,
        "median_rank_change": float(np.median(ra - rc)) if att else math.nan,
    }
    for m in clean.columns:
        row[f"{m} clean"] = float(clean[m].mean())
        row[f"{m} attacked"] = float(attacked[m].reindex(clean.index).mean())
    if search_encodes:
        row["search_encodes"] = search_encodes
    return row


