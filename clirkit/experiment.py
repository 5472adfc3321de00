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
    BM25_MODEL,
    DEFAULT_MEASURES,
    CommandConfig,
    Config,
    EvalConfig,
    FusionMethod,
    FusionNorm,
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


class FuseSpec(Config):
    """A fused system: other systems of the grid searched with the same query, rankings fused."""

    systems: list[str] = Field(..., min_length=2, description="names of the member systems (not fused ones)")
    method: FusionMethod = Field("rrf", description="rrf, combsum or combmnz (ranx)")
    weights: list[float] | None = Field(None, description="one weight per member, in order")
    rrf_k: int = Field(60, ge=0, description="rrf: the k in 1/(k + rank)")
    norm: FusionNorm | None = Field(None, description="combsum/combmnz: ranx score normalisation (default min-max)")


class SystemSpec(Config):
    """One retrieval system of the grid: an existing model (``bm25``: the lexical system), a model
    distilled for it, or a fusion of other systems (evaluated for every seed of a seeded member,
    each member's run of that seed)."""

    name: str = Field(..., description="label in every table")
    model: str | None = Field(None, description="an existing encoder (no training), e.g. minilm; or bm25")
    distill: dict[str, Any] | None = Field(None, description="clirkit distill options (DistillConfig fields)")
    fuse: FuseSpec | None = Field(None, description="fuse other systems: {systems = [...], method = 'rrf'}")
    query_translation: str | None = Field(None, description="lexicon[:PATH]: translate queries first")
    bm25: dict[str, Any] = Field(default_factory=dict, description="model = 'bm25': its options without the "
                                                                   "bm25_ prefix (k1, b, method, stem, stopwords)")
    seeded: bool = Field(True, description="repeat for every experiment seed (false: run once, e.g. zero-shot); "
                                           "a fused system follows its members")

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        if sum(x is not None for x in (self.model, self.distill, self.fuse)) != 1:
            raise ValueError(f"system {self.name!r} needs exactly one of model, distill or fuse")
        if self.fuse is not None and self.query_translation:
            raise ValueError(f"fused system {self.name!r}: give query_translation to its members")
        if self.bm25 and self.model != BM25_MODEL:
            raise ValueError(f"system {self.name!r}: bm25 options need model = 'bm25'")
        return self

    def retrieval_options(self) -> dict[str, Any]:
        """The system's own RetrievalOptions fields (``bm25_*``)."""
        return {f"bm25_{k}": v for k, v in self.bm25.items()}


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
        plain = {s.name for s in self.systems if s.fuse is None}
        for s in self.systems:
            for member in s.fuse.systems if s.fuse else []:
                if member not in plain:
                    raise ValueError(f"fused system {s.name!r}: member {member!r} is not an unfused system of the "
                                     f"grid ({', '.join(sorted(plain))})")
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
        if system.bm25:
            build(EvalConfig, f"{origin}: system {system.name}", model=BM25_MODEL, **system.retrieval_options())


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
        if system.fuse is not None:  # evaluated from its members' runs (_evaluate_fused)
            continue
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
                                  runs_dir=cfg.runs_dir, seed=seed, device=cfg.device,
                                  **by_name[name].retrieval_options())
                path = _reuse(cfg, "eval", ecfg, seed) or run_eval(ecfg)
                children.setdefault("eval", []).append({"system": name, "seed": seed, "dataset": str(dataset),
                                                        "scoring": scoring, "run": str(path)})
    _evaluate_fused(cfg, models, children)


def _fused_seeds(cfg: ExperimentConfig, models: dict[tuple[str, int], str], system: SystemSpec
                 ) -> list[tuple[int, list[int]]]:
    """``(seed, member seeds)`` of a fused system: every seed a member has; a member run once
    (``seeded = false``) takes part in every seed with its one run."""
    assert system.fuse is not None
    own = {m: [s for (n, s) in models if n == m] for m in system.fuse.systems}
    seeds = sorted({s for v in own.values() for s in v}) if any(len(v) > 1 for v in own.values()) else cfg.seeds[:1]
    return [(seed, [seed if seed in own[m] else own[m][0] for m in system.fuse.systems]) for seed in seeds]


def _evaluate_fused(cfg: ExperimentConfig, models: dict[tuple[str, int], str], children: dict[str, Any]) -> None:
    """Fuse the members' eval runs (``clirkit fuse``) per dataset, scoring and seed."""
    from clirkit.config import FuseConfig
    from clirkit.fuse import run_fuse

    runs = {(c["system"], c["seed"], c["dataset"], c["scoring"]): c["run"] for c in children.get("eval", [])}
    for system in (s for s in cfg.systems if s.fuse is not None):
        spec = system.fuse
        assert spec is not None
        for dataset in cfg.eval.datasets:
            for scoring in cfg.eval.scoring:
                for seed, member_seeds in _fused_seeds(cfg, models, system):
                    members = [runs[(m, s, str(dataset), scoring)] for m, s in zip(spec.systems, member_seeds)]
                    fcfg = build(FuseConfig, f"system {system.name}", runs=members, method=spec.method,
                                 weights=spec.weights, rrf_k=spec.rrf_k, norm=spec.norm, top_k=cfg.eval.top_k,
                                 measures=cfg.eval.measures, runs_dir=cfg.runs_dir, seed=seed, device=cfg.device)
                    path = _reuse(cfg, "fuse", fcfg, seed) or run_fuse(fcfg)
                    children.setdefault("eval", []).append({"system": system.name, "seed": seed,
                                                            "dataset": str(dataset), "scoring": scoring,
                                                            "run": str(path), "fused": members})


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
        target = _attack_target(cfg, models, by_name[name], first_seed)
        for scoring in grid.scoring:
            for extra in searches:
                if target.get("fuse") and extra.get("search") == "greedy":
                    log.info("attack: no greedy search of the fused system %s (a rank fusion scores no "
                             "document outside its members' rankings); its random attack runs", name)
                    continue
                acfg = build(AttackConfig, f"attack of {name}", dataset=dataset, perturb=grid.perturb,
                             rates=grid.rates, seeds=grid.seeds, scoring=scoring, measures=cfg.eval.measures,
                             maxsim_mode=grid.maxsim_mode or cfg.eval.maxsim_mode,
                             rerank_k=grid.rerank_k or cfg.eval.rerank_k, runs_dir=cfg.runs_dir, seed=first_seed,
                             device=cfg.device, **target, **extra)
                path = _reuse(cfg, "attack", acfg, first_seed) or run_attack(acfg)
                children.setdefault("attack", []).append({"system": name, "scoring": scoring, "run": str(path),
                                                          "search": extra.get("search", "random")})


def _attack_target(cfg: ExperimentConfig, models: dict[tuple[str, int], str], system: SystemSpec, seed: int
                   ) -> dict[str, Any]:
    """The AttackConfig fields naming ``system``'s model(s) at ``seed`` (a fused system: its members'
    of that seed, fused by ``fuse``)."""
    by_name = {s.name: s for s in cfg.systems}
    if system.fuse is None:
        return {"model": [models[(system.name, seed)]], "query_translation": [system.query_translation or "none"],
                **system.retrieval_options()}
    spec = system.fuse
    seed, member_seeds = next(((s, ms) for s, ms in _fused_seeds(cfg, models, system) if s == seed),
                              _fused_seeds(cfg, models, system)[0])
    members = [by_name[m] for m in spec.systems]
    options = {tuple(sorted(m.bm25.items())) for m in members if m.model == BM25_MODEL}
    if len(options) > 1:
        raise ClirkitError(f"fused system {system.name!r} has BM25 members with different options",
                           fix="attack them separately, or give them the same bm25 options")
    return {"model": [models[(m.name, s)] for m, s in zip(members, member_seeds)],
            "query_translation": [m.query_translation or "none" for m in members],
            "fuse": spec.method, "fuse_weights": spec.weights, "fuse_rrf_k": spec.rrf_k, "fuse_norm": spec.norm,
            **{f"bm25_{k}": v for k, v in (options.pop() if options else ())}}


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
