"""``clirkit reproduce <dir>``: re-run a finished experiment directory's configuration and check
that it gives the same metrics (same inputs and seed -> same numbers, the GUIDE's promise)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clirkit.config import build
from clirkit.errors import ClirkitError
from clirkit.rundir import read_json, run_status

log = logging.getLogger("clirkit")


def _commands() -> dict:
    """command name -> (config class, run function); imported lazily (torch is heavy)."""
    from clirkit.attack import run_attack
    from clirkit.config import AttackConfig, DistillConfig, EvalConfig, IndexConfig
    from clirkit.distill import run_distill
    from clirkit.evaluate import run_eval
    from clirkit.experiment import ExperimentConfig, run_experiment
    from clirkit.index import run_index

    return {"index": (IndexConfig, run_index), "eval": (EvalConfig, run_eval), "distill": (DistillConfig, run_distill),
            "attack": (AttackConfig, run_attack), "run": (ExperimentConfig, run_experiment)}


def compare_tables(a: Path, b: Path, atol: float) -> pd.DataFrame:
    """Max absolute difference of the numeric columns of every CSV under ``metrics/`` of two runs."""
    rows = []
    for f in sorted((a / "metrics").glob("*.csv")):
        other = b / "metrics" / f.name
        if not other.is_file():
            rows.append({"table": f.name, "max_abs_diff": float("inf"), "same": False})
            continue
        x, y = pd.read_csv(f), pd.read_csv(other)
        if x.shape != y.shape or list(x.columns) != list(y.columns):
            rows.append({"table": f.name, "max_abs_diff": float("inf"), "same": False})
            continue
        num = x.select_dtypes("number").columns
        diff = float(np.nanmax(np.abs(x[num].to_numpy(float) - y[num].to_numpy(float)))) if len(num) else 0.0
        text_same = x.drop(columns=num).astype(str).equals(y.drop(columns=num).astype(str))
        rows.append({"table": f.name, "max_abs_diff": diff, "same": bool(diff <= atol and text_same)})
    return pd.DataFrame(rows)


def reproduce(run: Path, runs_dir: Path | None = None, atol: float = 1e-6) -> tuple[Path, pd.DataFrame]:
    """Re-run ``run``'s config (into ``runs_dir``, default its own runs dir) and compare metrics."""
    if run_status(run) != "completed":
        raise ClirkitError("not a completed experiment directory", path=run, fix="pass a run whose status is completed")
    config = read_json(run / "config.json")
    command = config.pop("command", None)
    commands = _commands()
    if command not in commands:
        raise ClirkitError(f"cannot reproduce a {command!r} run", path=run / "config.json",
                           fix=f"reproducible commands: {', '.join(commands)}")
    cls, fn = commands[command]
    if runs_dir is not None:
        config["runs_dir"] = str(runs_dir)
    cfg = build(cls, str(run / "config.json"), **config)
    new = fn(cfg)
    return new, compare_tables(run, new, atol)
