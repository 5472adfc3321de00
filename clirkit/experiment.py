"""Whole experiments from a TOML file: prepare, distill, evaluate and attack a grid of systems,
then one report with tables and plots (``clirkit run experiments/demo.toml``).

Every step is an ordinary command run (its own experiment directory); the experiment's own
directory records them in ``children.json`` and holds the combined tables (mean ± sd over
seeds, paired significance against the baseline, robustness) and ``report.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from clirkit.config import (
    DEFAULT_MEASURES,
    CommandConfig,
    Config,
    EvalConfig,
    MaxsimMode,
    Scoring,
    apply_overrides,
    build,
    load_toml,
)
from clirkit.data.formats import CARD
from clirkit.errors import ClirkitError
from clirkit.rundir import find_completed, read_json, start_run, write_json

log = logging.getLogger("clirkit")


class SystemSpec(Config):
    """One retrieval system of the grid: an existing model, or a model distilled for it."""

    name: str = Field(..., description="label in every table")
    model: str | None = Field(None, description="an existing encoder (no training), e.g. minilm")
    distill: dict[str, Any] | None = Field(None, description="clirkit distill options (DistillConfig fields)")
    query_translation: str | None = Field(None, description="lexicon[:PATH]: translate queries first")
    seeded: bool = Field(True, description="repeat for every experiment seed (false: run once, e.g. zero-shot)")

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        if (self.model is None) == (self.distill is None):
            raise ValueError(f"system {self.name!r} needs exactly one of model or distill")
        return self


class EvalGrid(Config):
    datasets: list[Path] = Field(..., description="prepared datasets to evaluate every system on")
    scoring: list[Scoring] = Field(default_factory=lambda: ["dense"], description="dense and/or maxsim")
    measures: list[str] = Field(default_factory=lambda: list(DEFAULT_MEASURES), description="ir_measures strings")
    top_k: int = Field(1000, ge=1, description="documents retrieved per query")
    maxsim_mode: MaxsimMode = Field(
        "auto", description="maxsim over the whole corpus, or re-ranking the dense top rerank_k (auto: by size)")
    rerank_k: int = Field(100, ge=1, description="dense candidates re-ranked by maxsim")


class AttackGrid(Config):
    dataset: Path | None = Field(None, description="dataset to attack (default: the first eval dataset)")
    perturb: list[str] = Field(default_factory=lambda: ["char-swap"], description="perturbation specs")
    rates: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3], description="perturbation rates")
    seeds: int = Field(3, ge=1, description="perturbation seeds per rate")
    scoring: list[Scoring] = Field(default_factory=lambda: ["dense"], description="scorings to attack")
    systems: list[str] | None = Field(None, description="systems to attack (default: all)")
    sample: int | None = Field(None, ge=1, description="attack a seeded sample of this many queries")
    greedy: dict[str, Any] | None = Field(None, description="also run the greedy attack with these options "
                                                            "(e.g. sample, max_edits, max_queries)")
    maxsim_mode: MaxsimMode | None = Field(
        None, description="maxsim search of the attacked queries (default: the eval grid's)")
    rerank_k: int | None = Field(None, ge=1, description="dense candidates re-ranked by maxsim (default: the eval "
                                                          "grid's)")


class ExperimentConfig(CommandConfig):
    """An experiment file (``experiments/*.toml``)."""

    name: str = Field(..., description="experiment name")
    description: str = Field("", description="what the experiment asks")
    seeds: list[int] = Field(default_factory=lambda: [0], description="training seeds (mean ± sd over them)")
    baseline: str = Field("zero-shot", description="system the significance tests compare against")
    compare: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of systems [A, B] to compare per query (A - B: paired t-test and "
                                          "randomisation test, Holm-corrected), e.g. [['static-ot', 'static-mse']]")
    prepare: list[dict[str, Any]] = Field(default_factory=list, description="datasets to prepare first "
                                                                          "({source = 'bible', ...})")
    systems: list[SystemSpec] = Field(..., min_length=1, description="the systems of the grid")
    reuse: bool = Field(True, description="take a completed distill, eval or attack run of the runs directory "
                                          "with the same configuration and unchanged inputs instead of running "
                                          "it again")
    eval: EvalGrid
    attack: AttackGrid | None = None

    @model_validator(mode="after")
    def _names(self) -> ExperimentConfig:
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique: {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a system name ({', '.join(names)})")
        for a, b in self.compare:
            unknown = [x for x in (a, b) if x not in names]
            if unknown:
                raise ValueError(f"compare names unknown system {unknown[0]!r} (known: {', '.join(names)})")
            if a == b:
                raise ValueError(f"compare pairs {a!r} with itself; name two different systems")
        return self


def load_experiment(path: Path, overrides: list[str], **values: Any) -> ExperimentConfig:
    """Read an experiment TOML file, apply ``key=value`` overrides and validate it."""
    data = apply_overrides(load_toml(path), overrides)
    cfg = build(ExperimentConfig, str(path), **{**data, **values})
    _validate_steps(cfg, str(path))
    return cfg


def _validate_steps(cfg: ExperimentConfig, origin: str) -> None:
    """Check every prepare entry and distill table against its config before any work starts."""
    from clirkit.config import DistillConfig
    from clirkit.data import SOURCES

    for entry in cfg.prepare:
        entry = dict(entry)
        source = entry.pop("source", None)
        if source is None:
            raise ClirkitError("a [[prepare]] entry has no source", path=origin, fix="add source = 'bible' (or ...)")
        build(SOURCES.get(source).config, origin, **entry)
    for system in cfg.systems:
        if system.distill is not None:
            build(DistillConfig, origin, **system.distill)


# --------------------------------------------------------------------------- steps


def _prepare(entries: list[dict[str, Any]], origin: str) -> list[Path]:
    from clirkit.data import prepare

    out = []
    for entry in entries:
        entry = dict(entry)
        source = entry.pop("source")
        target = entry.get("out")
        if target is not None and (Path(target) / CARD).is_file():
            log.info("dataset %s exists; reusing it", target)
            out.append(Path(target))
            continue
        out.append(prepare(source, origin, **entry))
        log.info("prepared %s", out[-1])
    return out


def _reuse(cfg: ExperimentConfig, command: str, step: Config, seed: int) -> Path | None:
    """A completed run of this step with the same configuration and unchanged inputs, if reuse is on
    (``reuse = true`` and not inside :func:`clirkit.rundir.fresh_run`)."""
    path = find_completed(cfg.runs_dir, command, step, seed) if cfg.reuse else None
    if path is not None:
        log.info("%s: reusing %s (same configuration and inputs)", command, path)
    return path


def _system_models(cfg: ExperimentConfig, children: dict[str, Any]) -> dict[tuple[str, int], str]:
    """Train (or name) every system's model for every seed: {(system, seed): model spec}."""
    models: dict[tuple[str, int], str] = {}
    for system in cfg.systems:
        for seed in cfg.seeds if system.seeded else cfg.seeds[:1]:
            if system.model is not None:
                models[(system.name, seed)] = system.model
                continue
            from clirkit.config import DistillConfig
            from clirkit.distill import run_distill

            dcfg = build(DistillConfig, f"system {system.name}", **{
                **system.distill, "runs_dir": cfg.runs_dir, "seed": seed, "device": cfg.device})
            path = _reuse(cfg, "distill", dcfg, seed) or run_distill(dcfg)
            children.setdefault("distill", []).append({"system": system.name, "seed": seed, "run": str(path)})
            models[(system.name, seed)] = str(path)
    return models


def _evaluate(cfg: ExperimentConfig, models: dict[tuple[str, int], str], children: dict[str, Any]) -> None:
    from clirkit.evaluate import run_eval

    by_name = {s.name: s for s in cfg.systems}
    for dataset in cfg.eval.datasets:
        for scoring in cfg.eval.scoring:
            for (name, seed), model in models.items():
                ecfg = EvalConfig(model=model, dataset=dataset, scoring=scoring, measures=cfg.eval.measures,
                                  top_k=cfg.eval.top_k, maxsim_mode=cfg.eval.maxsim_mode,
                                  rerank_k=cfg.eval.rerank_k, query_translation=by_name[name].query_translation,
                                  runs_dir=cfg.runs_dir, seed=seed, device=cfg.device)
                path = _reuse(cfg, "eval", ecfg, seed) or run_eval(ecfg)
                children.setdefault("eval", []).append({"system": name, "seed": seed, "dataset": str(dataset),
                                                        "scoring": scoring, "run": str(path)})


def _attack(cfg: ExperimentConfig, models: dict[tuple[str, int], str], children: dict[str, Any]) -> None:
    from clirkit.attack import run_attack
    from clirkit.config import AttackConfig

    grid = cfg.attack
    assert grid is not None
    by_name = {s.name: s for s in cfg.systems}
    dataset = grid.dataset or cfg.eval.datasets[0]
    first_seed = cfg.seeds[0]
    names = grid.systems or [s.name for s in cfg.systems]
    searches: list[dict[str, Any]] = [{"sample": grid.sample}] + (
        [{"search": "greedy", **grid.greedy}] if grid.greedy else [])
    for name in names:
        if name not in by_name:
            raise ClirkitError(f"attack names unknown system {name!r}", fix=f"use one of: {', '.join(by_name)}")
        for scoring in grid.scoring:
            for extra in searches:
                acfg = build(AttackConfig, f"attack of {name}", model=[models[(name, first_seed)]],
                             dataset=dataset, perturb=grid.perturb, rates=grid.rates, seeds=grid.seeds,
                             scoring=scoring, query_translation=[by_name[name].query_translation or "none"],
                             measures=cfg.eval.measures, maxsim_mode=grid.maxsim_mode or cfg.eval.maxsim_mode,
                             rerank_k=grid.rerank_k or cfg.eval.rerank_k, runs_dir=cfg.runs_dir, seed=first_seed,
                             device=cfg.device, **extra)
                path = _reuse(cfg, "attack", acfg, first_seed) or run_attack(acfg)
                children.setdefault("attack", []).append({"system": name, "scoring": scoring, "run": str(path),
                                                          "search": extra.get("search", "random")})


def run_experiment(cfg: ExperimentConfig, origin: str = "experiment") -> Path:
    """``clirkit run``: the whole grid, then the report, in one experiment directory."""
    with start_run(cfg.runs_dir, "run", cfg, cfg.seeds[0]) as run:
        children: dict[str, Any] = {"prepared": [str(p) for p in _prepare(cfg.prepare, origin)]}
        write_json(run.path / "children.json", children)
        models = _system_models(cfg, children)
        write_json(run.path / "children.json", children)
        _evaluate(cfg, models, children)
        write_json(run.path / "children.json", children)
        if cfg.attack is not None:
            _attack(cfg, models, children)
            write_json(run.path / "children.json", children)
        from clirkit.report import build_report

        build_report(run.path, children, cfg)
    return run.path


def load_children(run: Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """The children and configuration of a finished ``clirkit run`` directory."""
    children = read_json(run / "children.json")
    config = read_json(run / "config.json")
    config.pop("command", None)
    return children, build(ExperimentConfig, str(run / "config.json"), **config)
