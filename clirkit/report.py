"""Tables (CSV, Markdown, LaTeX), rich tables on the console, matplotlib plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from clirkit.progress import out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


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
        table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(df[col]) else "left")
    for row in df.itertuples(index=False):
        table.add_row(*(_fmt(v) for v in row))
    out.print(table)
