"""``clirkit attack --benchmark xglue``: perturbed XGLUE queries, the drop per language."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from clirkit.attack.common import parse_specs
from clirkit.config import AttackConfig
from clirkit.errors import ClirkitError
from clirkit.measures import t_interval
from clirkit.models import load_pair
from clirkit.perturb import PerturbSpec, perturb_many, spec_labels
from clirkit.rundir import start_run
from clirkit.tables import print_table


def xglue_scores(task: str, data, encode, threshold: float | None) -> float:
    """The XGLUE headline of one file: official WPR nDCG, or QAM/QADSM accuracy at ``threshold``."""
    from clirkit.data.xglue import accuracy, score_wpr

    return score_wpr(data, encode)["nDCG_xglue"] if task == "wpr" else accuracy(data, encode, threshold)


def run_xglue_attack(cfg: AttackConfig) -> Path:
    """``clirkit attack --benchmark xglue``: perturb the XGLUE queries (WPR, QADSM) or questions
    (QAM) of every language and report the drop per language.

    The QAM/QADSM threshold stays the one fixed on the clean English dev set, as in
    :func:`clirkit.data.xglue.run_xglue`, so only the queries change.
    """
    from clirkit.data.xglue import TASKS, _require_labels, best_threshold, load_xglue, pair_scores, xglue_dir

    specs = parse_specs(cfg)
    task = cfg.task.lower()
    if task not in TASKS:
        raise ClirkitError(f"unknown XGLUE task {cfg.task!r}", fix=f"use one of: {', '.join(TASKS)}")
    data_dir = xglue_dir(cfg.data_dir)
    langs = cfg.langs or list(TASKS[task][1])
    files = {lang: load_xglue(task, lang, cfg.split, data_dir) for lang in langs}  # fails before any work
    en_dev = load_xglue(task, "en", "dev", data_dir) if task != "wpr" else None
    rated = [(label, r, PerturbSpec(s.name, {**s.params, "rate": r}) if cfg.rates else s)
             for s, label in zip(specs, spec_labels(specs))
             for r in (cfg.rates or [s.with_defaults().params.get("rate", math.nan)])]
    models = cfg.model or ["minilm"]
    cfg = cfg.model_copy(update={"model": models})  # config.json names what ran: reproduce re-runs it
    with start_run(cfg.runs_dir, "attack", cfg, cfg.seed) as run:
        run.add_inputs(xglue=data_dir)
        rows = []
        for model in models:
            encoder = load_pair(model, device=cfg.device, precision=cfg.precision, devices=cfg.devices).query
            run.add_inputs(**{f"model_{model}": encoder.folder})

            def encode(texts: list[str], encoder=encoder) -> np.ndarray:
                return encoder.encode(texts, cfg.batch_size)

            threshold = None
            if en_dev is not None:
                threshold, _ = best_threshold(pair_scores(en_dev, encode), _require_labels(en_dev))
            for lang, data in files.items():
                clean = xglue_scores(task, data, encode, threshold)
                for label, rate, spec in rated:
                    attacked = [xglue_scores(task, data.with_group_queries(
                        perturb_many(spec, data.group_queries(), seed)), encode, threshold)
                        for seed in range(cfg.seed, cfg.seed + cfg.seeds)]
                    drops = clean - np.array(attacked)
                    lo, hi = t_interval(drops)
                    rows.append({"system": model, "lang": lang, "perturbation": label, "rate": rate,
                                 "measure": "nDCG_xglue" if task == "wpr" else "accuracy", "clean": clean,
                                 "attacked": float(np.mean(attacked)), "drop": float(drops.mean()),
                                 "rel_drop": float(drops.mean() / clean) if clean > 0 else math.nan,
                                 "ci_low": lo, "ci_high": hi,
                                 "seeds": len(drops)})
        table = pd.DataFrame(rows)
        table.to_csv(run.sub("metrics") / f"xglue_{task}_robustness.csv", index=False)
        (run.path / "metrics" / f"xglue_{task}_robustness.md").write_text(
            table.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8")
        print_table(table.drop(columns=["ci_low", "ci_high"]), title=f"XGLUE {task.upper()} under attack")
    return run.path


