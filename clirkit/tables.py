"""Tables (CSV, Markdown, LaTeX), rich tables on the console, and the robustness plots.

Every stage writes its tables through this module, so ``report`` reads what they wrote
without stages importing ``report``.
"""

from __future__ import annotations

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
