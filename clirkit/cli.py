"""The ``clirkit`` command line: thin Typer commands that build a config and call one function."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from rich.markup import escape

# Offline unless asked: a hub lookup must fail fast, never hang (set before HF libraries load).
if os.environ.get("CLIRKIT_ONLINE", "0") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from clirkit import __version__  # noqa: E402
from clirkit.config import (  # noqa: E402
    AttackConfig,
    BenchmarkOptions,
    CommandConfig,
    Config,
    DistillConfig,
    EvalConfig,
    FuseConfig,
    IndexConfig,
    IndexOptions,
    RetrievalOptions,
    build,
)
from clirkit.data import SOURCES  # noqa: E402
from clirkit.errors import ClirkitError  # noqa: E402
from clirkit.launch import LaunchOptions  # noqa: E402
from clirkit.progress import err, fail  # noqa: E402

app = typer.Typer(name="clirkit", rich_markup_mode="rich", no_args_is_help=True,
                  help="Cross-lingual IR experiments: prepare data, distill (OPTICAL), index, evaluate, attack.")
prepare_app = typer.Typer(no_args_is_help=True, help="Prepare a dataset in the canonical BEIR layout with a card.")
app.add_typer(prepare_app, name="prepare")


def _version(value: bool) -> None:
    if value:
        print(f"clirkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    runs_dir: Annotated[Path, typer.Option(envvar="CLIRKIT_RUNS_DIR", help="where experiment directories go")]
    = Path("experiments/runs"),
    seed: Annotated[int, typer.Option(min=0, help="random seed (0 is a seed)")] = 0,
    device: Annotated[str | None, typer.Option(
        help=CommandConfig.model_fields["device"].description, show_default="auto")] = None,
    precision: Annotated[str | None, typer.Option(
        help=CommandConfig.model_fields["precision"].description, show_default="fp32")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="show the version and exit")] = False,
) -> None:
    """Global options shared by every command (each computing command also takes them after its name)."""
    from rich.logging import RichHandler

    log = logging.getLogger("clirkit")
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        log.addHandler(RichHandler(console=err, show_path=False, show_time=False))
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    given = {"device": device, "precision": precision}
    ctx.obj = {"runs_dir": runs_dir, "seed": seed, **{k: v for k, v in given.items() if v is not None}}


def _call(fn: Callable[[Any], Path | None], cfg: Config, json_tables: tuple[str, ...] = ()) -> None:
    """Run ``fn(cfg)``; a user error is one line on stderr and exit code 2; the path is stdout's last line
    (``None``: nothing was made, and stdout stays empty, so a script's ``tail -1`` gets no stale path).

    A computing command's device and precision are checked first, so a missing GPU fails
    before anything is written. With ``json_tables`` (``--json``) the console tables are not
    shown and stdout is one line of JSON, ``{"run": path, <table>: [rows]}`` from the run's
    ``metrics/<table>.csv``, then the path: ``run=$(clirkit eval --json ... | tail -1)`` still
    works and ``head -1`` is the JSON.
    """
    from clirkit.progress import out

    quiet = out.quiet
    try:
        if isinstance(cfg, CommandConfig):
            from clirkit.device import resolve_runtime

            resolve_runtime(cfg.device, cfg.precision)
        out.quiet = quiet or bool(json_tables)  # stdout is for the JSON line and the path only
        path = fn(cfg)
    except ClirkitError as e:
        raise fail(e) from None
    finally:
        out.quiet = quiet
    if path is not None and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 speaks
        if json_tables:
            import json

            from clirkit.tables import json_summary

            print(json.dumps(json_summary(path, list(json_tables))), flush=True)
        print(path, flush=True)


def _config(cls: type[Config], ctx: typer.Context | None = None, **values: Any) -> Config:
    """Validate ``values`` (over the global options in ``ctx``) into ``cls``."""
    if ctx is not None and ctx.obj:
        values = {**{k: v for k, v in ctx.obj.items() if k in cls.model_fields}, **values}
    try:
        return build(cls, **values)
    except ClirkitError as e:
        raise fail(e) from None


# --------------------------------------------------------------------------- options from configs

#: extra spellings of an option (the field's own name always works: ``rates`` -> ``--rates``)
ALIASES: dict[str, tuple[str, ...]] = {"rates": ("--rate",), "langs": ("--lang",)}
#: options that only change how results are shown, not what runs: not config fields, so they
#: are not recorded in config.json and do not stop a grid from reusing the run
PRESENTATION_OPTIONS = {"as_json"}
#: help-panel title for the fields a shared options class defines
PANELS: dict[type[Config], str] = {CommandConfig: "Run options", IndexOptions: "Index options",
                                   RetrievalOptions: "Retrieval options", BenchmarkOptions: "Benchmark options"}
_TOP_LEVEL_COMMA = re.compile(r",(?![^(]*\))")  # not inside ir_measures parameters: P(rel=2,judged_only=True)@5


def _items(field_name: str, values: list[str]) -> list[str]:
    """The items of a list option: repeated options, each also split on commas (measures also on
    spaces); perturbation specs keep their commas (``char-swap:rate=0.2,min_len=4``)."""
    if field_name == "perturb":
        return [v.strip() for v in values if v.strip()]
    out = []
    for value in values:
        for part in _TOP_LEVEL_COMMA.split(value):
            out.extend(part.split() if field_name == "measures" else [part.strip()])
    return [v for v in out if v]


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return get_origin(annotation) in (Union, UnionType) and any(get_origin(a) is list for a in get_args(annotation))


def _cli_type(annotation: Any) -> Any:
    """The Typer-friendly type for a config field; pydantic validates the value afterwards."""
    if annotation in (str, int, float, bool, Path):
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return list[args[0]] if args and args[0] in (str, Path) else list[str]
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in (str, int, float, bool, Path):
            return rest[0]
        if len(rest) == 1 and get_origin(rest[0]) is list:
            return _cli_type(rest[0])
    return str


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    if get_origin(field.annotation) is Literal:
        text += escape(f" [{'|'.join(map(str, get_args(field.annotation)))}]")  # brackets are rich markup
    return text


def _shown_default(field: FieldInfo) -> str | bool:
    if field.is_required():
        return False
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return False
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _panel(cls: type[Config], field_name: str) -> str | None:
    for klass in reversed(cls.__mro__):  # the shared class that first declares the field
        if klass in PANELS and field_name in getattr(klass, "__annotations__", {}):
            return PANELS[klass]
    return None


def config_params(cls: type[Config], arguments: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One Typer parameter per field of ``cls``: the field's name (``maxsim_mode`` ->
    ``--maxsim-mode``, as in TOML), its description as help, its default shown.

    Options default to None (= not given), so the config's own defaults, validators and
    ``$CLIRKIT_DEVICE`` apply: the CLI decides nothing. A list field is a repeatable option
    whose values may also be comma separated. Fields named in ``arguments`` are positional.
    """
    own = [n for n in cls.model_fields if n in vars(cls).get("__annotations__", {})]
    order = own + [n for n in cls.model_fields if n not in own]  # the command's own options first
    params = []
    for name in order:
        field = cls.model_fields[name]
        kind = _cli_type(field.annotation)
        if name in arguments:
            info = typer.Argument(help=_help(field))
            default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        else:
            decls = (f"--{name.replace('_', '-')}", *ALIASES.get(name, ())) if kind is not bool else ()
            info = typer.Option(*decls, help=_help(field), show_default=_shown_default(field),
                                rich_help_panel=_panel(cls, name))
            # required fields stay required options; the others default to None (= not given)
            default, kind = (inspect.Parameter.empty, kind) if field.is_required() else (None, kind | None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, info]))
    return params


def _lazy(target: str) -> Callable[[Any], Path]:
    """``module:function``, imported when the command runs (torch and faiss load only then)."""
    module, _, name = target.partition(":")

    def call(cfg: Any) -> Path:
        return getattr(importlib.import_module(module), name)(cfg)

    call.__doc__ = f"{target}(cfg)"
    return call


def config_command(group: typer.Typer, names: str | tuple[str, ...], cls: type[Config], fn: Callable | str,
                   arguments: tuple[str, ...] = (), help: str | None = None, json_tables: tuple[str, ...] = ()
                   ) -> None:
    """Register a command whose options are ``cls``'s fields and which calls ``fn(cfg)``.

    The command only validates what was given into ``cls`` (over the global options for a
    :class:`CommandConfig`) and calls ``fn`` (``"module:function"`` is imported lazily), so the
    command line and the config, TOML grids included, cannot drift apart. Further ``names``
    are hidden aliases. With ``json_tables`` the command also takes ``--json`` (see
    :func:`_call`): how results are shown is not part of the run's configuration, so it is
    not a config field (it would change the run's hash and defeat reuse).
    """
    run = _lazy(fn) if isinstance(fn, str) else fn
    params = config_params(cls, arguments)
    if json_tables:
        names_shown = ", ".join(t.replace("*", "<task>") for t in json_tables)
        params.append(inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--json", help=f"print the results ({names_shown}) as one line of JSON instead of "
                                              f"tables; the run directory stays the last line")]))
    list_fields = {n for n, f in cls.model_fields.items() if _is_list(f.annotation) and n not in arguments}
    takes_globals = issubclass(cls, CommandConfig)

    def command(ctx: typer.Context, **values: Any) -> None:
        as_json = values.pop("as_json", False)
        given = {k: _items(k, v) if k in list_fields and v else v for k, v in values.items()
                 if v is not None and not (k in list_fields and v == [])}
        given.update({k: v for k, v in values.items() if k in arguments})
        _call(run, _config(cls, ctx if takes_globals else None, **given), json_tables if as_json else ())

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    command.__signature__ = inspect.Signature([ctx_param, *params])  # type: ignore[attr-defined]
    command.__doc__ = help or (getattr(fn, "__doc__", None) or "").split("\n")[0]
    names = (names,) if isinstance(names, str) else names
    group.command(names[0])(command)
    for alias in names[1:]:
        group.command(alias, hidden=True, help=f"Alias of `clirkit {names[0]}`.")(command)


for _name in SOURCES:
    _src = SOURCES.get(_name)
    config_command(prepare_app, _name, _src.config, _src.prepare, arguments=_src.arguments, help=_src.summary)

config_command(app, "distill", DistillConfig, "clirkit.distill:run_distill",
               help="Distil a foreign-language student from a frozen English teacher on bitext (OPTICAL, MSE).")
config_command(app, "index", IndexConfig, "clirkit.index:run_index",
               help="Encode a corpus and build a FAISS index (reused when model and corpus are unchanged).")
config_command(app, "eval", EvalConfig, "clirkit.evaluate:run_eval",
               help="Search a prepared dataset (or score XGLUE) and write ir_measures tables.",
               json_tables=("aggregate", "xglue_*"))
config_command(app, ("attack", "perturb"), AttackConfig, "clirkit.attack:run_attack",
               help="Perturb the queries (random or greedy) and report clean vs attacked retrieval quality.",
               json_tables=("robustness", "greedy_summary", "xglue_*_robustness"))
config_command(app, "fuse", FuseConfig, "clirkit.fuse:run_fuse", arguments=("runs",),
               help="Fuse the runs of eval experiments (RRF, CombSUM, CombMNZ) and score the fused run.")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    experiment: Annotated[Path, typer.Argument(help="an experiment file, e.g. experiments/demo.toml")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. seeds=[0,1,2]")] = None,
    launcher: Annotated[str | None, typer.Option(help=_help(LaunchOptions.model_fields["launcher"]),
                                                 show_default="local")] = None,
    jobs: Annotated[int | None, typer.Option(help=LaunchOptions.model_fields["jobs"].description)] = None,
) -> None:
    """Run a whole experiment grid (prepare, distill, eval, attack) and write one report."""
    from clirkit.experiment import load_experiment, run_experiment

    def go(_: Config) -> Path:
        given = {k: v for k, v in ctx.obj.items() if k != "seed"}  # an experiment's seeds are its own
        given.update({k: v for k, v in {"launcher": launcher, "jobs": jobs}.items() if v is not None})
        cfg = load_experiment(experiment, overrides or [], **given)
        return run_experiment(cfg, str(experiment))

    _call(go, Config())


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="a finished `clirkit run` experiment directory")],
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="A:B: compare system A with system B per query (repeatable; replaces the grid's "
                          "compare pairs)")] = None,
) -> None:
    """Rebuild an experiment's tables, plots and report.md from its runs, into a new directory."""
    from clirkit.experiment import ExperimentConfig, load_children
    from clirkit.report import build_report
    from clirkit.rundir import start_run

    def go(_: Config) -> Path:
        children, cfg = load_children(run)
        if compare:
            cfg = build(ExperimentConfig, "--compare", **{**cfg.model_dump(), "compare": _pairs(compare)})
        with start_run(ctx.obj["runs_dir"], "report", cfg, cfg.seed, uses_device=False) as new:  # no compute
            new.record(report_of=str(run))
            build_report(new.path, children, cfg)
        return new.path

    _call(go, Config())


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    """``A:B`` options as ``(A, B)`` pairs (each option may also hold comma-separated pairs)."""
    pairs = []
    for item in _items("compare", items):
        a, sep, b = item.partition(":")
        if not sep or not a or not b or ":" in b:
            raise ClirkitError(f"--compare {item!r} is not A:B",
                               fix="name two systems, e.g. --compare static-ot:zero-shot")
        pairs.append((a, b))
    return pairs


@app.command("reproduce")
def reproduce_cmd(
    run: Annotated[Path, typer.Argument(help="a completed experiment directory")],
    atol: Annotated[float, typer.Option(help="largest difference accepted per result (0: exact, as on CPU)")] = 0.0,
) -> None:
    """Re-run a run's configuration from scratch beside it; exit 0 if every result agrees, 1 if not."""
    from clirkit.reproduce import ReproduceConfig, run_reproduce

    verdict: list[bool] = []

    def go(cfg: ReproduceConfig) -> Path | None:
        result = run_reproduce(cfg)
        verdict.append(result.agree)
        return result.path  # None when an input changed: nothing ran, stdout stays empty

    _call(go, _config(ReproduceConfig, run=run, atol=atol))
    raise typer.Exit(0 if verdict[0] else 1)


@app.command("check-expected")
def check_expected_cmd(
    run: Annotated[Path, typer.Argument(help="a finished experiment directory")],
    expected: Annotated[Path, typer.Argument(help="pinned scores, e.g. experiments/expected/demo.json")],
    atol: Annotated[float | None, typer.Option(help="tolerance (default: the file's)")] = None,
    write: Annotated[bool, typer.Option("--write", help="pin RUN's scores into EXPECTED instead of checking")]
    = False,
) -> None:
    """Compare a run's results with pinned expected scores; exit 0 if every pinned row agrees, 1 if not."""
    from clirkit.expected import ExpectedConfig, run_check_expected

    verdict: list[bool] = []

    def go(cfg: ExpectedConfig) -> Path:
        verdict.append(run_check_expected(cfg))
        return cfg.expected if cfg.write else cfg.run

    _call(go, _config(ExpectedConfig, run=run, expected=expected, atol=atol, write=write))
    raise typer.Exit(0 if verdict[0] else 1)


from clirkit.runs import app as runs_app  # noqa: E402

app.add_typer(runs_app, name="runs")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="clirkit")


if __name__ == "__main__":
    sys.exit(main())
