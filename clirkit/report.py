"""The experiment report: the children's tables combined (mean ± sd over seeds, paired tests,
robustness, greedy attack) into ``metrics/``, ``plots/`` and ``report.md``.

It reads what the stages wrote (``metrics/per_query.csv``, ``robustness.csv``,
``greedy_summary.csv``) and imports only :mod:`clirkit.measures` and :mod:`clirkit.tables`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clirkit.measures import parse_measures, significance
from clirkit.tables import display_robustness, plot_robustness, print_table, write_robustness, write_table

__all__ = ["build_report", "formatted", "mean_sd_table", "print_table", "write_table"]


# --------------------------------------------------------------------------- experiment report


def _seconds(run: Path) -> float | None:
    from datetime import datetime

    try:
        m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        return (datetime.fromisoformat(m["ended"]) - datetime.fromisoformat(m["started"])).total_seconds()
    except (OSError, KeyError, TypeError, ValueError):
        return None


def mean_sd_table(rows: list[dict], keys: list[str], measures: list[str]) -> pd.DataFrame:
    """Mean and sample sd over seeds of each measure, grouped by ``keys``."""
    df = pd.DataFrame(rows)
    grouped = df.groupby(keys, sort=False)
    out = grouped[measures].mean()
    sd = grouped[measures].std(ddof=1).fillna(0.0).add_suffix("_sd")
    out = out.join(sd)
    out.insert(0, "seeds", grouped.size())
    return out.reset_index()


def formatted(table: pd.DataFrame, measures: list[str]) -> pd.DataFrame:
    """``mean ± sd`` strings for Markdown."""
    shown = table.drop(columns=[f"{m}_sd" for m in measures])
    for m in measures:
        shown[m] = [f"{a:.4f} ± {b:.4f}" if n > 1 else f"{a:.4f}"
                    for a, b, n in zip(table[m], table[f"{m}_sd"], table["seeds"])]
    return shown


def build_report(run: Path, children: dict, cfg) -> pd.DataFrame:
    """Combine the children's tables into ``metrics/`` and ``plots/`` of ``run`` and write report.md.

    Returns the aggregate table (mean ± sd over seeds).
    """
    measures = [str(m) for m in parse_measures(cfg.eval.measures)]
    metrics, plots = run / "metrics", run / "plots"
    metrics.mkdir(exist_ok=True)
    plots.mkdir(exist_ok=True)
    train_s = {}
    for child in children.get("distill", []):
        train_s.setdefault(child["system"], []).append(_seconds(Path(child["run"])) or float("nan"))

    rows, per_query = [], {}
    for child in children.get("eval", []):
        pq = pd.read_csv(Path(child["run"]) / "metrics" / "per_query.csv", index_col="query_id")
        key = (Path(child["dataset"]).name, child["scoring"])
        per_query.setdefault(key, {}).setdefault(child["system"], []).append(pq)
        rows.append({"system": child["system"], "dataset": key[0], "scoring": key[1], "seed": child["seed"],
                     **pq[measures].mean().to_dict()})
    table = mean_sd_table(rows, ["dataset", "scoring", "system"], measures)
    table["train_s"] = [float(pd.Series(train_s.get(s, [0.0])).mean()) for s in table["system"]]
    write_table(table, metrics / "aggregate", latex=True)

    sig = []
    for (dataset, scoring), systems in per_query.items():
        means = {name: sum(dfs) / len(dfs) for name, dfs in systems.items()}  # per query, mean over seeds
        if cfg.baseline in means:
            part = significance(means, cfg.baseline)
            part.insert(0, "dataset", dataset)
            part.insert(1, "scoring", scoring)
            sig.append(part)
    sig_table = pd.concat(sig, ignore_index=True) if sig else pd.DataFrame()
    if not sig_table.empty:
        write_table(sig_table, metrics / "significance")

    sections = [f"# {cfg.name}\n", cfg.description.strip() + "\n" if cfg.description else "",
                "## Retrieval (mean ± sd over training seeds)\n",
                formatted(table, measures).to_markdown(index=False, floatfmt=".4f") + "\n"]
    if not sig_table.empty:
        shown = sig_table[["dataset", "scoring", "system", "measure", "delta", "p", "p_holm"]]
        sections += [f"## Paired t-tests against {cfg.baseline} (Holm-corrected)\n",
                     shown.to_markdown(index=False, floatfmt=".4g") + "\n"]

    rob = _collect(children.get("attack", []), "random", "robustness.csv")
    if not rob.empty:
        shown = write_robustness(rob, metrics / "robustness")
        lines = rob.copy()
        if lines["scoring"].nunique() > 1:  # one line per system and scoring
            lines["system"] = lines["system"] + " / " + lines["scoring"]
        images = plot_robustness(lines.dropna(subset=["rate"]), plots)
        sections += ["## Robustness (random perturbations)\n", shown.to_markdown(index=False, floatfmt=".4f") + "\n"]
        sections += [f"![{p.stem}](plots/{p.name})\n" for p in images]
    greedy = _collect(children.get("attack", []), "greedy", "greedy_summary.csv")
    if not greedy.empty:
        write_table(greedy, metrics / "greedy")
        sections += ["## Greedy adversarial attack\n", greedy.to_markdown(index=False, floatfmt=".4f") + "\n"]
    steps = pd.DataFrame([{"step": kind, **c} for kind, items in children.items() if isinstance(items, list)
                          for c in items if isinstance(c, dict)], dtype=object)
    if not steps.empty:
        steps["run"] = "`" + steps["run"] + "`"
        sections += ["## Runs\n", steps.fillna("").to_markdown(index=False) + "\n"]
    (run / "report.md").write_text("\n".join(s for s in sections if s), encoding="utf-8")
    print_table(formatted(table, measures).drop(columns=["seeds"]), title=f"{cfg.name}: retrieval")
    if not rob.empty:
        print_table(display_robustness(rob), title=f"{cfg.name}: robustness")
    if not greedy.empty:
        print_table(greedy, title=f"{cfg.name}: greedy attack")
    return table


def _collect(children: list[dict], search: str, name: str) -> pd.DataFrame:
    """Concatenate one table from every attack child of the given search kind, labelled by system."""
    parts = []
    for child in children:
        path = Path(child["run"]) / "metrics" / name
        if child.get("search") == search and path.is_file():
            df = pd.read_csv(path)
            df = df.drop(columns=[c for c in ("system", "model") if c in df.columns])
            df.insert(0, "system", child["system"])
            df.insert(1, "scoring", child["scoring"])
            parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
