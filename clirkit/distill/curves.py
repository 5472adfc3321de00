"""Training curves: ``metrics/training.csv`` and ``plots/training.png`` from the rows the trainer logs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clirkit.config import BEST_BY, dev_column


def write_training(rows: list[dict[str, Any]], metrics: Path, plots: Path | None = None) -> None:
    """``metrics/training.csv`` (and ``plots/training.png``) from the logged rows."""
    import pandas as pd

    if not rows:
        return
    df = pd.DataFrame(rows)
    # step, epoch, loss and its parts, lr, pairs/s, then the dev columns
    rank = {"step": 0, "epoch": 1, "loss": 2, "lr": 4, "pairs_per_s": 5, "dev_loss": 6}
    df = df[sorted(df.columns, key=lambda c: (rank.get(c, 7 if c.startswith("dev_") else 3), c))]
    tmp = metrics / ".training.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, metrics / "training.csv")
    if plots is not None:
        plot_training(df, plots / "training.png")


def plot_training(df, path: Path) -> None:
    """Training and dev loss against steps, with the dev metrics on a second axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=120)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot(1, 1, 1)
    train = df.dropna(subset=["loss"]) if "loss" in df else df.iloc[0:0]
    if len(train):
        ax.plot(train["step"], train["loss"], label="train loss", color="tab:blue", lw=1)
    if "dev_loss" in df:
        dev = df.dropna(subset=["dev_loss"])
        ax.plot(dev["step"], dev["dev_loss"], "o-", label="dev loss", color="tab:orange", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for col, color in ((dev_column(BEST_BY), "tab:green"), (dev_column("R@1"), "tab:red")):
        if col in df:
            dev = df.dropna(subset=[col])
            ax2.plot(dev["step"], dev[col], "s--", label=col, color=color, ms=3)
    ax2.set_ylabel("dev retrieval")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
