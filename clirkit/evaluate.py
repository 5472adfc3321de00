"""Search, score with ir_measures, and compare systems with paired significance tests.

Measures are ir_measures strings parsed by ``ir_measures.parse_measure`` (never hand-split);
table columns are ``str(measure)``. Per-query values come from ``ir_measures.iter_calc``;
a judged query the system returned nothing for scores 0 (pytrec_eval would silently drop it
and inflate the mean).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clirkit.config import EvalConfig
from clirkit.data.formats import Dataset, load_dataset
from clirkit.errors import ClirkitError
from clirkit.index import DenseIndex, ensure_index
from clirkit.models import EncoderPair, load_pair
from clirkit.report import print_table, write_table
from clirkit.rundir import start_run

log = logging.getLogger("clirkit")
RunDict = dict[str, dict[str, float]]
MAXSIM_EXHAUSTIVE_MAX_DOCS = 20_000


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


# --------------------------------------------------------------------------- search


def dense_search(index: DenseIndex, q_emb: np.ndarray, qids: list[str], k: int) -> RunDict:
    """Top-``k`` by inner product (cosine on normalised vectors) from the FAISS index."""
    k = min(k, len(index.doc_ids))
    scores, rows = index.faiss_index.search(np.ascontiguousarray(q_emb, dtype=np.float32), k)
    run: RunDict = {}
    for qid, srow, irow in zip(qids, scores, rows):
        run[qid] = {index.doc_ids[i]: float(s) for s, i in zip(srow, irow) if i >= 0}
    return run


def maxsim(q_tokens: np.ndarray, d_tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """ColBERT MaxSim of one query against documents given as concatenated token rows.

    score(q, d) = sum over query tokens of the max inner product with d's tokens
    (Khattab & Zaharia, ColBERT, SIGIR 2020). ``offsets`` has one more entry than documents.
    """
    sims = q_tokens.astype(np.float32) @ np.asarray(d_tokens, dtype=np.float32).T
    lengths = np.diff(offsets)
    out = np.full(len(lengths), -np.inf, dtype=np.float32)
    nonempty = lengths > 0
    if nonempty.any():
        starts = offsets[:-1][nonempty] - offsets[0]
        out[nonempty] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
    return out


def maxsim_search(index: DenseIndex, q_tokens: list[np.ndarray], qids: list[str], k: int,
                  candidates: RunDict | None) -> RunDict:
    """MaxSim over the whole corpus (``candidates=None``) or re-ranking each query's candidates."""
    if index.tokens is None or index.token_offsets is None:
        raise ClirkitError("this index has no token embeddings", fix="index with --scoring maxsim")
    offsets = index.token_offsets
    row_of = {d: i for i, d in enumerate(index.doc_ids)} if candidates is not None else {}
    run: RunDict = {}
    for qid, qt in zip(qids, q_tokens):
        if len(qt) == 0:
            run[qid] = {}
            continue
        if candidates is None:
            scores = maxsim(qt, index.tokens_f32, offsets)
            top = np.argsort(-scores)[:k]
            run[qid] = {index.doc_ids[i]: float(scores[i]) for i in top}
        else:
            rows = np.array(sorted(row_of[d] for d in candidates[qid]), dtype=np.int64)
            toks = [index.doc_tokens(r) for r in rows]
            cand_offsets = np.concatenate(([0], np.cumsum([len(t) for t in toks])))
            flat = np.concatenate(toks) if len(toks) else np.zeros((0, qt.shape[1]), dtype=np.float32)
            scores = maxsim(qt, flat, cand_offsets)
            run[qid] = {index.doc_ids[r]: float(s) for r, s in zip(rows, scores)}
    return run


def drop_identical(run: RunDict) -> RunDict:
    """BEIR's ``ignore_identical_ids``: a query never retrieves the document with its own id."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def retrieve(pair: EncoderPair, index: DenseIndex, queries: dict[str, str], cfg: EvalConfig,
             ignore_identical_ids: bool = False) -> RunDict:
    """Encode ``queries`` with the query encoder and search ``index`` under ``cfg.scoring``."""
    qids = list(queries)
    texts = [queries[q] for q in qids]
    extra = 1 if ignore_identical_ids else 0
    q_emb = pair.query.encode(texts, batch_size=cfg.batch_size)
    if cfg.scoring == "dense":
        run = dense_search(index, q_emb, qids, cfg.top_k + extra)
    else:
        exhaustive = cfg.maxsim_mode == "exhaustive" or (
            cfg.maxsim_mode == "auto" and len(index.doc_ids) <= MAXSIM_EXHAUSTIVE_MAX_DOCS)
        q_tok = pair.query.encode_tokens(texts, batch_size=cfg.batch_size)
        cands = None if exhaustive else dense_search(index, q_emb, qids, cfg.rerank_k + extra)
        run = maxsim_search(index, q_tok, qids, cfg.top_k + extra, cands)
    if ignore_identical_ids:
        run = drop_identical(run)
    return run


# --------------------------------------------------------------------------- scoring


def score_run(qrels: dict[str, dict[str, int]], run: RunDict, measures: list) -> pd.DataFrame:
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
    return per_query.mean(axis=0)


def write_trec(run: RunDict, path: Path, tag: str) -> None:
    """TREC run format ``qid Q0 docid rank score tag``, ranks by descending score (ties by id)."""
    with open(path, "w", encoding="utf-8") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda x: (-x[1], x[0]))
            for rank, (did, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def significance(per_query: dict[str, pd.DataFrame], baseline: str) -> pd.DataFrame:
    """Paired two-sided t-tests of every system against ``baseline`` per measure, Holm-corrected.

    References:
        Smucker, Allan, Carterette. A Comparison of Statistical Significance Tests for
        Information Retrieval Evaluation. CIKM 2007 (the paired t-test agrees with the
        randomization test on IR measures); Holm, Scand. J. Statistics 1979.
    """
    from scipy import stats

    base = per_query[baseline]
    rows = []
    for system, df in per_query.items():
        if system == baseline:
            continue
        common = base.index.intersection(df.index)
        for measure in base.columns.intersection(df.columns):
            a, b = df.loc[common, measure].to_numpy(), base.loc[common, measure].to_numpy()
            if np.allclose(a, b):
                t, p = 0.0, 1.0
            else:
                t, p = stats.ttest_rel(a, b)
            rows.append({"system": system, "baseline": baseline, "measure": measure, "n": len(common),
                         "mean": a.mean(), "baseline_mean": b.mean(), "delta": a.mean() - b.mean(),
                         "t": float(t), "p": float(p)})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = holm(out["p"].to_numpy())
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


# --------------------------------------------------------------------------- command


def query_encoder_name(pair: EncoderPair) -> str:
    return pair.query.name if pair.query is pair.doc else f"{pair.query.name}->{pair.doc.name}"


def evaluate(pair: EncoderPair, ds: Dataset, cfg: EvalConfig, run, queries: dict[str, str] | None = None
             ) -> tuple[RunDict, pd.DataFrame]:
    """Index (or reuse), retrieve and score; return the run and the per-query table."""
    measures = parse_measures(cfg.measures)
    index = ensure_index(pair.doc, ds, run, cfg.factory, cfg.scoring, cfg.batch_size)
    result = retrieve(pair, index, queries if queries is not None else ds.queries, cfg,
                      ignore_identical_ids=bool(ds.card.get("ignore_identical_ids")))
    return result, score_run(ds.qrels, result, measures)


def run_xglue_eval(cfg: EvalConfig) -> Path:
    """``clirkit eval --benchmark xglue``: per-language XGLUE table in one experiment directory.

    Queries and documents are encoded by the query encoder (XGLUE pairs are in one language).
    """
    from clirkit.data.xglue import TASKS, load_xglue, run_xglue, xglue_dir

    data_dir = xglue_dir(cfg.data_dir)
    task = cfg.task.lower()
    for lang in cfg.langs or TASKS.get(task, ((), ()))[1]:  # fail on missing files before any work
        load_xglue(task, lang, cfg.split, data_dir)
    pair = load_pair(cfg.model, cfg.query_model, cfg.doc_model, cfg.device)
    with start_run(cfg.runs_dir, "eval", cfg, cfg.seed) as run:
        run.add_inputs(query_model=pair.query.folder)
        run.record(models=pair.describe(), data_dir=str(data_dir))
        table = run_xglue(cfg.task, cfg.langs, data_dir, lambda texts: pair.query.encode(texts, cfg.batch_size),
                          split=cfg.split)
        run.add_inputs(xglue=data_dir)
        table = table.reset_index()
        write_table(table, run.sub("metrics") / f"xglue_{cfg.task}")
        print_table(table, title=f"XGLUE {cfg.task.upper()} ({cfg.split}) with {query_encoder_name(pair)}")
    return run.path


def run_eval(cfg: EvalConfig) -> Path:
    """``clirkit eval``: one experiment directory with run.trec and metrics tables."""
    if cfg.benchmark == "xglue":
        return run_xglue_eval(cfg)
    if cfg.dataset is None:
        raise ClirkitError("no dataset given", fix="pass --dataset DIR (a prepared dataset) or --benchmark xglue")
    parse_measures(cfg.measures)  # fail before any work
    ds = load_dataset(cfg.dataset, cfg.split)
    pair = load_pair(cfg.model, cfg.query_model, cfg.doc_model, cfg.device)
    queries = ds.queries
    if cfg.query_translation:
        from clirkit.lexicon import translator_for

        queries = translator_for(cfg.query_translation, ds)(queries)
    with start_run(cfg.runs_dir, "eval", cfg, cfg.seed) as run:
        run.add_inputs(dataset=ds.path, query_model=pair.query.folder, doc_model=pair.doc.folder)
        run.record(models=pair.describe())
        result, per_query = evaluate(pair, ds, cfg, run, queries)
        tag = f"clirkit-{cfg.scoring}"
        write_trec(result, run.path / "run.trec", tag)
        metrics = run.sub("metrics")
        per_query.to_csv(metrics / "per_query.csv")
        agg = aggregate(per_query).to_frame().T
        agg.insert(0, "system", query_encoder_name(pair))
        agg.insert(1, "scoring", cfg.scoring)
        agg.insert(2, "queries", len(per_query))
        write_table(agg, metrics / "aggregate")
        print_table(agg, title=f"{ds.path.name} ({cfg.split}, {len(per_query)} queries)")
    return run.path
