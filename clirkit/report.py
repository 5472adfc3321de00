"""Tables (CSV, Markdown, LaTeX), rich tables on the console, matplotlib plots."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from clirkit.progress import out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def file_label(text: str) -> str:
    """A file-name-safe form of a label (``word-drop:min_len=2`` -> ``word-drop_min_len=2``)."""
    return re.sub(r"[^A-Za-z0-9._=+@-]+", "_", text).strip("_") or "perturbation"


def write_table(df: pd.DataFrame, stem: Path, index: bool = False, latex: bool = False) -> None:
    """Write ``stem.csv`` and ``stem.md`` (and ``stem.tex``) for one table."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=index)
    stem.with_suffix(".md").write_text(df.to_markdown(index=index, floatfmt=".4f") + "\n", encoding="utf-8")
    if latex:
        stem.with_suffix(".tex").write_text(df.to_latex(index=index, float_format="%.4f"), encoding="utf-8")


def print_table(df: pd.DataFrame, title: str | None = None) -> None:
    """Show a table on stdout with rich."""
    table = Table(title=title)
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col])
        # Labels (run paths, system names) fold onto more lines rather than lose their ends.
        table.add_column(str(col), justify="right" if numeric else "left", overflow="ellipsis" if numeric else "fold")
    for row in df.itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    out.print(table)


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


def display_robustness(table: pd.DataFrame) -> pd.DataFrame:
    """The robustness table for people: the CI as one column, ``n/a`` with a single seed."""
    out = table.drop(columns=["ci_low", "ci_high"]).copy()
    ci = [("n/a" if math.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]") for lo, hi in zip(table["ci_low"], table["ci_high"])]
    out.insert(out.columns.get_loc("rel_drop") + 1, "drop 95% CI", ci)
    out["rate"] = [("-" if math.isnan(r) else f"{r:g}") for r in table["rate"]]
    out["p_value"] = [("n/a" if math.isnan(p) else f"{p:.3g}") for p in table["p_value"]]
    return out


def write_robustness(table: pd.DataFrame, stem: Path) -> pd.DataFrame:
    """``stem.csv`` (numbers, empty for NaN) and ``stem.md`` (formatted, ``n/a``)."""
    table.to_csv(stem.with_suffix(".csv"), index=False)
    shown = display_robustness(table)
    stem.with_suffix(".md").write_text(shown.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8")
    return shown


def plot_robustness(table: pd.DataFrame, plots: Path) -> list[Path]:
    """``plots/<measure>.png``: the measure against the rate, one line per system, one panel per
    perturbation; rate 0 is the clean run, error bars are the drop's 95% CI over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = list(dict.fromkeys(table["perturbation"]))
    for measure, mt in table.groupby("measure", sort=False):
        fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 3.6), squeeze=False, sharey=True)
        for ax, label in zip(axes[0], labels):
            pt = mt[mt["perturbation"] == label]
            for system, st in pt.groupby("system", sort=False):
                st = st.sort_values("rate")
                x = [0.0, *st["rate"].tolist()]
                y = [float(st["clean"].iloc[0]), *st["attacked"].tolist()]
                err = [0.0, *np.nan_to_num((st["ci_high"] - st["drop"]).to_numpy()).tolist()]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=system)
            ax.set_title(label)
            ax.set_xlabel("perturbation rate")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(str(measure))
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        path = plots / f"{file_label(str(measure))}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def build_report(run: Path, children: dict, cfg) -> pd.DataFrame:
    """Combine the children's tables into ``metrics/`` and ``plots/`` of ``run`` and write report.md.

    Returns the aggregate table (mean ± sd over seeds).
    """
    from clirkit.evaluate import parse_measures, significance

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
