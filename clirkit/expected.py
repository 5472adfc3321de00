"""Pinned expected results, in the manner of Pyserini's two-click reproductions: a JSON file of
the scores a known configuration gives, and ``clirkit check-expected RUN FILE`` saying which
of a finished run's results agree with them (``--write`` pins a run's results).

File format (``experiments/expected/*.json``, ``tests/expected/*.json``)::

    {
      "format": 1,
      "description": "what produced these numbers",
      "command": "run",                      # the pinned run's command and configuration
      "config": {...},
      "atol": 0.0001,                        # default tolerance (--atol overrides)
      "results": [
        {"table": "aggregate", "dataset": "bible-en-tl", "scoring": "dense", "system": "zero-shot",
         "condition": "", "scores": {"nDCG@10": 0.3012, "RR@10": 0.2875}},
        ...
      ]
    }

The pinned rows are the run's aggregate table (its retrieval measures; a distillation's final
and best dev measures when it has none). Only pinned rows are checked: a run may have more.

Reference: Lin et al., Pyserini: A Python Toolkit for Reproducible Information Retrieval
Research with Sparse and Dense Representations, SIGIR 2021 (its "two-click reproductions").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from clirkit.config import Config
from clirkit.errors import ClirkitError
from clirkit.rundir import read_json, write_json
from clirkit.runs import KEYS, require_completed, run_results

FORMAT = 1
DEFAULT_ATOL = 1e-4
_ROW_KEYS = [k for k in KEYS if k != "measure"]


class ExpectedConfig(Config):
    """``clirkit check-expected``: compare a run with pinned scores (or pin them)."""

    run: Path = Field(..., description="a finished experiment directory")
    expected: Path = Field(..., description="the JSON file of pinned scores")
    atol: float | None = Field(None, ge=0, description="tolerance (default: the file's atol)")
    write: bool = Field(False, description="pin the run's results into the file instead of checking")


def pinned_results(run: Path) -> pd.DataFrame:
    """The results of ``run`` worth pinning: its aggregate table without the sd columns, or
    (a distillation) its training results."""
    res = run_results(run)
    agg = res[(res.table == "aggregate") & ~res.measure.str.endswith("_sd")]
    return agg if len(agg) else res


def write_expected(run: Path, path: Path, atol: float = DEFAULT_ATOL, description: str = "") -> Path:
    """Pin the results of a completed ``run`` into ``path`` (see the module docstring for the format)."""
    require_completed(run)
    res = pinned_results(run)
    if res.empty:
        raise ClirkitError("the run has no results to pin", path=run, fix="pin an eval, distill, attack or run")
    config = read_json(run / "config.json")
    config.pop("runs_dir", None)
    results = []
    for key, group in res.groupby(_ROW_KEYS, sort=False):
        results.append({**dict(zip(_ROW_KEYS, key)), "scores": dict(zip(group.measure, group.value))})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": FORMAT, "description": description or f"pinned from {run.name}",
                      "command": config.pop("command", None), "config": config, "atol": atol,
                      "results": results})
    return path


def load_expected(path: Path) -> tuple[pd.DataFrame, float]:
    """The pinned rows (:data:`clirkit.runs.KEYS` + ``value``) and the file's tolerance."""
    if not path.is_file():
        raise ClirkitError("no pinned scores here", path=path,
                           fix=f"pin a run's scores with `clirkit check-expected RUN {path} --write`")
    data: Any = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), list):
        raise ClirkitError(f"not a pinned-scores file (format {FORMAT} with a results list)", path=path,
                           fix="write it with `clirkit check-expected RUN FILE --write`")
    rows = []
    for i, entry in enumerate(data["results"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("scores"), dict):
            raise ClirkitError(f"results[{i}] has no scores object", path=path)
        key = {k: str(entry.get(k, "")) for k in _ROW_KEYS}
        rows += [{**key, "measure": m, "value": float(v)} for m, v in entry["scores"].items()]
    return pd.DataFrame(rows, columns=[*KEYS, "value"]), float(data.get("atol", DEFAULT_ATOL))


def check_expected(run: Path, path: Path, atol: float | None = None) -> pd.DataFrame:
    """Verdict rows (``recorded`` = pinned, ``reproduced`` = the run's) for every pinned result.

    A pinned result the run lacks is a DIFF; results the file does not pin are ignored. A run
    that is not completed (running, failed, interrupted) is refused: its tables are partial.
    """
    from clirkit.reproduce import compare_results

    require_completed(run)
    pinned, file_atol = load_expected(path)
    return compare_results(pinned, run_results(run), file_atol if atol is None else atol, how="left")


def run_check_expected(cfg: ExpectedConfig) -> bool:
    """``clirkit check-expected``: print which pinned rows agree; True if all do (or after ``--write``)."""
    from clirkit.progress import err
    from clirkit.reproduce import print_verdict

    if cfg.write:
        write_expected(cfg.run, cfg.expected, DEFAULT_ATOL if cfg.atol is None else cfg.atol)
        err.print(f"pinned the results of {cfg.run} in {cfg.expected}", highlight=False, soft_wrap=True)
        return True
    table = check_expected(cfg.run, cfg.expected, cfg.atol)
    print_verdict(table, f"{cfg.run.name} against {cfg.expected}", labels=("expected", "got"))
    bad = int((table["verdict"] != "OK").sum())
    err.print(f"{len(table) - bad} of {len(table)} pinned results agree" + (f"; {bad} differ" if bad else ""),
              highlight=False, soft_wrap=True)
    return bad == 0 and len(table) > 0

