"""``clirkit eval``: search a test collection with one system and score the run.

Searching is :mod:`clirkit.retrieval` (one :class:`~clirkit.retrieval.Searcher` per system),
scoring and statistics are :mod:`clirkit.measures`, tables are :mod:`clirkit.tables`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from clirkit.config import BM25_MODEL, EvalConfig
from clirkit.data.formats import Dataset, load_dataset
from clirkit.errors import ClirkitError
from clirkit.index import ensure_index
from clirkit.measures import aggregate, parse_measures, score_run
from clirkit.models import EncoderPair, load_pair
from clirkit.retrieval import RunDict, Searcher, SearchSetup, build_searcher, retrieve
from clirkit.rundir import start_run
from clirkit.tables import print_table, write_table

log = logging.getLogger("clirkit")


def is_bm25(model: str | None) -> bool:
    """``--model bm25``: the lexical system, which has no encoders."""
    return model == BM25_MODEL


def searcher_for(pair: EncoderPair | None, index, cfg: EvalConfig, ignore_identical_ids: bool = False,
                 batch_size: int | None = -1, name: str | None = None, ds: Dataset | None = None,
                 run=None) -> Searcher:
    """The searcher of ``cfg`` over ``index`` (``batch_size`` -1: ``cfg.batch_size``): ``cfg.scoring``
    for encoders, ``bm25`` for ``--model bm25`` (its index is built or reused in ``run`` from ``ds``).

    With ``ignore_identical_ids`` one more dense candidate is re-ranked, as one more document
    is retrieved and the query's own id dropped (:func:`clirkit.retrieval.retrieve`).
    """
    bm25 = {"k1": cfg.bm25_k1, "b": cfg.bm25_b, "method": cfg.bm25_method, "stem": cfg.bm25_stem,
            "stopwords": cfg.bm25_stopwords}
    return build_searcher(SearchSetup(
        scoring=BM25_MODEL if is_bm25(cfg.model) else cfg.scoring, pair=pair, index=lambda: index,
        maxsim_mode=cfg.maxsim_mode, rerank_k=cfg.rerank_k + (1 if ignore_identical_ids else 0),
        batch_size=cfg.batch_size if batch_size == -1 else batch_size, name=name or system_name(pair),
        extra={"dataset": ds, "run": run, "bm25": bm25}))


def write_trec(run: RunDict, path: Path, tag: str) -> None:
    """TREC run format ``qid Q0 docid rank score tag``, ranks by descending score (ties by id)."""
    with open(path, "w", encoding="utf-8") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda x: (-x[1], x[0]))
            for rank, (did, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


# --------------------------------------------------------------------------- command


def system_name(pair: EncoderPair | None) -> str:
    """The encoders' name, ``bm25`` for the lexical system (no encoders)."""
    return BM25_MODEL if pair is None else query_encoder_name(pair)


def query_encoder_name(pair: EncoderPair) -> str:
    return pair.query.name if pair.query is pair.doc else f"{pair.query.name}->{pair.doc.name}"


def evaluate(pair: EncoderPair | None, ds: Dataset, cfg: EvalConfig, run, queries: dict[str, str] | None = None
             ) -> tuple[RunDict, pd.DataFrame]:
    """Index (or reuse), retrieve and score; return the run and the per-query table.

    ``pair`` is None for ``--model bm25`` (no dense index; the searcher builds its own).
    """
    measures = parse_measures(cfg.measures)
    index = None if pair is None else ensure_index(pair.doc, ds, run, cfg.factory, cfg.scoring, cfg.batch_size)
    ignore = bool(ds.card.get("ignore_identical_ids"))
    searcher = searcher_for(pair, index, cfg, ignore, ds=ds, run=run)
    result = retrieve(searcher, queries if queries is not None else ds.queries, cfg.top_k, ignore)
    if getattr(searcher, "record", None):
        run.record(retrieval=searcher.record)
    return result, score_run(ds.qrels, result, measures)


def run_xglue_eval(cfg: EvalConfig) -> Path:
    """``clirkit eval --benchmark xglue``: per-language XGLUE table in one experiment directory.

    Queries and documents are encoded by the query encoder (XGLUE pairs are in one language).
    """
    from clirkit.data.xglue import TASKS, load_xglue, run_xglue, xglue_dir

    if is_bm25(cfg.model):
        raise ClirkitError("--model bm25 is not available with --benchmark xglue (it scores encoders)",
                           fix="pass an encoder as --model")
    data_dir = xglue_dir(cfg.data_dir)
    task = cfg.task.lower()
    for lang in cfg.langs or TASKS.get(task, ((), ()))[1]:  # fail on missing files before any work
        load_xglue(task, lang, cfg.split, data_dir)
    pair = load_pair(cfg.model, cfg.query_model, cfg.doc_model, cfg.device, cfg.precision, cfg.devices)
    with start_run(cfg.runs_dir, "eval", cfg, cfg.seed) as run:
        run.add_inputs(query_model=pair.query.folder)
        run.record(models=pair.describe(), data_dir=str(data_dir))
        table = run_xglue(cfg.task, cfg.langs, data_dir, lambda texts: pair.query.encode(texts, cfg.batch_size),
                          split=cfg.split, predictions_dir=run.sub("predictions"))
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
    pair = None if is_bm25(cfg.model) else load_pair(cfg.model, cfg.query_model, cfg.doc_model, cfg.device,
                                                      cfg.precision, cfg.devices)
    queries = ds.queries
    if cfg.query_translation:
        from clirkit.lexicon import translator_for

        queries = translator_for(cfg.query_translation, ds)(queries)
    with start_run(cfg.runs_dir, "eval", cfg, cfg.seed) as run:
        if pair is None:
            run.add_inputs(dataset=ds.path)
            run.record(models={"system": BM25_MODEL})  # the index, analyzer included, is recorded under bm25
        else:
            run.add_inputs(dataset=ds.path, query_model=pair.query.folder, doc_model=pair.doc.folder)
            run.record(models=pair.describe())
        result, per_query = evaluate(pair, ds, cfg, run, queries)
        scoring = BM25_MODEL if pair is None else cfg.scoring
        tag = f"clirkit-{scoring}"
        write_trec(result, run.path / "run.trec", tag)
        metrics = run.sub("metrics")
        per_query.to_csv(metrics / "per_query.csv")
        agg = aggregate(per_query).to_frame().T
        agg.insert(0, "system", system_name(pair))
        agg.insert(1, "scoring", scoring)
        agg.insert(2, "queries", len(per_query))
        write_table(agg, metrics / "aggregate")
        print_table(agg, title=f"{ds.path.name} ({cfg.split}, {len(per_query)} queries)")
    return run.path
