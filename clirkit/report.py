"""The experiment report: the children's tables combined (mean ± sd over seeds, paired tests
against the baseline, comparisons between named pairs of systems, robustness, greedy attack)
into ``metrics/``, ``plots/`` and ``report.md``.

It reads what the stages wrote (``metrics/per_query.csv``, ``robustness.csv``,
``greedy_summary.csv``) and imports only :mod:`clirkit.measures` and :mod:`clirkit.tables`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from clirkit.measures import (
    N_RESAMPLES,
    compare_pairs,
    holm_columns,
    parse_measures,
    robustness_rows,
    significance,
)
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
        means = {name: _mean(dfs) for name, dfs in systems.items()}  # per query, mean over seeds
        if cfg.baseline in means:
            part = significance(means, cfg.baseline, corrected=False)
            part.insert(0, "dataset", dataset)
            part.insert(1, "scoring", scoring)
            sig.append(part)
    sig_table = pd.concat(sig, ignore_index=True) if sig else pd.DataFrame()
    if not sig_table.empty:  # one Holm family: every dataset, scoring, system and measure of the report
        sig_table = holm_columns(sig_table, ["p"])
        write_table(sig_table, metrics / "significance")

    sections = [f"# {cfg.name}\n", cfg.description.strip() + "\n" if cfg.description else "",
                "## Retrieval (mean ± sd over training seeds)\n",
                formatted(table, measures).to_markdown(index=False, floatfmt=".4f") + "\n"]
    if not sig_table.empty:
        shown = sig_table[["dataset", "scoring", "system", "measure", "delta", "p", "p_holm"]]
        sections += [f"## Paired t-tests against {cfg.baseline} (Holm-corrected over all {len(sig_table)} tests)\n",
                     shown.to_markdown(index=False, floatfmt=".4g") + "\n"]

    pairs = getattr(cfg, "compare", [])
    comparisons = compare_table(per_query, pairs, seed=_seed(cfg))
    if not comparisons.empty:
        write_table(comparisons, metrics / "comparisons")
        sections += comparison_section(comparisons, per_query, seed=_seed(cfg))

    rob, attacked = attack_tables(children.get("attack", []))
    under_attack = compare_table(attacked, pairs, keys=ATTACK_KEYS, seed=_seed(cfg))
    if not rob.empty:
        shown = write_robustness(rob, metrics / "robustness")
        lines = rob.copy()
        if lines["scoring"].nunique() > 1:  # one line per system and scoring
            lines["system"] = lines["system"] + " / " + lines["scoring"]
        images = plot_robustness(lines.dropna(subset=["rate"]), plots)
        sections += ["## Robustness (random perturbations)\n", shown.to_markdown(index=False, floatfmt=".4f") + "\n"]
        sections += [f"![{p.stem}](plots/{p.name})\n" for p in images]
    if not under_attack.empty:
        write_table(under_attack, metrics / "attack_comparisons")
        sections += comparison_section(under_attack, attacked, seed=_seed(cfg), attacked=True)
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
    if not comparisons.empty:
        print_table(display_comparisons(comparisons), title=f"{cfg.name}: comparisons (A - B, Holm-corrected)")
    if not rob.empty:
        print_table(display_robustness(rob), title=f"{cfg.name}: robustness")
    if not under_attack.empty:
        print_table(display_comparisons(under_attack), title=f"{cfg.name}: comparisons under attack (A - B, Holm)")
    if not greedy.empty:
        print_table(greedy, title=f"{cfg.name}: greedy attack")
    return table


def _mean(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per query (and measure), the mean of tables with the same index: over seeds."""
    return sum(frames) / len(frames)


def _conditions(table: pd.DataFrame) -> list[str]:
    """The condition columns of a comparison table: those before ``system_a``."""
    return list(table.columns[:table.columns.get_loc("system_a")])


def _seed(cfg) -> int:
    seeds = getattr(cfg, "seeds", None) or [0]
    return int(seeds[0])


#: the columns naming a condition of the comparisons under attack
ATTACK_KEYS = ("scoring", "perturbation", "rate")


def compare_table(per_query: dict[tuple, dict[str, list[pd.DataFrame]]], pairs, keys: tuple[str, ...] = (
        "dataset", "scoring"), seed: int = 0, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Every ``(A, B)`` pair in every condition x measure (:func:`clirkit.measures.compare_pairs`),
    paired per query on the mean over seeds, Holm-corrected over the whole table (one family).

    Args:
        per_query: ``condition -> system -> per-query tables, one per seed``; a condition is a
            tuple of the ``keys`` columns (``(dataset, scoring)``; under attack
            :data:`ATTACK_KEYS`).
        pairs: ``(A, B)`` system names.
        keys: the names of the condition's parts, the table's first columns.
        seed: seed of the randomisation tests.
        n_resamples: randomisation-test resamples.
    """
    parts = []
    for condition, systems in per_query.items():
        means = {name: _mean(dfs) for name, dfs in systems.items()}  # per query, mean over seeds
        part = compare_pairs(means, pairs, n_resamples=n_resamples, seed=seed)
        if not part.empty:
            for i, (key, value) in enumerate(zip(keys, condition)):
                part.insert(i, key, value)
            part.insert(len(keys) + 2, "seeds_a", [len(systems[a]) for a in part["system_a"]])
            part.insert(len(keys) + 3, "seeds_b", [len(systems[b]) for b in part["system_b"]])
            parts.append(part)
    if not parts:
        return pd.DataFrame()
    return holm_columns(pd.concat(parts, ignore_index=True), ["p_t", "p_rand"])


def display_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """The comparisons for people, as text: ``A - B`` and its 95% CI to 4 decimals, p-values to 3
    significant digits (``1.2e-05`` stays readable); the condition columns (those before
    ``system_a``) as they are, a rate as ``0.1``."""
    keys = _conditions(table)
    shown = table[[*keys, "system_a", "system_b", "measure", "n"]].rename(
        columns={"system_a": "A", "system_b": "B", "n": "queries"})
    if "rate" in keys:
        shown["rate"] = [("-" if pd.isna(r) else f"{r:g}") for r in table["rate"]]
    shown["A - B"] = [f"{d:.4f}" for d in table["delta"]]
    shown["95% CI"] = [("n/a" if pd.isna(lo) else f"[{lo:.4f}, {hi:.4f}]") for lo, hi in zip(table["ci_low"],
                                                                                             table["ci_high"])]
    for col, name in [("p_t_holm", "p t-test (Holm)"), ("p_rand_holm", "p rand. (Holm)")]:
        shown[name] = [("n/a" if pd.isna(p) else f"{p:.3g}") for p in table[col]]
    return shown


def comparison_section(table: pd.DataFrame, per_query: dict, seed: int, attacked: bool = False) -> list[str]:
    """The report's "Comparisons" section (``attacked``: "Comparisons under attack"): how the
    tests were run, then the table."""
    several = any(len(dfs) > 1 for systems in per_query.values() for dfs in systems.values())
    resamples = sorted(set(table["resamples"]))
    how = ("A - B per query on the attacked queries, each query's value its mean over the perturbation seeds; "
           "every system was attacked on the same sampled queries with the same perturbed texts. " if attacked
           else "A - B per query on the same queries. ")
    keys = _conditions(table)
    how += (f"Two-sided paired t-test (scipy `ttest_rel`) and paired "
           f"randomisation test (scipy `permutation_test`, A and B swapped within queries, "
           f"{', '.join(map(str, resamples))} resamples, seed {seed}; exact when every assignment is counted). "
           f"p-values are Holm-corrected over all {len(table)} tests (one family: every comparison, "
           f"{', '.join(keys)} and measure); the interval is the 95% t interval of the mean difference.")
    if several:
        how += " A system with several training seeds is paired per query on its mean over the seeds."
    elif attacked:
        how += " One training seed's model per system (`every_seed = true` attacks every seed's)."
    shown = display_comparisons(table)
    left = len(shown.columns) - 5  # the condition, A, B, measure; then the numbers
    return ["## Comparisons under attack\n" if attacked else "## Comparisons\n", how + "\n",
            shown.to_markdown(index=False, disable_numparse=True, colalign=("left",) * left + ("right",) * 5) + "\n"]


#: the columns of an attack's ``metrics/per_query.csv`` that are not measures
_LONG = ("system", "perturbation", "rate", "seed", "query_id")


def _split_long(long: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, float], dict[int, pd.DataFrame]]]:
    """An attack's long per-query table as its clean table and ``(perturbation, rate) ->
    perturbation seed -> per-query table`` (index ``query_id``, one column per measure)."""
    measures = [c for c in long.columns if c not in _LONG]
    is_clean = long["seed"].isna()
    clean = long[is_clean].set_index("query_id")[measures]
    attacked: dict[tuple[str, float], dict[int, pd.DataFrame]] = {}
    for (label, rate, seed), part in long[~is_clean].groupby(["perturbation", "rate", "seed"], sort=False,
                                                             dropna=False):
        rate = math.nan if pd.isna(rate) else float(rate)  # one nan object: a rate-less spec keys alike in every table
        attacked.setdefault((label, rate), {})[int(seed)] = part.set_index("query_id")[measures]
    return clean, attacked


def attack_tables(children: list[dict]) -> tuple[pd.DataFrame, dict[tuple, dict[str, list[pd.DataFrame]]]]:
    """The random attacks' robustness table and per-query attacked values, read from each attack's
    ``metrics/per_query.csv``.

    A system attacked for several training seeds (``every_seed``) has one robustness row per
    scoring x perturbation x rate x measure, from :func:`clirkit.measures.robustness_rows` on the
    per-query means over the training seeds (the drop's interval still over perturbation seeds);
    with one training seed the rows are the attack's own ``robustness.csv``.

    Returns:
        The robustness table (``system, scoring`` first, ``training_seeds`` last) and, for
        :func:`compare_table` with :data:`ATTACK_KEYS`, ``(scoring, perturbation, rate) ->
        system -> one per-query table per training seed`` (each the mean over perturbation seeds).
    """
    longs: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for child in children:
        path = Path(child["run"]) / "metrics" / "per_query.csv"
        if child.get("search") == "random" and path.is_file():
            longs.setdefault((child["system"], child["scoring"]), []).append(
                pd.read_csv(path, dtype={"query_id": str, "perturbation": str}))
    rows, attacked = [], {}
    for (system, scoring), tables in longs.items():
        split = [_split_long(t) for t in tables]
        clean = _mean([c for c, _ in split])
        for condition in split[0][1]:
            by_seed: dict[int, list[pd.DataFrame]] = {}
            for _, conditions in split:
                for seed, df in conditions[condition].items():
                    by_seed.setdefault(seed, []).append(df)
            rows += [{**r, "scoring": scoring, "training_seeds": len(tables)}
                     for r in robustness_rows(system, *condition, clean, [_mean(v) for v in by_seed.values()])]
            attacked.setdefault((scoring, *condition), {})[system] = [
                _mean(list(conditions[condition].values())) for _, conditions in split]
    table = pd.DataFrame(rows)
    if not table.empty:
        table.insert(1, "scoring", table.pop("scoring"))
    return table, attacked


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
            if "seed" in child:  # the attacked model's training seed
                df.insert(2, "training_seed", child["seed"])
            parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
