"""``clirkit runs list|show|diff``: read the experiment directories of a runs folder.

Also the one reader of a run's results in long form (:func:`run_results`), shared by
``clirkit reproduce`` and ``clirkit check-expected``: one row per dataset x scoring x system x
condition x measure, from the tables each command writes (``metrics/aggregate.csv`` of eval and
grid runs, ``metrics/robustness.csv`` of attacks, ``metrics/xglue_<task>.csv`` and
``xglue_<task>_robustness.csv`` of XGLUE evaluations and attacks, the final and best dev rows of a
distillation's ``metrics/training.csv``). Timings, counts and paths are not results.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from clirkit.config import BEST_BY, dev_column
from clirkit.errors import ClirkitError
from clirkit.progress import fail

#: the columns of a result row that identify it; ``value`` holds the number
KEYS = ["table", "dataset", "scoring", "system", "condition", "measure"]
#: numeric columns that are bookkeeping, not results
NOT_RESULTS = {"queries", "seeds", "train_s", "rows", "seed", "step", "epoch", "lr", "pairs_per_s"}
#: an experiment directory's name (clirkit.rundir.Run): stamp, command, hash, clash counter
RUN_ID = re.compile(r"\d{8}-\d{6}-([a-z]+)-[0-9a-f]{8}(?:-\d+)?")
#: the training.csv column of the dev measure a distillation keeps its best checkpoint by
BEST_BY_COLUMN = dev_column(BEST_BY)

app = typer.Typer(no_args_is_help=True, help="List, show and compare experiment directories.")


# --------------------------------------------------------------------------- reading runs


def is_run(path: Path) -> bool:
    """A folder written by :func:`clirkit.rundir.start_run` (it has config.json and status.json)."""
    return path.is_dir() and (path / "config.json").is_file() and (path / "status.json").is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def status_of(path: Path) -> str:
    """completed, failed, running, abandoned (or ``unknown``); a ``.<id>.tmp`` folder is a run in
    progress, or one whose process died without ending it (:func:`clirkit.rundir.abandoned`)."""
    from clirkit.rundir import abandoned

    state = _json(path / "status.json").get("status", "unknown")
    if state == "running" and abandoned(path):
        return "abandoned"
    return "running" if path.name.endswith(".tmp") and state == "completed" else state


def seconds_of(manifest: dict[str, Any]) -> float | None:
    try:
        return (datetime.fromisoformat(manifest["ended"]) - datetime.fromisoformat(manifest["started"])
                ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _csv(path: Path):
    import pandas as pd

    # pandas >= 3 parses floats round-trip exactly: equal strings, equal numbers
    return pd.read_csv(path) if path.is_file() else None


def _is_number(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def system_label(name: str) -> str:
    """A system name without paths (``minilm->runs/2026...-distill-1a2b3c4d`` -> ``minilm->distill``):
    results are compared by what ran, not where its files were."""
    parts = []
    for part in name.split("->"):
        if "/" in part or os.sep in part:
            part = Path(part).name
            run = RUN_ID.fullmatch(part)
            part = run.group(1) if run else part
        parts.append(part)
    return "->".join(parts)


def _rows_of_table(df, table: str, fixed: dict[str, str]) -> list[dict[str, Any]]:
    """Wide table (id columns + one column per measure) -> result rows."""
    ids = [c for c in df.columns if not _is_number(df[c])]
    values = [c for c in df.columns if _is_number(df[c]) and c not in NOT_RESULTS]
    rows = []
    for _, r in df.iterrows():
        key = {**fixed, **{k: str(r[k]) for k in ("dataset", "scoring", "system") if k in ids}}
        key["system"] = system_label(key["system"])
        condition = ", ".join(f"{k}={r[k]}" for k in ids if k not in ("dataset", "scoring", "system"))
        for m in values:
            rows.append({"table": table, **key, "condition": condition, "measure": m, "value": float(r[m])})
    return rows


def _robustness_rows(df, fixed: dict[str, str], label=str) -> list[dict[str, Any]]:
    """Clean and attacked value of every row of a robustness table (an XGLUE one has a ``lang``
    column: the language leads the condition)."""
    rows = []
    for _, r in df.iterrows():
        rate = r.get("rate")
        where = r["perturbation"] if rate is None or (isinstance(rate, float) and math.isnan(rate)) \
            else f"{r['perturbation']}@{rate:g}"
        where = f"{r['lang']} {where}" if "lang" in r else where
        key = {**fixed, "system": label(str(r["system"])),
               **({"scoring": str(r["scoring"])} if "scoring" in r else {})}
        for side in ("clean", "attacked"):
            rows.append({"table": "robustness", **key, "condition": f"{where} {side}", "measure": str(r["measure"]),
                         "value": float(r[side])})
    return rows


def _training_rows(df, fixed: dict[str, str]) -> list[dict[str, Any]]:
    """The final row's loss and dev measures, and the best dev row (the kept checkpoint)."""
    dev = [c for c in df.columns if c.startswith("dev_")]
    rows = []
    if "loss" in df.columns and df["loss"].notna().any():
        rows.append({"condition": "final", "measure": "loss", "value": float(df["loss"].dropna().iloc[-1])})
    evaluated = df.dropna(subset=dev, how="all") if dev else df.iloc[:0]
    if len(evaluated):
        last = evaluated.iloc[-1]
        rows += [{"condition": "final", "measure": c, "value": float(last[c])} for c in dev]
        if BEST_BY_COLUMN in df.columns and evaluated[BEST_BY_COLUMN].notna().any():
            best = evaluated.loc[evaluated[BEST_BY_COLUMN].idxmax()]
            rows += [{"condition": "best", "measure": BEST_BY_COLUMN, "value": float(best[BEST_BY_COLUMN])},
                     {"condition": "best", "measure": "step", "value": float(best["step"])}]
    return [{"table": "training", **fixed, **r} for r in rows]


def run_results(run: Path):
    """Every result of a finished run as a long table (:data:`KEYS` + ``value``).

    Args:
        run: an experiment directory of ``eval``, ``attack``, ``distill`` or ``run`` (a grid).

    Returns:
        A DataFrame; empty for a command without result tables (``index``).
    """
    import pandas as pd

    config = _json(run / "config.json")
    manifest = _json(run / "manifest.json")
    metrics = run / "metrics"
    dataset = Path(config["dataset"]).name if config.get("dataset") else ""
    fixed = {"dataset": dataset, "scoring": str(config.get("scoring") or ""), "system": ""}
    rows: list[dict[str, Any]] = []
    agg = _csv(metrics / "aggregate.csv")
    if agg is not None:
        rows += _rows_of_table(agg, "aggregate", fixed)
    for f in sorted(metrics.glob("xglue_*.csv")) if metrics.is_dir() else []:
        if f.stem.endswith("_robustness"):  # attack --benchmark xglue: per language, clean and attacked
            rows += _robustness_rows(_csv(f), {**fixed, "dataset": f.stem.removesuffix("_robustness")},
                                     system_label)
        else:
            rows += _rows_of_table(_csv(f), f.stem, {**fixed, "dataset": f.stem})
    rob = _csv(metrics / "robustness.csv")
    if rob is not None and {"perturbation", "measure", "clean", "attacked"} <= set(rob.columns):
        rows += _robustness_rows(rob, fixed)
    training = _csv(metrics / "training.csv")
    if training is not None:
        bitext = manifest.get("bitext") or config.get("bitext") or config.get("pair") or ""
        rows += _training_rows(training, {"dataset": Path(str(bitext)).name, "scoring": fixed["scoring"],
                                          "system": str(config.get("student", ""))})
    df = pd.DataFrame(rows, columns=[*KEYS, "value"])
    return df.fillna({k: "" for k in KEYS})


def headline(run: Path, command: str) -> str:
    """One number that says how a run went: the first measure of its first result row."""
    try:
        res = run_results(run)
    except Exception:  # a half-written table of a failed run: no headline, never a crash
        return ""
    if command == "index":
        count = _json(run / "index" / "manifest.json").get("count")
        return f"{count} docs" if count is not None else ""
    if res.empty:
        return ""
    if command == "distill":
        best = res[(res.condition == "best") & (res.measure == BEST_BY_COLUMN)]
        r = best.iloc[0] if len(best) else res.iloc[0]
        return f"{r.measure} {r.value:.4f}" if r.measure != "loss" else f"loss {r.value:.4g}"
    if command == "attack":
        rob = res[res.table == "robustness"]
        if len(rob) >= 2:
            return f"{rob.iloc[0].measure} {rob.iloc[0].value:.3f}->{rob.iloc[1].value:.3f}"
    res = res[~res.measure.str.endswith("_sd")]
    r = res.iloc[0]
    return f"{r.measure} {r.value:.4f}" + (f" ({r.system})" if command in ("run", "report") and r.system else "")


def describe(path: Path) -> dict[str, Any]:
    """id, command, status, start, end, duration and headline of one experiment directory."""
    config, manifest = _json(path / "config.json"), _json(path / "manifest.json")
    command = config.get("command") or manifest.get("command") or "?"
    status = status_of(path)
    run_id = path.name[1:-4] if path.name.startswith(".") and path.name.endswith(".tmp") else path.name
    return {"id": run_id, "path": str(path), "command": command, "status": status,
            "started": manifest.get("started"), "ended": manifest.get("ended"), "seconds": seconds_of(manifest),
            "headline": headline(path, command) if status == "completed" else
            str(_json(path / "status.json").get("error", ""))}


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every experiment directory of ``runs_dir`` (runs in progress too), oldest first."""
    if not runs_dir.is_dir():
        raise ClirkitError("no such runs directory", path=runs_dir, fix="pass --runs-dir DIR")
    paths = [p for p in runs_dir.iterdir() if is_run(p)]
    return [describe(p) for p in sorted(paths, key=lambda p: p.name.lstrip("."))]


def require_run(path: Path) -> Path:
    if not is_run(path):
        raise ClirkitError("not an experiment directory (no config.json and status.json)", path=path,
                           fix="pass a folder of the runs directory (clirkit runs list)")
    return path


def require_completed(path: Path) -> Path:
    """``path`` if it is a completed experiment directory; else a ClirkitError (exit 2) naming its
    state: a running, failed or interrupted run has no results to read (its tables may be half
    written or missing)."""
    require_run(path)
    status = status_of(path)
    if status != "completed":
        raise ClirkitError(f"the run is {status}, not completed", path=path,
                           fix="pass a completed run (clirkit runs list shows their status)")
    return path


def grid_children(run: Path) -> list[Path]:
    """The experiment directories of a grid's steps (``children.json``), found beside the grid.

    A grid's steps run in the grid's runs directory, so they are the grid's siblings; the paths
    recorded in ``children.json`` are as the grid saw them (relative to its working directory,
    or in a runs directory since moved), so only their names are taken. A run that is not a
    grid has none.

    Raises:
        ClirkitError: a step named in ``children.json`` is no longer beside the grid.
    """
    if not (run / "children.json").is_file():
        return []
    children = _json(run / "children.json")
    names = dict.fromkeys(Path(str(c["run"])).name for key, items in children.items()
                          if isinstance(items, list) and key != "failed"  # a completed grid has no failed steps
                          for c in items if isinstance(c, dict) and c.get("run"))
    out = []
    for name in names:
        child = run.parent / name
        if not is_run(child):
            raise ClirkitError(f"step {name} of the grid {run.name} is missing", path=child,
                               fix=f"put it back beside the grid in {run.parent} (children.json names it)")
        out.append(child)
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as dotted keys (``systems.0.name``)."""
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(data, list) and data and any(isinstance(x, dict | list) for x in data):
        return {k: v for i, value in enumerate(data) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): data}


def input_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    """``input group/file -> sha256`` with file paths relative to their group's folder."""
    out = {}
    for group, files in (manifest.get("inputs") or {}).items():
        paths = list(files)
        root = os.path.commonpath(paths) if len(paths) > 1 else None
        for p, digest in files.items():
            out[f"{group}/{os.path.relpath(p, root)}" if root else group] = digest
    return out


def diff_runs(a: Path, b: Path, everything: bool = False) -> list[tuple[str, str, str]]:
    """``(key, value in a, value in b)`` for config fields, input hashes, git and packages.

    Only differing keys unless ``everything``; hashes are shortened to 12 hex digits.
    """
    sides = []
    for run in (require_run(a), require_run(b)):
        m = _json(run / "manifest.json")
        cfg = flatten(_json(run / "config.json"))
        cfg.pop("runs_dir", None)
        entries = {f"config.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in cfg.items()}
        entries.update({f"input {k}": v[:12] for k, v in input_hashes(m).items()})
        git = m.get("git") or {}
        entries["git"] = f"{(git.get('commit') or '?')[:10]}{' dirty' if git.get('dirty') else ''}"
        entries.update({f"package {k}": str(v) for k, v in (m.get("packages") or {}).items()})
        sides.append(entries)
    keys = list(dict.fromkeys([*sides[0], *sides[1]]))
    rows = [(k, sides[0].get(k, "-"), sides[1].get(k, "-")) for k in keys]
    return rows if everything else [r for r in rows if r[1] != r[2]]


# --------------------------------------------------------------------------- display


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _started(iso: str | None) -> str:
    """``MM-DD HH:MM`` (the year is in the run id)."""
    return iso[5:16].replace("T", " ") if iso else "-"


def _runs_dir(ctx: typer.Context, given: Path | None) -> Path:
    if given is not None:
        return given
    return Path((ctx.obj or {}).get("runs_dir", "experiments/runs"))


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    runs_dir: Annotated[Path | None, typer.Option(help="runs directory (default: the global --runs-dir)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON list on stdout, for scripts")] = False,
) -> None:
    """List the experiment directories: id, command, status, start, duration, headline measure."""
    from clirkit.progress import out
    from clirkit.tables import console_table

    try:
        runs = list_runs(_runs_dir(ctx, runs_dir))
    except ClirkitError as e:
        raise fail(e) from None
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    if out.width < 80:  # too narrow for a table: one block per run
        for r in runs:
            out.print(f"[bold]{r['id']}[/]\n  {r['status']} · {_started(r['started'])} · {_duration(r['seconds'])}"
                      f"{' · ' + r['headline'] if r['headline'] else ''}", highlight=False)
        return
    # the id names the command and the start time (UTC, like the started column); the command
    # column only when there is room
    wide = out.width >= 100
    table = console_table(("id", {"no_wrap": True}), *([("command", {"no_wrap": True})] if wide else []),
                   ("status", {"no_wrap": True}), ("started UTC", {"no_wrap": True}),
                   ("took", {"no_wrap": True, "justify": "right"}), ("headline", {"overflow": "fold", "min_width": 12}))
    for r in runs:
        table.add_row(r["id"], *([r["command"]] if wide else []), r["status"], _started(r["started"]),
                      _duration(r["seconds"]), r["headline"])
    out.print(table)


@app.command("show")
def show_cmd(run: Annotated[Path, typer.Argument(help="an experiment directory")]) -> None:
    """Show a run's configuration, manifest summary and metrics tables."""
    from clirkit.progress import out
    from clirkit.tables import console_table, print_table

    try:
        require_run(run)
    except ClirkitError as e:
        raise fail(e) from None
    info = describe(run)
    m = _json(run / "manifest.json")
    git = m.get("git") or {}
    packages = m.get("packages") or {}
    out.print(f"[bold]{info['id']}[/]  {info['command']}, {info['status']}", highlight=False)
    summary = console_table(("", {"no_wrap": True, "style": "bold"}), ("", {"overflow": "fold"}))
    inputs = input_hashes(m)
    for key, value in [("path", str(run)), ("started", _started(info["started"])),
                       ("took", _duration(info["seconds"])), ("seed", str(m.get("seed", "-"))),
                       ("device", str(m.get("device", "-"))),
                       ("git", f"{git.get('commit') or '?'}{' (dirty)' if git.get('dirty') else ''}"),
                       ("versions", ", ".join(f"{k} {packages[k]}" for k in ("clirkit", "python", "torch")
                                              if packages.get(k))),
                       ("inputs", f"{len(inputs)} files: " + ", ".join(dict.fromkeys(k.split('/')[0]
                                                                          for k in inputs))),
                       ("headline", info["headline"])]:
        summary.add_row(key, value)
    out.print(summary)
    config = console_table(("config", {"no_wrap": True}), ("value", {"overflow": "fold"}))
    for key, value in flatten(_json(run / "config.json")).items():
        config.add_row(key, value if isinstance(value, str) else json.dumps(value))
    out.print(config)
    for f in sorted((run / "metrics").glob("*.csv")) if (run / "metrics").is_dir() else []:
        if f.name != "per_query.csv":  # one row per query: a file to open, not to print
            print_table(_csv(f), f"metrics/{f.name}", max_rows=30)


@app.command("diff")
def diff_cmd(
    runs: Annotated[list[Path], typer.Argument(help="two experiment directories")],
    everything: Annotated[bool, typer.Option("--all", help="also the keys that are the same")] = False,
) -> None:
    """Configuration, input hashes and versions of two runs side by side (only what differs)."""
    from clirkit.progress import out
    from clirkit.tables import console_table

    try:
        if len(runs) != 2:
            raise ClirkitError(f"runs diff takes two experiment directories, not {len(runs)}",
                               fix="clirkit runs diff RUN_A RUN_B")
        rows = diff_runs(runs[0], runs[1], everything)
    except ClirkitError as e:
        raise fail(e) from None
    if not rows:
        out.print("same configuration, inputs and versions")
        return
    table = console_table(("key", {"overflow": "fold", "min_width": 16}), ("A", {"overflow": "fold", "min_width": 12}),
                   ("B", {"overflow": "fold", "min_width": 12}),
                   title=f"A = {runs[0].name}\nB = {runs[1].name}")
    for row in rows:
        table.add_row(*row)
    out.print(table)
