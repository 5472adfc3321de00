"""The random attack: every query perturbed per spec x rate x seed, retrieved and scored as
``clirkit eval`` does, and compared with the clean run."""

from __future__ import annotations

from typing import Any

import pandas as pd

from clirkit.attack.common import System, Variant, _long, _retrieve_changed, write_queries
from clirkit.data.formats import Dataset
from clirkit.measures import robustness_rows, score_run
from clirkit.progress import progress
from clirkit.retrieval import retrieve
from clirkit.rundir import Run
from clirkit.tables import plot_robustness, print_table, write_robustness


def random_attack(systems: list[System], variants: list[Variant], ds: Dataset, qids: list[str],
                  measures: list, run: Run) -> pd.DataFrame:
    """Retrieve and score every variant for every system; write queries, tables and plots."""
    qrels = {q: ds.qrels[q] for q in qids}
    originals = {q: ds.queries[q] for q in qids}
    ignore = bool(ds.card.get("ignore_identical_ids"))
    qdir = run.sub("queries")
    for v in variants:
        write_queries(qdir / f"{v.stem}.jsonl", v.texts, ds)
    long_rows: list[pd.DataFrame] = []
    table_rows: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("attacking", total=len(systems) * (len(variants) + 1), info="")
        for system in systems:
            assert system.searcher is not None
            bar.update(task, info=f"{system.name}: clean")
            clean_run = retrieve(system.searcher, originals, system.eval_cfg.top_k, ignore)
            clean = score_run(qrels, clean_run, measures)
            long_rows.append(_long(clean, system.name, "none", 0.0, None))
            bar.advance(task)
            by_cell: dict[tuple[str, float], list[pd.DataFrame]] = {}
            for v in variants:
                bar.update(task, info=f"{system.name}: {v.stem}")
                result = _retrieve_changed(system, v.texts, originals, clean_run, ignore)
                pq = score_run(qrels, result, measures)
                by_cell.setdefault((v.label, v.rate), []).append(pq)
                long_rows.append(_long(pq, system.name, v.label, v.rate, v.seed))
                bar.advance(task)
            for (label, rate), frames in by_cell.items():
                table_rows.extend(robustness_rows(system.name, label, rate, clean, frames))
    metrics = run.sub("metrics")
    pd.concat(long_rows).to_csv(metrics / "per_query.csv", index=False)
    table = pd.DataFrame(table_rows)
    shown = write_robustness(table, metrics / "robustness")
    if not table["rate"].isna().all():
        plot_robustness(table.dropna(subset=["rate"]), run.sub("plots"))
    print_table(shown.drop(columns=["seeds", "queries"]),
                title=f"{ds.path.name}: random attack ({len(qids)} queries, {len({v.seed for v in variants})} seed(s))")
    return table


