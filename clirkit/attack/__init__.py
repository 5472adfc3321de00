"""Random and adversarial query attacks on cross-lingual retrievers, and robustness tables.

Two searches, both over the perturbation families of :mod:`clirkit.perturb`:

- **random**: every query is perturbed by ``perturb_many`` for each perturbation spec, rate and
  seed, retrieved and scored exactly as ``clirkit eval`` does, and compared with the clean run
  (computed once). The robustness table reports, per system x perturbation x rate x measure,
  the clean and attacked means, the absolute and relative drop, a 95% t-interval of the drop
  over seeds, and a paired t-test of clean vs perturbed per query.
- **greedy**: a rank-aware, score-based black-box attack in the spirit of TextAttack's greedy
  search (Morris et al., "TextAttack: A Framework for Adversarial Attacks, Data Augmentation,
  and Adversarial Training in NLP", EMNLP 2020 demos), with the classification goal replaced
  by a ranking goal as in ranking attacks (Liu et al., "Order-Disorder: Imitation Adversarial
  Attacks for Black-box Neural Ranking Models", CCS 2022; Wu et al., "PRADA: Practical
  Black-box Adversarial Attacks against Neural Ranking Models", TOIS 2023). Per query it
  repeatedly applies the single edit (:func:`clirkit.perturb.edit_candidates`) that most
  lowers a margin between the relevant documents and their competitors, until no relevant
  document is left in the top ``success_k``, no edit helps, or a budget is spent.

Everything goes into one experiment directory (``start_run(..., "attack", ...)``)::

    queries/<spec>-rate<r>-seed<s>.jsonl   perturbed queries (BEIR records), random search
    queries/greedy.jsonl                   each query's edit trail, greedy search
    metrics/per_query.csv                  long: system, perturbation, rate, seed, query_id, measures
    metrics/robustness.csv + .md           clean vs attacked per system x perturbation x rate x measure
    metrics/greedy_summary.csv + .md       success rate, edits, model queries, rank change (greedy)
    plots/<measure>.png                    measure vs rate, one line per system (random)
"""

from __future__ import annotations

import logging
from pathlib import Path

from clirkit.attack.common import (
    System,
    Variant,
    attach_indexes,
    attacked_query_ids,
    dataset_of_run,
    eval_config,
    fused_system,
    latest_distill_run,
    load_systems,
    parse_specs,
    plan_variants,
    resolve_target,
)
from clirkit.attack.greedy import (
    GreedyResult,
    GreedyState,
    first_relevant_rank,
    greedy_attack,
    greedy_query,
    greedy_state,
)
from clirkit.attack.random_search import random_attack
from clirkit.attack.xglue import run_xglue_attack
from clirkit.config import AttackConfig
from clirkit.data.formats import load_dataset
from clirkit.errors import ClirkitError
from clirkit.measures import parse_measures
from clirkit.perturb import edit_candidates, spec_label
from clirkit.rundir import start_run
from clirkit.tables import write_robustness

log = logging.getLogger("clirkit")
__all__ = ["GreedyResult", "GreedyState", "System", "Variant", "attacked_query_ids", "dataset_of_run", "eval_config",
           "first_relevant_rank", "greedy_attack", "greedy_query", "greedy_state", "latest_distill_run",
           "random_attack",
           "parse_specs", "plan_variants", "resolve_target", "run_attack", "spec_label",
           "write_robustness"]


def run_attack(cfg: AttackConfig) -> Path:
    """``clirkit attack``: one experiment directory with perturbed queries and robustness tables.

    All user errors (unknown perturbation, bad rate, empty query, no distill run for a bare
    call, unknown measure) are raised before any model is loaded or directory created.
    """
    if cfg.benchmark == "xglue":
        return run_xglue_attack(cfg)
    measures = parse_measures(cfg.measures)
    specs = parse_specs(cfg)
    if cfg.search == "greedy" and len(specs) > 1:
        raise ClirkitError("the greedy attack takes one perturbation family", fix="pass one --perturb")
    models, dataset, chosen = resolve_target(cfg)
    if chosen is not None:  # config.json must name what ran, not "the newest distill run" of that day
        cfg = cfg.model_copy(update={"model": models, "dataset": dataset})
    ds = load_dataset(dataset, cfg.split)
    qids = attacked_query_ids(ds, cfg)
    variants = plan_variants(cfg, specs, ds, qids) if cfg.search == "random" else []
    if cfg.search == "greedy":
        edit_candidates(specs[0], ds.queries[qids[0]])  # a family without single edits fails here
    systems = load_systems(cfg, models, ds)
    with start_run(cfg.runs_dir, "attack", cfg, cfg.seed) as run:
        if chosen is not None:
            log.info("attacking the newest completed distill run %s on %s", chosen, ds.path)
        if cfg.fuse is not None:
            systems = [fused_system(cfg, systems)]
        members = [m for s in systems for m in (s.members or [s])]
        run.record(attacked_run=str(chosen) if chosen else None, dataset=str(ds.path),
                   systems=[s.describe() for s in systems])
        run.add_inputs(dataset=ds.path, **{f"model_{i}": p for i, p in enumerate(dict.fromkeys(
            f for s in members if s.pair is not None for f in (s.pair.query.folder, s.pair.doc.folder)))})
        attach_indexes(members, ds, cfg, run)
        for s in systems:
            if s.members is not None:
                s.searcher = s.make_searcher(bool(ds.card.get("ignore_identical_ids")))
        if cfg.search == "random":
            random_attack(systems, variants, ds, qids, measures, run)
        else:
            greedy_attack(systems, specs[0], ds, qids, measures, cfg, run)
    return run.path

