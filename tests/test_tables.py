"""Console tables (:func:`clirkit.tables.print_table`) stay readable at 80 columns and in a pipe:
every header and value whole on one line with its row's labels, no line wider than the console;
and ``--json`` on eval and attack."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.report import display_comparisons, formatted
from clirkit.tables import cell, display_robustness, label_columns, print_table

MEASURES = ["nDCG@10", "RR@10", "R@100", "AP"]
SYSTEMS = ["zero-shot", "lexical-translation", "static-mse", "static-ot", "static-ot+mse", "static-ot+mse-augment"]


def demo_aggregate() -> pd.DataFrame:
    """The demo grid's metrics/aggregate.csv: 3 labels + 10 numbers per row."""
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("bible-en-tl", "bible-en-tl-xref"):
        for system in SYSTEMS:
            row = {"dataset": ds, "scoring": "dense", "system": system, "seeds": 3}
            for m in MEASURES:
                row[m], row[f"{m}_sd"] = rng.random(), rng.random() / 50
            rows.append({**row, "train_s": 1000 * rng.random()})
    return pd.DataFrame(rows)


def demo_robustness() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for system in SYSTEMS:
        for rate in (0.1, 0.2, 0.3):
            for m in MEASURES:
                clean = rng.random()
                rows.append({"system": system, "scoring": "dense", "perturbation": "char-swap:min_len=4",
                             "rate": rate, "measure": m, "clean": clean, "attacked": clean - 0.1, "drop": 0.1,
                             "rel_drop": 0.1 / clean, "ci_low": 0.05, "ci_high": 0.15, "p_value": rng.random() / 1e4,
                             "seeds": 3, "queries": 250})
    return pd.DataFrame(rows)


def demo_comparisons() -> pd.DataFrame:
    rows = [{"dataset": "bible-en-tl", "scoring": "dense", "system_a": a, "system_b": b, "measure": m, "n": 500,
             "delta": 0.0123, "ci_low": -0.01, "ci_high": 0.03, "p_t_holm": 0.0004, "p_rand_holm": 0.0009}
            for a, b in [("static-ot+mse", "static-mse"), ("static-ot+mse", "zero-shot")] for m in MEASURES]
    return pd.DataFrame(rows)


TABLES = {
    "aggregate": lambda: demo_aggregate(),
    "retrieval": lambda: formatted(demo_aggregate(), MEASURES).drop(columns=["seeds"]),
    "robustness": lambda: display_robustness(demo_robustness()),
    "robustness-raw": lambda: demo_robustness(),
    "comparisons": lambda: display_comparisons(demo_comparisons()),
}


TITLE = "demo: a wide table whose title alone is longer than the eighty columns of a terminal in a pipe"


def render(df: pd.DataFrame, console: Console, **kw) -> list[str]:
    print_table(df, title=TITLE, console=console, **kw)
    return console.file.getvalue().splitlines()


def assert_readable(df: pd.DataFrame, lines: list[str], width: int) -> None:
    assert lines and all(len(line) <= width for line in lines), max(map(len, lines))
    assert not any(len(line.strip()) == 1 for line in lines)  # never one letter per line
    text = "\n".join(lines)
    for col in df.columns:
        assert any(str(col) in line for line in lines), f"header {col!r} is cut"
    labels = label_columns(df)
    varying = [c for c in labels if df[c].nunique() > 1]
    for col in set(labels) - set(varying):  # a label every row shares may move to the title
        assert any(str(df[col].iloc[0]) in line for line in lines), f"label {col!r} is cut"
    for _, row in df.iterrows():
        key = cell(row[varying[-1]]) if varying else ""
        for col in [c for c in df.columns if c not in labels]:
            value = cell(row[col])
            # the value is whole on a line that also names its row (its last varying label)
            assert any(value in line and key in line for line in lines), f"{col}={value!r} of {key!r} is cut"
    assert " ".join(text.split()).startswith(TITLE)


@pytest.mark.parametrize("name", list(TABLES))
def test_wide_tables_are_whole_in_a_pipe_at_80_columns(name):
    df = TABLES[name]()
    # not a terminal, soft-wrapping like clirkit.progress.out: what rich does in a pipe
    console = Console(file=io.StringIO(), width=80, soft_wrap=True)
    assert not console.is_terminal
    assert_readable(df, render(df, console), 80)


@pytest.mark.parametrize("name", ["aggregate", "robustness"])
def test_columns_80_from_the_environment(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    console = Console(file=io.StringIO(), soft_wrap=True)
    assert console.width == 80
    df = TABLES[name]()
    assert_readable(df, render(df, console), 80)


def test_wide_console_keeps_one_block():
    df = demo_aggregate()
    lines = render(df, Console(file=io.StringIO(), width=200))
    assert "(1/" not in "\n".join(lines)  # everything fits: no split
    header = next(line for line in lines if "nDCG@10_sd" in line)
    assert all(str(c) in header for c in df.columns)


def test_narrow_console_gives_one_block_per_row():
    df = display_robustness(demo_robustness()).head(3)
    lines = render(df, Console(file=io.StringIO(), width=24, soft_wrap=True))  # labels and one value would not fit
    assert all(len(line) <= 24 for line in lines)
    heads = [i for i, line in enumerate(lines) if line.strip() in set(df["measure"])]
    assert len(heads) == 3  # one block per row, headed by the label that differs
    for start, (_, row) in zip(heads, df.iterrows()):
        block = lines[start:start + len(df.columns)]
        for col in ("rate", "clean", "attacked", "rel_drop", "p_value", "queries"):
            assert any(line.split()[:len(col.split())] == col.split() and line.rstrip().endswith(cell(row[col]))
                       for line in block), (col, block)


def test_max_rows_says_how_many_are_left():
    lines = render(demo_aggregate(), Console(file=io.StringIO(), width=80), max_rows=5)
    assert any(line.startswith("... 7 more rows in demo") for line in lines) and all(len(x) <= 80 for x in lines)
    assert not any("bible-en-tl-xref" in line for line in lines)


def test_cell_and_labels():
    assert [cell(0.412345), cell(0.5), cell(1234.5), cell(1.23e-5), cell(float("nan")), cell(3)] == \
        ["0.4123", "0.5000", "1234", "1.23e-05", "n/a", "3"]
    df = pd.DataFrame({"system": ["a"], "nDCG@10": ["0.4 ± 0.1"], "ci": ["[0.1, 0.2]"], "p": ["n/a"],
                       "rate": ["-"], "n": [3], "scoring": ["dense"]})
    assert label_columns(df) == ["system", "scoring"]


# --------------------------------------------------------------------------- --json


runner = CliRunner()


def test_eval_and_attack_json(tiny_model, beir5, runs_dir):
    base = ["--runs-dir", str(runs_dir)]
    r = runner.invoke(app, [*base, "eval", "--model", str(tiny_model), "--dataset", str(beir5), "--measures",
                            "nDCG@10,RR@10", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2  # no table: the JSON line, then the run directory
    run = Path(lines[-1])
    summary = json.loads(lines[0])
    assert summary["run"] == str(run) and run.is_dir()
    agg = pd.read_csv(run / "metrics" / "aggregate.csv")
    assert summary["aggregate"][0]["nDCG@10"] == agg.loc[0, "nDCG@10"]
    assert summary["aggregate"][0]["RR@10"] == agg.loc[0, "RR@10"] and summary["aggregate"][0]["queries"] == 3

    r = runner.invoke(app, [*base, "attack", "--model", str(tiny_model), "--dataset", str(beir5), "--measures",
                            "nDCG@10", "--perturb", "char-swap", "--rate", "0.5", "--seeds", "1", "--json"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    summary = json.loads(lines[0])
    rob = pd.read_csv(Path(lines[-1]) / "metrics" / "robustness.csv")
    assert summary["run"] == lines[-1] and len(summary["robustness"]) == len(rob)
    first = summary["robustness"][0]
    assert first["measure"] == "nDCG@10" and first["clean"] == rob.loc[0, "clean"]
    assert first["ci_low"] is None  # one seed: no interval, JSON null rather than NaN

    plain = runner.invoke(app, [*base, "eval", "--model", str(tiny_model), "--dataset", str(beir5), "--measures",
                                "nDCG@10"], catch_exceptions=False)
    assert "nDCG@10" in plain.stdout and not plain.stdout.lstrip().startswith("{")  # the table without --json
