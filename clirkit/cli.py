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
from clirkit.data import SOURCES  # noqa: E402
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
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 speaks
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


for _name in SOURCES:
    _src = SOURCES.get(_name)
    config_command(prepare_app, _name, _src.config, _src.prepare, arguments=_src.arguments, help=_src.summary)


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


# --------------------------------------------------------------------------- attack


def _split_commas(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def attack_cmd(
    ctx: typer.Context,
    perturb: Annotated[list[str] | None, typer.Option(
        help="perturbation spec, e.g. char-swap or word-drop:rate=0.1 (repeatable; default char-swap)")] = None,
    model: Annotated[list[str] | None, typer.Option(
        help="encoder to attack (repeatable): folder, hub id, distill run, 'minilm'; "
             "default: the newest completed distill run")] = None,
    dataset: Annotated[Path | None, typer.Option(help="prepared dataset (default: the distill run's)")] = None,
    benchmark: Annotated[str | None, typer.Option(help="xglue: perturb the XGLUE queries instead")] = None,
    task: Annotated[str, typer.Option(help="XGLUE task: wpr, qam or qadsm")] = "wpr",
    lang: Annotated[str | None, typer.Option(help="XGLUE languages, comma separated (default: all)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="XGLUE folder (default $CLIRKIT_XGLUE_DIR, data/xglue)")]
    = None,
    rate: Annotated[str | None, typer.Option(help="rates in [0,1], comma separated, overriding each spec's")]
    = None,
    seeds: Annotated[int, typer.Option(help="perturbation seeds per spec and rate (--seed, --seed+1, ...)")] = 3,
    search: Annotated[str, typer.Option(help="random, or greedy (rank-aware black-box attack)")] = "random",
    max_edits: Annotated[int, typer.Option(help="greedy: most edits per query")] = 3,
    max_queries: Annotated[int, typer.Option(help="greedy: most candidate texts encoded per query")] = 200,
    success_k: Annotated[int, typer.Option(help="greedy: success when no relevant document is in the top k")] = 10,
    objective: Annotated[str, typer.Option(
        help="greedy: best relevant minus the k-th (topk) or best (top1) non-relevant score")] = "topk",
    sample: Annotated[int | None, typer.Option(help="attack a seeded sample of N judged queries")] = None,
    query_translation: Annotated[list[str] | None, typer.Option(
        help="none, lexicon or lexicon:PATH (repeatable: one system per model and value)")] = None,
    measures: Annotated[str, typer.Option(help="ir_measures strings, space or comma separated")]
    = "nDCG@10 RR@10 R@100 AP",
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    scoring: ScoringOpt = "dense",
    factory: FactoryOpt = "Flat",
    batch_size: BatchOpt = 64,
) -> None:
    """Perturb the queries (random or greedy) and report clean vs attacked retrieval quality."""
    from clirkit.attack import run_attack
    from clirkit.config import AttackConfig

    if benchmark == "xglue" and split == "test":
        split = "dev"  # XGLUE's labelled files are the dev sets
    _call(run_attack, _config(AttackConfig, ctx, perturb=perturb or ["char-swap"], model=_split_commas(model),
                              dataset=dataset, benchmark=benchmark, task=task, data_dir=data_dir,
                              langs=lang.replace(" ", "").split(",") if lang else None,
                              rates=_split_commas([rate] if rate else None), seeds=seeds,
                              search=search, max_edits=max_edits, max_queries=max_queries, success_k=success_k,
                              objective=objective, sample=sample,
                              query_translation=_split_commas(query_translation),
                              measures=measures.replace(",", " ").split(), top_k=top_k, split=split,
                              scoring=scoring, factory=factory, batch_size=batch_size))


app.command("attack")(attack_cmd)
app.command("perturb", hidden=True, help="Alias of `clirkit attack`.")(attack_cmd)


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    experiment: Annotated[Path, typer.Argument(help="an experiment file, e.g. experiments/demo.toml")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. seeds=[0,1,2]")] = None,
) -> None:
    """Run a whole experiment grid (prepare, distill, eval, attack) and write one report."""
    from clirkit.experiment import load_experiment, run_experiment

    def go(_: Config) -> Path:
        cfg = load_experiment(experiment, overrides or [], runs_dir=ctx.obj["runs_dir"])
        return run_experiment(cfg, str(experiment))

    _call(go, Config())


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="a finished `clirkit run` experiment directory")],
) -> None:
    """Rebuild an experiment's tables, plots and report.md from its runs, into a new directory."""
    from clirkit.experiment import load_children
    from clirkit.report import build_report
    from clirkit.rundir import start_run

    def go(_: Config) -> Path:
        children, cfg = load_children(run)
        with start_run(ctx.obj["runs_dir"], "report", cfg, cfg.seed) as new:
            new.record(report_of=str(run))
            build_report(new.path, children, cfg)
        return new.path

    _call(go, Config())


# --------------------------------------------------------------------------- distill


@app.command("distill")
def distill_cmd(
    ctx: typer.Context,
    pair: Annotated[str | None, typer.Option(help="language pair, e.g. en-tl (finds the prepared bitext under data/)")]
    = None,
    bitext: Annotated[Path | None, typer.Option(help="prepared folder with bitext/train.tsv (default: by --pair)")]
    = None,
    loss: Annotated[str, typer.Option(help="ot, mse, ot+mse, or zero-shot (the teacher itself, no training)")] = "ot",
    teacher: Annotated[str, typer.Option(help="frozen English teacher: folder, hub id or 'minilm'")] = "minilm",
    student: Annotated[str, typer.Option(help="static, copy (the teacher's transformer), or a model folder / hub id")]
    = "static",
    side: Annotated[str, typer.Option(help="query: foreign queries; document: foreign documents")] = "query",
    project: Annotated[bool, typer.Option(help="learn a linear projection when a model student's width differs")]
    = False,
    epochs: Annotated[int, typer.Option(help="passes over the training bitext")] = 3,
    batch_size: Annotated[int, typer.Option(help="pairs per optimizer step (over all processes)")] = 64,
    lr: Annotated[float | None, typer.Option(help="peak learning rate (default 0.01 static, 2e-5 otherwise)")]
    = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (transformer students)")] = 0.01,
    warmup: Annotated[float, typer.Option(help="fraction of steps with linear warmup (then linear decay)")] = 0.1,
    max_grad_norm: Annotated[float, typer.Option(help="gradient clipping (total L2 norm)")] = 1.0,
    max_pairs: Annotated[int | None, typer.Option(help="use only the first N training pairs")] = None,
    dev_pairs: Annotated[int, typer.Option(help="dev pairs for dev loss and retrieval (0: none)")] = 1000,
    eval_every: Annotated[int, typer.Option(help="evaluate on dev every N steps (0: each epoch's end)")] = 0,
    save_every: Annotated[int, typer.Option(help="save the resumable state every N steps (0: at each evaluation)")]
    = 0,
    log_every: Annotated[int, typer.Option(help="a metrics/training.csv row every N steps")] = 10,
    scoring: ScoringOpt = "dense",
    vocab_size: Annotated[int, typer.Option(help="static student: WordPiece vocabulary size")] = 16000,
    max_length: Annotated[int, typer.Option(help="foreign side: maximum tokens per sentence")] = 128,
    cost: Annotated[str, typer.Option(help="OT cost between token embeddings: cosine or sqeuclidean")] = "cosine",
    cost_scale: Annotated[str | None, typer.Option(help="OT cost divisor: auto, none, dim or a number "
                                                        "[default: the loss's]")] = None,
    token_weights: Annotated[str, typer.Option(help="OT token weights: uniform or idf")] = "uniform",
    eps_scale: Annotated[str | None, typer.Option(help="unit of eps: cost, median or spread (default: the loss's)")]
    = None,
    eps: Annotated[float | None, typer.Option(help="Sinkhorn entropic regularisation (default: the loss's)")] = None,
    iters: Annotated[int | None, typer.Option(help="Sinkhorn iterations (default: the loss's)")] = None,
    anneal_from: Annotated[float | None, typer.Option(
        help="first eps of the eps-scaling schedule (default: the loss's)")] = None,
    anneal_iters: Annotated[int | None, typer.Option(
        help="Sinkhorn iterations spent annealing eps (default: the loss's)")] = None,
    ot_grad_plan: Annotated[bool, typer.Option(help="backpropagate through the Sinkhorn iterations")] = False,
    ot_weight: Annotated[float | None, typer.Option(help="ot+mse: weight of the OT term (default 1)")] = None,
    mse_weight: Annotated[float | None, typer.Option(
        help="ot+mse: weight of the MSE term (default 1; MSE is per dimension: D/2, e.g. 192 for a 384-d "
             "teacher, puts it in the units of the cosine OT cost)")] = None,
    augment: Annotated[str | None, typer.Option(
        help="perturb the foreign training side on the fly, e.g. char-swap:rate=0.1 (robust distillation)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue a stopped distill run (into a new run directory)")]
    = None,
) -> None:
    """Distil a foreign-language student from a frozen English teacher on bitext (OPTICAL, MSE)."""
    from clirkit.config import DistillConfig
    from clirkit.distill import run_distill

    _call(run_distill, _config(DistillConfig, ctx, pair=pair, bitext=bitext, loss=loss, teacher=teacher,
                               student=student, side=side, project=project, epochs=epochs, batch_size=batch_size,
                               lr=lr, weight_decay=weight_decay, warmup=warmup, max_grad_norm=max_grad_norm,
                               max_pairs=max_pairs, dev_pairs=dev_pairs, eval_every=eval_every,
                               save_every=save_every, log_every=log_every, scoring=scoring, vocab_size=vocab_size,
                               max_length=max_length, cost=cost, cost_scale=cost_scale,
                               token_weights=token_weights, eps_scale=eps_scale, eps=eps, iters=iters,
                               anneal_from=anneal_from, anneal_iters=anneal_iters, ot_grad_plan=ot_grad_plan,
                               ot_weight=ot_weight, mse_weight=mse_weight, augment=augment,
                               resume=resume))


@app.command("reproduce")
def reproduce_cmd(
    run: Annotated[Path, typer.Argument(help="a completed experiment directory")],
    atol: Annotated[float, typer.Option(help="largest difference accepted per result (0: exact, as on CPU)")] = 0.0,
) -> None:
    """Re-run a run's configuration from scratch beside it; exit 0 if every result agrees, 1 if not."""
    from clirkit.reproduce import ReproduceConfig, run_reproduce

    verdict: list[bool] = []

    def go(cfg: ReproduceConfig) -> Path:
        result = run_reproduce(cfg)
        verdict.append(result.agree)
        return result.path or cfg.run  # nothing ran when an input changed

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
