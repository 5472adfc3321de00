"""Tables (CSV, Markdown, LaTeX), rich tables on the console, and the robustness plots.

Every stage writes its tables through this module, so ``report`` reads what they wrote
without stages importing ``report``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clirkit.progress import out


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


#: cells that read as numbers (``0.41``, ``0.41 ± 0.02``, ``[0.1, 0.2]``, ``n/a``, ``-``): a string
#: column of them is a value column, not a label
_NUMBER_LIKE = re.compile(r"\s*[\[(]?\s*[-+]?\.?\d|\s*(?:n/a|-|nan|inf)?\s*$")
#: columns of a console table never shrink below this (then one block per row instead)
MIN_LABEL_WIDTH = 10
#: right padding + divider + left padding between two columns of :func:`console_table`
_GAP = 3


def console_table(*columns: tuple[str, dict[str, Any]], title: str | None = None) -> Table:
    """The one style of every console table: a header rule, no edges, the title on the left.

    Args:
        columns: ``(header, rich add_column options)``; all empty headers hide the header.
        title: shown above the table.
    """
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left",
                  show_header=any(name for name, _ in columns))
    for name, opts in columns:
        table.add_column(Text(str(name)), **opts)
    return table


def cell(v: Any) -> str:
    """A value as shown on the console: floats to 4 significant digits, NaN as ``n/a``."""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "n/a"
        text = f"{v:#.4g}"  # "#" keeps trailing zeros: a column of 0.5000 and 0.4123 lines up
        return f"{v:.4g}" if "e" in text else text.rstrip(".")
    return str(v)


def label_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name a row (system, dataset, measure, ...): not numeric, and not strings
    that read as numbers (formatted means, intervals, ``n/a``)."""
    labels = []
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            continue
        if all(_NUMBER_LIKE.match(str(v)) for v in df[col].dropna()):
            continue
        labels.append(col)
    return labels


def print_table(df: pd.DataFrame, title: str | None = None, *, labels: list[str] | None = None,
                console: Console | None = None, max_rows: int | None = None) -> None:
    """Show a table on the console, readable at any width, in a terminal or a pipe.

    The label columns (:func:`label_columns`, or ``labels``) are repeated in as many column
    blocks as the width needs, the way pandas wraps a wide frame, so every header and value
    stays whole on one line. When the table is too wide, a label every row shares moves to
    the title; numbers never wrap; labels fold (to 10 characters at least) only when they
    would leave no room for one value column, and when even that is too wide each row becomes
    its own block of ``column  value`` lines. Numbers show 4 significant digits.

    Args:
        df: the table (files keep every digit; this is only the display).
        title: shown above the table (``(i/n)`` appended when it is split into blocks).
        labels: the columns to repeat in each block (default: :func:`label_columns`).
        console: where to print (default: :data:`clirkit.progress.out`, stdout).
        max_rows: show only the first rows, and say how many more there are.
    """
    console = console or out
    width = max(console.width, 2 * MIN_LABEL_WIDTH + _GAP)
    shown = df if max_rows is None else df.head(max_rows)
    labels = [c for c in df.columns if c in labels] if labels is not None else label_columns(shown)
    values = [c for c in df.columns if c not in labels]
    cells = {c: [cell(v) for v in shown[c]] for c in df.columns}
    if len(shown) > 1 and _width(labels + values, cells) > width:
        # a label every row shares goes to the title: one column fewer in every block
        same = [c for c in labels if len(set(cells[c])) == 1]
        same = same[:-1] if len(same) == len(labels) else same  # a row keeps at least one label
        if same:
            title = (f"{title} " if title else "") + f"({', '.join(f'{c}: {cells[c][0]}' for c in same)})"
            labels = [c for c in labels if c not in same]
    need = {c: max([cell_len(str(c)), *map(cell_len, cells[c])]) for c in df.columns}
    label_w = {c: need[c] for c in labels}
    widest = max((need[c] for c in values), default=0)

    def fits(cols: list[int]) -> bool:
        return sum(cols) + _GAP * (len(cols) - 1) <= width

    # labels fold (widest first) before any value column is split from its labels
    while labels and not fits([*label_w.values(), *([widest] if values else [])]):
        c = max(label_w, key=label_w.get)
        if label_w[c] <= MIN_LABEL_WIDTH:
            break
        label_w[c] -= 1
    if labels and not fits([*label_w.values(), *([widest] if values else [])]):
        _print_records(shown, labels, values, cells, title, console)
    else:
        blocks: list[list[str]] = [[]]
        for c in values:
            if blocks[-1] and not fits([*label_w.values(), *(need[x] for x in blocks[-1]), need[c]]):
                blocks.append([])
            blocks[-1].append(c)
        for i, block in enumerate(blocks):
            label = title if len(blocks) == 1 or title is None else f"{title} ({i + 1}/{len(blocks)})"
            table = console_table(*[(c, {"width": label_w[c], "overflow": "fold"}) for c in labels],
                                  *[(c, {"width": min(need[c], width), "justify": "right", "no_wrap": need[c] <= width,
                                         "overflow": "fold"}) for c in block],
                                  title=label)
            for j in range(len(shown)):
                table.add_row(*(Text(cells[c][j]) for c in [*labels, *block]))
            console.print(table, soft_wrap=False)  # a long title wraps even on a soft-wrapping console
    if len(df) > len(shown):
        console.print(Text(f"... {len(df) - len(shown)} more rows" + (f" in {title}" if title else "")),
                      soft_wrap=False)


def _width(columns: list[str], cells: dict[str, list[str]]) -> int:
    """The width of one block holding ``columns`` whole."""
    return sum(max([cell_len(str(c)), *map(cell_len, cells[c])]) for c in columns) + _GAP * (len(columns) - 1)


def _print_records(shown: pd.DataFrame, labels: list[str], values: list[str], cells: dict[str, list[str]],
                   title: str | None, console: Console) -> None:
    """One block per row: its labels as a heading, then one ``column  value`` line per value."""
    if title:
        console.print(Text(title, style="italic"), soft_wrap=False)
    for j in range(len(shown)):
        console.print(Text(" · ".join(cells[c][j] for c in labels), style="bold"), soft_wrap=False)
        table = console_table(("", {"overflow": "fold"}), ("", {"overflow": "fold"}))
        for c in values:
            table.add_row(Text(str(c)), Text(cells[c][j]))
        console.print(table, soft_wrap=False)


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


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: numpy scalars as Python numbers, NaN as None (JSON null)."""
    def plain(v: Any) -> Any:
        v = v.item() if isinstance(v, np.generic) else v
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{str(k): plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def json_summary(run: Path, tables: list[str]) -> dict[str, Any]:
    """``{"run": path, <table>: rows, ...}`` for the ``metrics/<table>.csv`` files of a finished
    run (``tables`` are names or globs, e.g. ``aggregate``, ``xglue_*``); absent tables are left out."""
    summary: dict[str, Any] = {"run": str(run)}
    for pattern in tables:
        for path in sorted((run / "metrics").glob(f"{pattern}.csv")):
            summary[path.stem] = json_records(pd.read_csv(path))
    return summary
