"""``clirkit reproduce RUN``: run a finished experiment's recorded configuration again, from
scratch, and check that every result comes out the same (same inputs and seed -> same numbers,
the GUIDE's promise).

1. The run must be a completed experiment directory (else one line, exit 2).
2. Every input recorded in its manifest (and, for a grid, in its children's manifests) must
   still have its recorded sha256; a changed or vanished file is named and nothing runs.
3. The configuration runs inside :func:`clirkit.rundir.fresh_run`: no completed run, stored
   index or cache entry is reused, so a corrupted artefact cannot be "reproduced".
4. The results (:func:`clirkit.runs.run_results`; for an index, :func:`compare_index`: document
   ids, embeddings, token offsets and, exactly, the FAISS file) are compared row by row; the
   verdict goes to ``metrics/reproduce.csv`` of the new directory (before it is marked
   completed) and to the console. Timings and paths are never compared.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from clirkit.config import Config, build
from clirkit.data.formats import sha256_file
from clirkit.errors import ClirkitError
from clirkit.rundir import Run, before_completed, fresh_run, read_json
from clirkit.runs import KEYS, grid_children, require_completed, run_results

log = logging.getLogger("clirkit")
VERDICT = [*KEYS, "recorded", "reproduced", "difference", "verdict"]


class ReproduceConfig(Config):
    """``clirkit reproduce``: re-run a finished experiment from scratch and compare its results."""

    run: Path = Field(..., description="a completed experiment directory (eval, index, distill, attack or run)")
    atol: float = Field(0.0, ge=0, description="largest difference accepted per result (0: exact, as on CPU; "
                                               "e.g. 1e-4 on a GPU)")


@dataclass
class Reproduction:
    """What ``clirkit reproduce`` found.

    Attributes:
        original: the reproduced run.
        path: the new experiment directory (None when an input changed and nothing ran).
        changed: ``(input file, "changed" | "vanished")`` for every input that is not as recorded.
        table: the verdict rows (:data:`VERDICT` columns).
    """

    original: Path
    path: Path | None
    changed: list[tuple[str, str]] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VERDICT))

    @property
    def agree(self) -> bool:
        return not self.changed and len(self.table) > 0 and bool((self.table["verdict"] == "OK").all())


def _commands() -> dict[str, tuple[type[Config], Any]]:
    """command name -> (config class, run function); imported lazily (torch is heavy)."""
    from clirkit.attack import run_attack
    from clirkit.config import AttackConfig, DistillConfig, EvalConfig, IndexConfig
    from clirkit.distill import run_distill
    from clirkit.evaluate import run_eval
    from clirkit.experiment import ExperimentConfig, run_experiment
    from clirkit.index import run_index

    return {"index": (IndexConfig, run_index), "eval": (EvalConfig, run_eval), "distill": (DistillConfig, run_distill),
            "attack": (AttackConfig, run_attack), "run": (ExperimentConfig, run_experiment)}


# --------------------------------------------------------------------------- before any work


def check_reproducible(run: Path) -> dict[str, Any]:
    """The recorded configuration of ``run``, or a ClirkitError (exit 2) saying why it cannot be reproduced."""
    require_completed(run)
    config = read_json(run / "config.json")
    command = config.get("command")
    if command not in ("index", "eval", "distill", "attack", "run"):
        raise ClirkitError(f"cannot reproduce a {command!r} run", path=run / "config.json",
                           fix="reproduce an index, eval, distill, attack or run directory")
    if command == "distill" and config.get("resume"):
        raise ClirkitError(f"a resumed distillation continues the stored state of {config['resume']}", path=run,
                           fix="reproduce the run it resumed from (a reproduction reuses no stored state)")
    if command == "attack" and not config.get("model") and config.get("benchmark") == "xglue":
        config["model"] = ["minilm"]  # recorded before an XGLUE attack wrote its default model
    elif command == "attack" and not config.get("model"):
        # runs recorded before attack wrote its resolved target: the manifest names it
        manifest = read_json(run / "manifest.json")
        if not manifest.get("attacked_run"):
            raise ClirkitError("the attack records no model", path=run / "manifest.json", fix="re-run it with --model")
        config["model"] = [manifest["attacked_run"]]
        config["dataset"] = config.get("dataset") or manifest.get("dataset")
    return config


def recorded_inputs(run: Path) -> dict[str, str]:
    """``file -> sha256`` of every input of ``run``; a grid adds its children's inputs (its steps,
    found beside it: :func:`clirkit.runs.grid_children`), except the files its own children
    produced (their checkpoints are made again).

    Raises:
        ClirkitError: a step of the grid is missing (its inputs cannot be checked).
    """
    inputs: dict[str, str] = {}
    children = grid_children(run)
    for source in (run, *children):
        try:
            groups = read_json(source / "manifest.json").get("inputs", {})
        except ClirkitError:
            continue
        for files in groups.values():
            inputs.update(files)
    # a child's files, by its run id (unique) in the path: the recorded path may be relative to
    # the grid's working directory, or point to where the runs directory was before it moved
    produced = {c.name for c in children}
    return {f: d for f, d in inputs.items() if produced.isdisjoint(Path(f).parts)}


def changed_inputs(inputs: dict[str, str]) -> list[tuple[str, str]]:
    """``(file, "vanished" | "changed")`` for every input without its recorded sha256."""
    out = []
    for f, digest in inputs.items():
        p = Path(f)
        if not p.is_file():
            out.append((f, "vanished"))
        elif sha256_file(p) != digest:
            out.append((f, "changed"))
    return out


# --------------------------------------------------------------------------- comparison


def compare_results(recorded: pd.DataFrame, reproduced: pd.DataFrame, atol: float, how: str = "outer"
                    ) -> pd.DataFrame:
    """One verdict row per result key of either side (``how="left"``: of ``recorded`` only); a
    row missing on one side is a DIFF. Two NaNs (an undefined value) agree."""
    both = recorded.merge(reproduced, on=KEYS, how=how, suffixes=("_rec", "_rep"), indicator=True)
    rows = []
    for r in both.to_dict("records"):
        a, b = r["value_rec"], r["value_rep"]
        if r["_merge"] != "both":
            diff, ok = math.inf, False
        elif math.isnan(a) and math.isnan(b):
            diff, ok = 0.0, True
        else:
            diff = abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf
            ok = diff <= atol
        rows.append({**{k: r[k] for k in KEYS}, "recorded": a, "reproduced": b, "difference": diff,
                     "verdict": "OK" if ok else "DIFF"})
    return pd.DataFrame(rows, columns=VERDICT)


def _mismatches(a: list | np.ndarray, b: list | np.ndarray) -> int:
    """Positions where two sequences differ, plus the difference of their lengths."""
    n = min(len(a), len(b))
    return int(np.count_nonzero(np.asarray(a[:n]) != np.asarray(b[:n]))) + abs(len(a) - len(b))


def compare_index(recorded: Path, reproduced: Path, atol: float) -> pd.DataFrame:
    """An index's verdict rows: the document ids (identical, in order); the largest absolute
    difference of the embeddings (and of a maxsim index's token embeddings); a maxsim index's
    token offsets (integers: identical); and, when exactness is asked (``atol`` 0), the sha256
    of the FAISS index file (with a tolerance its bytes may differ as the vectors may)."""
    rows = []

    def ids(p: Path) -> list[str]:
        return (p / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[:-1] if (p / "doc_ids.txt").is_file() \
            else []

    def row(measure: str, recorded_value: float, reproduced_value: float, diff: float, ok: bool) -> None:
        rows.append({"measure": measure, "recorded": recorded_value, "reproduced": reproduced_value,
                     "difference": diff, "verdict": "OK" if ok else "DIFF"})

    def present(name: str) -> bool:
        return (recorded / name).is_file() or (reproduced / name).is_file()

    def load(name: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            return np.load(recorded / name, mmap_mode="r"), np.load(reproduced / name, mmap_mode="r")
        except (OSError, ValueError):  # missing, truncated or overwritten: a disagreement, not a crash
            return None

    a, b = ids(recorded), ids(reproduced)
    mismatched = _mismatches(a, b)
    row("doc_ids", float(len(a)), float(len(b)), float(mismatched), mismatched == 0)
    for name in ("embeddings.npy", "tokens.npy"):
        if not present(name):
            continue
        pair = load(name)
        if pair is None:
            row(f"{name} max |diff|", math.nan, math.nan, math.inf, False)
            continue
        x, y = pair
        diff = float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) \
            if x.shape == y.shape and x.size else (0.0 if x.shape == y.shape else math.inf)
        row(f"{name} max |diff|", float(x.shape[0]), float(y.shape[0]), diff, diff <= atol)
    if present("token_offsets.npy"):  # which tokens belong to which document: integers, exact at any atol
        pair = load("token_offsets.npy")
        if pair is None:
            row("token_offsets.npy mismatches", math.nan, math.nan, math.inf, False)
        else:
            mismatched = _mismatches(*pair)
            row("token_offsets.npy mismatches", float(len(pair[0])), float(len(pair[1])), float(mismatched),
                mismatched == 0)
    if atol == 0 and present("index.faiss"):
        digests = [sha256_file(p / "index.faiss") if (p / "index.faiss").is_file() else None
                   for p in (recorded, reproduced)]
        same = digests[0] is not None and digests[0] == digests[1]
        sizes = [float((p / "index.faiss").stat().st_size) if (p / "index.faiss").is_file() else math.nan
                 for p in (recorded, reproduced)]
        row("index.faiss sha256", sizes[0], sizes[1], 0.0 if same else 1.0, same)
    df = pd.DataFrame(rows)
    for k in KEYS:
        if k not in df.columns:
            df[k] = "index" if k == "table" else ""
    return df[VERDICT]


def print_verdict(table: pd.DataFrame, title: str, labels: tuple[str, str] = ("recorded", "reproduced")) -> None:
    """The verdict table on the console (readable at any width, :func:`clirkit.tables.print_table`):
    the result's keys, the two values to 6 significant digits, their difference and OK/DIFF."""
    from clirkit.tables import print_table

    keys = [k for k in KEYS[1:] if table[k].astype(bool).any()]
    shown = table[keys].copy()
    shown[labels[0]] = [f"{v:.6g}" for v in table["recorded"]]
    shown[labels[1]] = [f"{v:.6g}" for v in table["reproduced"]]
    shown["difference"] = [f"{v:.2g}" for v in table["difference"]]
    shown["verdict"] = table["verdict"].to_numpy()
    print_table(shown, title, labels=[*keys, "verdict"])


# --------------------------------------------------------------------------- the command


def reproduce(run: Path, atol: float = 0.0) -> Reproduction:
    """Check the inputs of ``run``, re-run its configuration from scratch beside it, compare.

    The verdict (``metrics/reproduce.csv``, and ``reproduces`` in the manifest) is written
    before the new run is marked completed (:func:`clirkit.rundir.before_completed`), so a
    completed reproduction always has its verdict.

    Args:
        run: a completed experiment directory (resolved first: ``.`` or a relative path name the
            same runs directory from anywhere).
        atol: largest absolute difference accepted per result (0: exact).

    Returns:
        The :class:`Reproduction`; ``agree`` is its verdict.

    Raises:
        ClirkitError: ``run`` is not a completed, reproducible experiment directory.
    """
    run = Path(run).resolve()
    config = check_reproducible(run)
    changed = changed_inputs(recorded_inputs(run))
    if changed:
        return Reproduction(run, None, changed)
    command = config.pop("command")
    cls, fn = _commands()[command]
    # beside the original; its recorded spelling of that folder if it still names it from here
    recorded = config.get("runs_dir")
    config["runs_dir"] = recorded if recorded and Path(recorded).resolve() == run.parent else str(run.parent)
    cfg = build(cls, str(run / "config.json"), **config)
    tables: list[pd.DataFrame] = []

    def judge(new: Run) -> None:
        table = compare_index(run / "index", new.path / "index", atol) if command == "index" \
            else compare_results(run_results(run), run_results(new.path), atol)
        table.to_csv(new.sub("metrics") / "reproduce.csv", index=False)
        new.record(reproduces=str(run))
        tables.append(table)

    with fresh_run(), before_completed(judge):
        new = fn(cfg) if command != "run" else fn(cfg, str(run / "config.json"))
    if not tables:
        raise RuntimeError(f"the {command} command returned {new} without starting a run")
    return Reproduction(run, Path(new), [], tables[0])


def run_reproduce(cfg: ReproduceConfig) -> Reproduction:
    """``clirkit reproduce``: :func:`reproduce`, with the verdict (or the changed inputs) printed."""
    from clirkit.progress import err

    result = reproduce(cfg.run, cfg.atol)
    if result.changed:
        for f, why in result.changed:
            err.print(f"[bold red]input {why}:[/] {f}", highlight=False, soft_wrap=True)
        err.print(f"{len(result.changed)} input(s) of {result.original} differ from the recorded sha256; "
                  "nothing was run", highlight=False, soft_wrap=True)
        return result
    assert result.path is not None
    print_verdict(result.table, f"{result.original.name} reproduced as {result.path.name}")
    n_diff = int((result.table["verdict"] != "OK").sum())
    err.print(f"{'all agree' if result.agree else f'{n_diff} of {len(result.table)} results differ'} "
              f"(atol {cfg.atol:g}); verdict in {result.path / 'metrics' / 'reproduce.csv'}",
              highlight=False, soft_wrap=True)
    return result
