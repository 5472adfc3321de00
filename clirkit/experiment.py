"""Whole experiments from a TOML file: prepare, distill, evaluate and attack a grid of systems,
then one report with tables and plots (``clirkit run experiments/demo.toml``).

Every step is an ordinary command run (its own experiment directory); the experiment's own
directory records them in ``children.json`` and holds the combined tables (mean ± sd over
seeds, paired significance against the baseline, robustness) and ``report.md``.

The steps form a dependency graph (:func:`grid_steps`) that :mod:`clirkit.launch` runs in this
process (the default), in ``--jobs N`` local worker processes, or as Slurm jobs
(``--launcher slurm`` with a ``[slurm]`` table), all on one shared runs directory.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

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
    check_fusion_weights,
    load_toml,
)
from clirkit.data.formats import CARD
from clirkit.errors import ClirkitError
from clirkit.launch import (
    Call,
    Done,
    LaunchOptions,
    Outcome,
    Task,
    check_launcher,
    make_launch,
    run_graph,
    submitit_folder,
)
from clirkit.rundir import (
    close_abandoned,
    config_record,
    find_completed,
    read_json,
    run_status,
    start_run,
    write_json,
)

log = logging.getLogger("clirkit")


class FuseSpec(Config):
    """A fused system: other systems of the grid searched with the same query, rankings fused."""

    systems: list[str] = Field(..., min_length=2, description="names of the member systems (not fused ones)")
    method: FusionMethod = Field("rrf", description="rrf, combsum or combmnz (ranx)")
    weights: list[float] | None = Field(None, description="one weight per member, in order")
    rrf_k: int = Field(60, ge=0, description="rrf: the k in 1/(k + rank)")
    norm: FusionNorm | None = Field(None, description="combsum/combmnz: ranx score normalisation (default min-max)")

    _weights = field_validator("weights")(check_fusion_weights)

    @model_validator(mode="after")
    def _one_weight_per_member(self) -> FuseSpec:
        if self.weights is not None and len(self.weights) != len(self.systems):
            raise ValueError(f"fuse has {len(self.weights)} weights for {len(self.systems)} systems; give one weight "
                             f"per member system, in order")
        return self


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
    every_seed: bool = Field(False, description="attack the model of every training seed, not only the first "
                                                "seed's (the same queries and perturbations for all: systems "
                                                "compare per query under attack, mean over seeds); an existing "
                                                "model, the same for every seed, is attacked once")
    sample: int | None = Field(None, ge=1, description="attack a seeded sample of this many queries")
    greedy: dict[str, Any] | None = Field(None, description="also run the greedy attack with these options "
                                                            "(e.g. sample, max_edits, max_queries)")
    maxsim_mode: MaxsimMode | None = Field(
        None, description="maxsim search of the attacked queries (default: the eval grid's)")
    rerank_k: int | None = Field(None, ge=1, description="dense candidates re-ranked by maxsim (default: the eval "
                                                          "grid's)")


class ExperimentConfig(LaunchOptions, CommandConfig):
    """An experiment file (``experiments/*.toml``); ``launcher``, ``jobs`` and ``[slurm]``
    (:class:`clirkit.launch.LaunchOptions`) say where its steps run."""

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
        _existing_dataset(source, entry, origin, warn=False)  # prepared differently: fail before any work
    for system in cfg.systems:
        if system.distill is not None:
            build(DistillConfig, origin, **system.distill)
        if system.bm25:
            build(EvalConfig, f"{origin}: system {system.name}", model=BM25_MODEL, **system.retrieval_options())


# --------------------------------------------------------------------------- steps


def _existing_dataset(source: str, entry: dict[str, Any], origin: str, warn: bool = True) -> Path | None:
    """The ``out`` folder of a ``[[prepare]]`` entry if it holds a dataset already, to be reused
    as it is; None if there is none.

    Its card's ``prepared_with`` (:func:`clirkit.data.formats.prepare_record`) must equal the
    entry's resolved configuration: a folder prepared with other options (another seed, pair,
    query count, ...) is never taken for the one the grid asks for. A card from before clirkit
    recorded ``prepared_with`` cannot be checked: it is reused with a warning.

    Raises:
        ClirkitError: the folder was prepared differently.
    """
    from clirkit.data import SOURCES
    from clirkit.data.formats import prepare_record

    target = entry.get("out")
    if target is None or not (Path(target) / CARD).is_file():
        return None
    card = read_json(Path(target) / CARD)
    have = card.get("prepared_with") if isinstance(card, dict) else None
    if have is None:
        if warn:
            log.warning("dataset %s does not record how it was prepared (made before clirkit recorded it); "
                        "reusing it unchecked", target)
        return Path(target)
    want = prepare_record(build(SOURCES.get(source).config, origin, **entry))
    if have != want:
        missing = object()
        keys = [k for k in dict.fromkeys([*want, *have]) if want.get(k, missing) != have.get(k, missing)]
        raise ClirkitError(
            "the dataset here was prepared differently: "
            + ", ".join(f"{k}={have.get(k)!r} where the [[prepare]] entry asks {k}={want.get(k)!r}" for k in keys),
            path=target, fix=f"give the entry another out, or remove {target} to prepare it again")
    return Path(target)


def _prepare(entries: list[dict[str, Any]], origin: str) -> list[Path]:
    from clirkit.data import prepare

    out = []
    for entry in entries:
        entry = dict(entry)
        source = entry.pop("source")
        existing = _existing_dataset(source, entry, origin)
        if existing is not None:
            log.info("dataset %s exists; reusing it", existing)
            out.append(existing)
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


#: the stage each kind of grid step runs (imported in the process that runs it)
STAGES = {"distill": "clirkit.distill:run_distill", "eval": "clirkit.evaluate:run_eval",
          "fuse": "clirkit.fuse:run_fuse", "attack": "clirkit.attack:run_attack"}


def run_step(command: str, step: Config) -> str:
    """Run one grid step, ``clirkit <command>`` with config ``step``, and return its experiment
    directory. Runs in this process, a local worker or a Slurm job (so it is module level: it pickles)."""
    module, _, name = STAGES[command].partition(":")
    return str(getattr(importlib.import_module(module), name)(step))


@dataclass
class _Step:
    """A grid step as children.json records it once it completes."""

    command: str
    entry: dict[str, Any]  # its "run" filled in when it completes
    seed: int
    config: Config | None = None  # set when planned
    group: str | None = None  # the children.json list it joins (default: its command)


def _plan(cfg: ExperimentConfig, step: _Step, config: Config) -> Call | Done:
    """Reuse a completed run of ``config`` or launch it."""
    step.config = config
    path = _reuse(cfg, step.command, config, step.seed)
    return Done(str(path)) if path is not None else Call(run_step, (step.command, config))


def grid_steps(cfg: ExperimentConfig) -> tuple[list[Task], dict[str, _Step]]:
    """The grid as a dependency graph, in the order a single process runs it.

    A distillation per distilled system and seed waits for nothing (datasets are prepared
    before); an evaluation waits for its system's distillation for that seed, and for the
    first evaluation with the same named model, dataset and scoring (which builds the index
    the others reuse); an attack waits for every evaluation of its model (the first seed's, or
    with ``every_seed`` each seed's), whose indexes it reuses. Configurations are built when a
    step is launched, from the directories of the steps it waited for.

    Returns:
        The tasks for :func:`clirkit.launch.run_graph` and each task's :class:`_Step`, by key.
    """
    from clirkit.config import DistillConfig, FuseConfig

    tasks: list[Task] = []
    steps: dict[str, _Step] = {}
    by_name = {s.name: s for s in cfg.systems}
    models: dict[tuple[str, int], tuple[str | None, str | None]] = {}  # (system, seed): (model, distill key)
    for system in cfg.systems:
        if system.fuse is not None:  # evaluated from its members' runs (below)
            continue
        for seed in cfg.seeds if system.seeded else cfg.seeds[:1]:
            if system.model is not None:
                models[(system.name, seed)] = (system.model, None)
                continue
            key = f"distill {system.name} seed {seed}"
            steps[key] = step = _Step("distill", {"system": system.name, "seed": seed, "run": None}, seed)

            def plan(done: dict[str, Any], system: SystemSpec = system, step: _Step = step) -> Call | Done:
                return _plan(cfg, step, build(DistillConfig, f"system {system.name}", **{
                    **system.distill, "runs_dir": cfg.runs_dir, "seed": step.seed, "device": cfg.device}))

            tasks.append(Task(key, plan))
            models[(system.name, seed)] = (None, key)

    def model_of(name: str, seed: int, done: dict[str, Any]) -> str:
        model, distilled = models[(name, seed)]
        return done[distilled] if distilled is not None else model

    evals: dict[tuple[str, int], list[str]] = {}
    index_builder: dict[tuple[str, str, str], str] = {}
    for dataset in cfg.eval.datasets:
        for scoring in cfg.eval.scoring:
            for (name, seed), (model, distilled) in models.items():
                key = f"eval {name} seed {seed} {dataset} {scoring}"
                steps[key] = step = _Step("eval", {"system": name, "seed": seed, "dataset": str(dataset),
                                                   "scoring": scoring, "run": None}, seed)
                after = [distilled] if distilled is not None else []
                if model is not None:
                    first = index_builder.setdefault((model, str(dataset), scoring), key)
                    after += [first] if first != key else []
                evals.setdefault((name, seed), []).append(key)

                def plan(done: dict[str, Any], name: str = name, dataset: Path = dataset, scoring: str = scoring,
                         step: _Step = step) -> Call | Done:
                    return _plan(cfg, step, EvalConfig(
                        model=model_of(name, step.seed, done), dataset=dataset, scoring=scoring,
                        measures=cfg.eval.measures, top_k=cfg.eval.top_k, maxsim_mode=cfg.eval.maxsim_mode,
                        rerank_k=cfg.eval.rerank_k, query_translation=by_name[name].query_translation,
                        runs_dir=cfg.runs_dir, seed=step.seed, device=cfg.device,
                        **by_name[name].retrieval_options()))

                tasks.append(Task(key, plan, tuple(after)))
            for system in (s for s in cfg.systems if s.fuse is not None):
                for seed, member_seeds in _fused_seeds(cfg, models, system):
                    key = f"fuse {system.name} seed {seed} {dataset} {scoring}"
                    members = [f"eval {m} seed {ms} {dataset} {scoring}" for m, ms in zip(system.fuse.systems,
                                                                                            member_seeds)]
                    steps[key] = step = _Step("fuse", {"system": system.name, "seed": seed, "dataset": str(dataset),
                                                       "scoring": scoring, "run": None}, seed, group="eval")

                    def plan(done: dict[str, Any], spec: FuseSpec = system.fuse, members: list[str] = members,
                             step: _Step = step) -> Call | Done:
                        step.entry["fused"] = [done[m] for m in members]
                        return _plan(cfg, step, build(
                            FuseConfig, f"system {step.entry['system']}", runs=step.entry["fused"],
                            method=spec.method, weights=spec.weights, rrf_k=spec.rrf_k, norm=spec.norm,
                            top_k=cfg.eval.top_k, measures=cfg.eval.measures, runs_dir=cfg.runs_dir, seed=step.seed,
                            device=cfg.device))

                    tasks.append(Task(key, plan, tuple(members)))

    grid = cfg.attack
    if grid is None:
        return tasks, steps
    dataset = grid.dataset or cfg.eval.datasets[0]
    first_seed = cfg.seeds[0]
    searches: list[dict[str, Any]] = [{"sample": grid.sample}] + (
        [{"search": "greedy", **grid.greedy}] if grid.greedy else [])
    for name in grid.systems or [s.name for s in cfg.systems]:
        if name not in by_name:
            raise ClirkitError(f"attack names unknown system {name!r}", fix=f"use one of: {', '.join(by_name)}")
        system = by_name[name]
        fused = dict(_fused_seeds(cfg, models, system)) if system.fuse else {}
        own = list(fused) if system.fuse else [s for (n, s) in models if n == name]
        attacked: set[tuple] = set()
        for seed in own if grid.every_seed else [first_seed if first_seed in own else own[0]]:
            targets = list(zip(system.fuse.systems, fused[seed])) if system.fuse else [(name, seed)]
            same = tuple(models[t] for t in targets)  # an existing model is the same for every seed: once
            if same in attacked:
                continue
            attacked.add(same)
            tasks += _attack_tasks(cfg, system, seed, targets, searches, steps, dataset,
                                   [k for m, ms in targets for k in [models[(m, ms)][1], *evals.get((m, ms), [])]
                                    if k is not None], model_of)
    return tasks, steps


def _attack_tasks(cfg: ExperimentConfig, system: SystemSpec, seed: int, targets: list[tuple[str, int]],
                  searches: list[dict[str, Any]], steps: dict[str, _Step], dataset: Path, after: list[str],
                  model_of: Callable[[str, int, dict[str, Any]], str]) -> list[Task]:
    """The attacks of ``system``'s model of training seed ``seed`` (its fused members' ``targets``),
    one per scoring and search, each waiting for the ``after`` steps. Every attack has the grid's
    first seed as its own: the same sampled queries and perturbations whatever model it attacks."""
    from clirkit.config import AttackConfig

    grid = cfg.attack
    assert grid is not None
    first_seed = cfg.seeds[0]
    name = system.name
    tasks = []
    for scoring in grid.scoring:
        for extra in searches:
            search = extra.get("search", "random")
            if system.fuse is not None and search == "greedy":
                log.info("attack: no greedy search of the fused system %s (a rank fusion scores no "
                         "document outside its members' rankings); its random attack runs", name)
                continue
            key = f"attack {name} seed {seed} {scoring} {search}"
            steps[key] = step = _Step("attack", {"system": name, "seed": seed, "scoring": scoring, "run": None,
                                                 "search": search},
                                      first_seed)

            def plan(done: dict[str, Any], system: SystemSpec = system, scoring: str = scoring,
                     extra: dict[str, Any] = extra, step: _Step = step,
                     targets: list[tuple[str, int]] = targets) -> Call | Done:
                target = _attack_target(cfg, system, [model_of(m, ms, done) for m, ms in targets])
                return _plan(cfg, step, build(
                    AttackConfig, f"attack of {system.name}", dataset=dataset, perturb=grid.perturb,
                    rates=grid.rates, seeds=grid.seeds, scoring=scoring, measures=cfg.eval.measures,
                    maxsim_mode=grid.maxsim_mode or cfg.eval.maxsim_mode,
                    rerank_k=grid.rerank_k or cfg.eval.rerank_k, runs_dir=cfg.runs_dir, seed=first_seed,
                    device=cfg.device, **target, **extra))

            tasks.append(Task(key, plan, tuple(after)))
    return tasks


def _failed_run(runs_dir: Path, step: _Step, error: str) -> str | None:
    """The newest failed experiment directory of ``step`` (the one this grid left), if any; a run
    of it whose worker was killed outright is ended first, failed with ``error``
    (:func:`clirkit.rundir.close_abandoned`)."""
    if step.config is None:
        return None
    want = config_record(step.command, step.config, step.seed)

    def same(path: Path) -> bool:
        try:
            return read_json(path / "config.json") == want
        except ClirkitError:
            return False

    for path in sorted(Path(runs_dir).glob(f".*-{step.command}-*.tmp"), reverse=True):
        if path.is_dir() and same(path):
            close_abandoned(path, error)
    for path in sorted(Path(runs_dir).glob(f"*-{step.command}-*"), reverse=True):
        if path.is_dir() and not path.name.startswith(".") and run_status(path) == "failed" and same(path):
            return str(path)
    return None


def _children(outcome: Outcome, steps: dict[str, _Step], runs_dir: Path, children: dict[str, Any]) -> None:
    """Record completed steps in grid order (``distill``, ``eval``, ``attack`` lists), then the
    failed and skipped ones."""
    for key, step in steps.items():
        if key in outcome.results:
            children.setdefault(step.group or step.command, []).append({**step.entry, "run": outcome.results[key]})
    if outcome.failed:
        children["failed"] = [{"step": k, "error": e, "run": _failed_run(runs_dir, steps[k], e)}
                              for k, e in outcome.failed.items()]
    if outcome.skipped:
        children["skipped"] = [{"step": k, "waits_for": w} for k, w in outcome.skipped.items()]


def _attack_target(cfg: ExperimentConfig, system: SystemSpec, models: list[str]) -> dict[str, Any]:
    """The AttackConfig fields naming ``system``'s model (a fused system: its members' ``models``,
    in order, fused as its ``fuse`` table says)."""
    if system.fuse is None:
        return {"model": models, "query_translation": [system.query_translation or "none"],
                **system.retrieval_options()}
    spec = system.fuse
    by_name = {s.name: s for s in cfg.systems}
    members = [by_name[m] for m in spec.systems]
    options = {tuple(sorted(m.bm25.items())) for m in members if m.model == BM25_MODEL}
    if len(options) > 1:
        raise ClirkitError(f"fused system {system.name!r} has BM25 members with different options",
                           fix="attack them separately, or give them the same bm25 options")
    return {"model": models, "query_translation": [m.query_translation or "none" for m in members],
            "fuse": spec.method, "fuse_weights": spec.weights, "fuse_rrf_k": spec.rrf_k, "fuse_norm": spec.norm,
            **{f"bm25_{k}": v for k, v in (options.pop() if options else ())}}


def _fused_seeds(cfg: ExperimentConfig, models: dict[tuple[str, int], Any], system: SystemSpec
                 ) -> list[tuple[int, list[int]]]:
    """``(seed, member seeds)`` of a fused system: every seed a member has; a member run once
    (``seeded = false``) takes part in every seed with its one run."""
    assert system.fuse is not None
    own = {m: [s for (n, s) in models if n == m] for m in system.fuse.systems}
    seeds = sorted({s for v in own.values() for s in v}) if any(len(v) > 1 for v in own.values()) else cfg.seeds[:1]
    return [(seed, [seed if seed in own[m] else own[m][0] for m in system.fuse.systems]) for seed in seeds]


def run_experiment(cfg: ExperimentConfig, origin: str = "experiment") -> Path:
    """``clirkit run``: the whole grid, then the report, in one experiment directory.

    Steps run on ``cfg.launcher`` (:mod:`clirkit.launch`). A failed step fails the grid with a
    message naming it, after every step that does not wait for it has run; running the grid
    again reuses the completed steps and redoes the others.
    """
    check_launcher(cfg)
    tasks, steps = grid_steps(cfg)
    # a Slurm grid's own process computes nothing: its login node needs no GPU
    with start_run(cfg.runs_dir, "run", cfg, cfg.seeds[0], uses_device=cfg.launcher == "local") as run:
        children: dict[str, Any] = {"prepared": [str(p) for p in _prepare(cfg.prepare, origin)]}
        write_json(run.path / "children.json", children)
        folder = submitit_folder(cfg.runs_dir, run.id)
        if cfg.launcher != "local":
            run.record(jobs_folder=str(folder))
        outcome = run_graph(tasks, make_launch(cfg, folder))
        _children(outcome, steps, cfg.runs_dir, children)
        write_json(run.path / "children.json", children)
        if outcome.failed:
            first, error = next(iter(outcome.failed.items()))
            where = children["failed"][0]["run"]
            more = len(outcome.failed) - 1
            raise ClirkitError(
                f"step {first} failed: {error}" + (f" (run {where})" if where else "")
                + (f"; {more} more failed step(s)" if more else "")
                + (f"; {len(outcome.skipped)} step(s) not run" if outcome.skipped else "")
                + f"; see children.json of {run.id}",
                fix="fix the cause and run the grid again: its completed steps are reused")
        from clirkit.report import build_report

        build_report(run.path, children, cfg)
    return run.path


def load_children(run: Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """The children and configuration of a completed ``clirkit run`` directory (a running, failed
    or interrupted grid is refused: its children and tables are partial). Each step's ``run`` is
    its directory beside the grid (:func:`clirkit.runs.grid_children`), wherever the runs
    directory was when the grid ran."""
    from clirkit.runs import grid_children, require_completed

    require_completed(run)
    grid_children(run)  # every step is there: else one line naming the missing one
    children = read_json(run / "children.json")
    for items in children.values():
        for child in items if isinstance(items, list) else []:
            if isinstance(child, dict) and child.get("run"):
                child["run"] = str(run.parent / Path(str(child["run"])).name)
    config = read_json(run / "config.json")
    config.pop("command", None)
    return children, build(ExperimentConfig, str(run / "config.json"), **config)
