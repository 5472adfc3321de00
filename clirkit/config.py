"""Typed configurations (pydantic, ``extra="forbid"``), TOML files and ``key=value`` overrides.

Every command builds one of these from its options; the experiment directory stores it fully
resolved (every default written out) in ``config.json``.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clirkit.errors import ClirkitError


class Config(BaseModel):
    """Base of every configuration: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults included, as JSON-compatible values."""
        return self.model_dump(mode="json")

    def subset(self, cls: type[Config]) -> dict[str, Any]:
        """This config's values of the fields ``cls`` defines, e.g. ``cfg.subset(RetrievalOptions)``
        to pass the shared retrieval options on to another command's config."""
        return {name: getattr(self, name) for name in cls.model_fields}


def build(cls: type[Config], _origin: str = "options", **values: Any) -> Config:
    """Validate ``values`` into ``cls``, turning pydantic's errors into one ClirkitError line.

    ``_origin`` names where the values came from (a TOML file, or the command's options).
    """
    try:
        return cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        path = _origin if _origin != "options" else None
        if not loc:  # a check across fields: its message names them and the fix
            more = len(e.errors()) - 1
            raise ClirkitError(f"invalid {_origin if path is None else 'configuration'}: {msg}", path=path,
                               fix=f"and {more} more problem(s)" if more else None) from None
        raise ClirkitError(f"invalid {loc}: {msg}", path=path,
                           fix=f"check {loc!r} ({len(e.errors())} problem(s) in {_origin})") from None


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, quoted strings, arrays); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (a copy is returned)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClirkitError(f"override {item!r} is not key=value", fix="write overrides as key=value, e.g. seed=1")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ClirkitError(f"override {item!r}: {p!r} is not a table", fix="check the key path")
        node[parts[-1]] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ClirkitError("config file not found", path=path, fix="check the path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ClirkitError(f"invalid TOML ({e})", path=path) from None


# --------------------------------------------------------------------------- command configs

Scoring = Literal["dense", "maxsim"]
MaxsimMode = Literal["auto", "exhaustive", "rerank", "token-ann"]
PrecisionName = Literal["fp32", "bf16", "fp16"]
DEFAULT_MEASURES = ["nDCG@10", "RR@10", "R@100", "AP"]
#: the dev measure (an ir_measures string) a distillation keeps its best checkpoint by; its column
#: in ``metrics/training.csv`` is ``dev_column(BEST_BY)``
BEST_BY = "RR@10"


def dev_column(name: str) -> str:
    """The column of a dev measure (or loss part) in a distillation's ``metrics/training.csv``."""
    return f"dev_{name}"


def _default_device() -> str:
    return os.environ.get("CLIRKIT_DEVICE", "auto")


class CommandConfig(Config):
    """Options every computing command shares (the CLI's global options, also accepted after the command)."""

    runs_dir: Path = Field(Path("experiments/runs"), description="where experiment directories are written")
    seed: int = Field(0, ge=0, description="random seed (0 is a seed)")
    device: str = Field(default_factory=_default_device, validate_default=True,
                        description="torch device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps "
                                    "(default $CLIRKIT_DEVICE, then auto)")
    precision: PrecisionName = Field("fp32", description="forward-pass precision: fp32, bf16 (CPU, or CUDA with "
                                                         "native bf16, capability 8.0+) or fp16 (CUDA; training "
                                                         "scales the loss)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        # auto is written out as the device it picked (config.json is fully resolved, and a run
        # asked for with auto is the same computation as one asked for by name); whether the
        # device exists is checked when a run starts (clirkit.device), so a config written on a
        # GPU machine still loads on a laptop for reports.
        from clirkit.device import auto_device, check_device_spec

        try:
            v = check_device_spec(v)
        except ClirkitError as e:
            raise ValueError(e.one_line()) from None
        return auto_device() if v == "auto" else v


class IndexOptions(Config):
    """How a corpus is encoded and indexed: shared by ``index``, ``eval`` and ``attack``."""

    scoring: Scoring = Field("dense", description="dense (one vector) or maxsim (late interaction over token "
                                                  "embeddings, which the index then stores too); ignored by "
                                                  "--model bm25, which is recorded as dense")
    factory: str = Field("Flat", description="FAISS index factory string (inner product on normalised vectors)")
    batch_size: int = Field(64, ge=1, description="encoding batch size")
    devices: list[str] | None = Field(None, description="encode in one worker process per device, e.g. "
                                                        "cuda:0,cuda:1, or cpu,cpu for two CPU workers (default: "
                                                        "one process on --device)")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str] | None) -> list[str] | None:
        # spelling only; whether each device exists is checked when a run starts (as for device)
        from clirkit.device import check_device_spec

        if not v:
            return None
        try:
            return [check_device_spec(d) for d in v]
        except ClirkitError as e:
            raise ValueError(e.one_line()) from None


FusionMethod = Literal["rrf", "combsum", "combmnz"]
FusionNorm = Literal["min-max", "max", "sum", "zmuv", "rank", "borda", "none"]


def check_fusion_weights(weights: list[float] | None) -> list[float] | None:
    """The field validator of a fusion's weights (their count is checked where the members are known)."""
    if weights is not None and (any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights)):
        raise ValueError(f"fusion weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


BM25_MODEL = "bm25"  # the model name of the lexical system (no encoder)
BM25Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]


class RetrievalOptions(IndexOptions):
    """How queries are searched and scored: shared by ``eval`` and ``attack`` (and experiment grids).

    The ``bm25_*`` fields apply to ``--model bm25`` only (the lexical system, :mod:`clirkit.retrieval.bm25`).
    """

    top_k: int = Field(1000, ge=1, description="documents retrieved per query")
    measures: list[str] = Field(default_factory=lambda: list(DEFAULT_MEASURES),
                                description="ir_measures strings (repeat the option, or separate by commas "
                                            "or spaces)")
    maxsim_mode: MaxsimMode = Field(
        "auto", description="maxsim over the whole corpus, re-ranking the dense top rerank_k, or over the "
                       "candidates of an approximate index of document tokens (token-ann) (auto: by size)")
    rerank_k: int = Field(100, ge=1, description="dense candidates re-ranked by maxsim")
    bm25_k1: float = Field(1.5, ge=0, description="--model bm25: term-frequency saturation k1")
    bm25_b: float = Field(0.75, ge=0, le=1, description="--model bm25: document-length normalisation b")
    bm25_method: BM25Method = Field("lucene", description="--model bm25: the BM25 variant (bm25s's names)")
    bm25_stem: bool = Field(True, description="--model bm25: Snowball stemming in the document language "
                                              "(when it has a stemmer)")
    bm25_stopwords: bool = Field(True, description="--model bm25: drop the document language's stopwords "
                                                   "(when bm25s has a list)")

    @model_validator(mode="before")
    @classmethod
    def _bm25_scoring(cls, data: Any) -> Any:
        # BM25 has one scoring: the value is normalised so that the same BM25 system asked for
        # under dense and maxsim is one configuration (one run, reused by grids)
        if isinstance(data, dict) and _names_bm25(data.get("model")) and data.get("scoring") == "maxsim":
            data = {**data, "scoring": "dense"}
        return data


def _names_bm25(model: Any) -> bool:
    """True when ``model`` (eval: a name; attack: a list of them) is only the lexical system."""
    models = model if isinstance(model, list) else [model]
    return bool(models) and all(m == BM25_MODEL for m in models)


class BenchmarkOptions(Config):
    """A benchmark scored from its own files instead of a prepared dataset: shared by ``eval`` and ``attack``."""

    benchmark: Literal["xglue"] | None = Field(None, description="xglue: use the benchmark's own files instead "
                                                                 "of a prepared dataset")
    task: str = Field("wpr", description="XGLUE task: wpr, qam or qadsm")
    langs: list[str] | None = Field(None, description="XGLUE languages (default: all of the task's)")
    data_dir: Path | None = Field(None, description="XGLUE folder (default $CLIRKIT_XGLUE_DIR, then data/xglue)")
    split: str = Field("test", description="qrels split (default test; with --benchmark xglue: dev, its "
                                           "labelled files)")

    @model_validator(mode="before")
    @classmethod
    def _benchmark_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("benchmark") == "xglue" and data.get("split") is None:
            data = {**data, "split": "dev"}
        return data


class IndexConfig(IndexOptions, CommandConfig):
    """``clirkit index``: encode a corpus and build a FAISS index."""

    model: str = Field("minilm", description="document encoder: path, hub id, distill run, or 'minilm'")
    dataset: Path = Field(..., description="prepared dataset folder")


class EvalConfig(RetrievalOptions, BenchmarkOptions, CommandConfig):
    """``clirkit eval``: search a prepared dataset and score the run with ir_measures."""

    dataset: Path | None = Field(None, description="prepared dataset folder (or use --benchmark)")
    model: str | None = Field(None, description="sets both encoders (a distill run: student + its teacher); "
                                                "default minilm unless --query-model/--doc-model are given")
    query_model: str | None = Field(None, description="query encoder (overrides --model)")
    doc_model: str | None = Field(None, description="document encoder (overrides --model)")
    query_translation: str | None = Field(None, description="lexicon[:PATH]: translate queries word by word first")

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(k) is None for k in ("model", "query_model", "doc_model")):
            data = {**data, "model": "minilm"}
        return data

    @model_validator(mode="after")
    def _bm25_has_no_encoders(self) -> EvalConfig:
        if self.model == BM25_MODEL and (self.query_model or self.doc_model):
            raise ValueError("--model bm25 is the lexical system: it takes no --query-model or --doc-model")
        return self


class DistillConfig(CommandConfig):
    """``clirkit distill``: train a student encoder for the foreign side from a frozen English teacher.

    ``teacher`` and ``side`` are read back by :func:`clirkit.models.load_pair` to pair the
    student with its teacher at evaluation time.
    """

    pair: str | None = Field(None, description="language pair <src>-<tgt>, e.g. en-tl (default: the bitext card's)")
    bitext: Path | None = Field(None, description="folder with bitext/train.tsv (default: the prepared one under "
                                                  "data/ whose dataset.json names the pair)")
    loss: str = Field("ot", description="distillation loss: a name in clirkit.losses.LOSSES (ot, mse, ot+mse, "
                                        "ot-divergence, ot-divergence+mse) or zero-shot (no training: the "
                                        "student is the teacher)")
    teacher: str = Field("minilm", description="frozen English teacher: path, hub id or 'minilm'")
    student: str = Field("static", description="copy (transformer initialised from the teacher), static (embedding "
                                               "table over a WordPiece vocabulary trained on the foreign side), "
                                               "transfer (the teacher's transformer reading a foreign WordPiece "
                                               "vocabulary, its embeddings initialised from the teacher's by "
                                               "bitext co-occurrence), or a model folder / hub id")
    side: Literal["query", "document"] = Field(
        "query", description="which encoder the student replaces: query (foreign queries, English documents) or "
                             "document (English queries, foreign documents)")
    project: bool = Field(False, description="add a learned linear projection when a MODEL student's dimension "
                                             "differs from the teacher's")
    vocab_size: int = Field(None, ge=100, description="static and transfer students: WordPiece vocabulary size, "
                                                      "special tokens included (default 16000 for static, 12000 "
                                                      "for transfer)")
    student_layers: int | None = Field(None, ge=1, description="transfer student: keep the teacher's first N "
                                                               "transformer layers (default: all)")
    transfer_top_n: int = Field(5, ge=1, description="transfer student: a new token's input embedding is the "
                                                     "Dice-weighted mean of its N most co-occurring teacher tokens")
    transfer_pairs: int | None = Field(None, ge=1, description="transfer student: training pairs its vocabulary and "
                                                               "initial embeddings are built from (default: all of "
                                                               "them; max_pairs limits the distillation only)")
    max_length: int = Field(128, ge=4, description="foreign side: maximum tokens per sentence (longer are truncated)")
    teacher_max_length: int | None = Field(None, ge=4, description="English side: maximum tokens (default: the "
                                                                   "teacher's own max_seq_length)")
    epochs: int = Field(3, ge=1, description="passes over the training bitext")
    batch_size: int = Field(64, ge=1, description="pairs per optimizer step (over all processes)")
    lr: float = Field(None, gt=0, description="peak learning rate (default 0.01 for static, 1e-4 for transfer (the "
                                              "issue's prototype, not tuned on test data), 2e-5 otherwise)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (transformer students; static uses Adam)")
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of the steps with a linear learning-rate warmup; "
                                                       "then linear decay to 0")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping (total L2 norm)")
    max_pairs: int | None = Field(None, ge=1, description="use only the first N training pairs")
    dev_pairs: int = Field(1000, ge=0, description="dev pairs used for evaluation and dev loss (0: no dev)")
    eval_every: int = Field(0, ge=0, description="evaluate on dev every N steps (0: at the end of each epoch)")
    save_every: int = Field(0, ge=0, description="save the resumable state in last/ every N steps (0: at each "
                                                 "evaluation)")
    log_every: int = Field(10, ge=1, description="write a row of metrics/training.csv every N steps")
    scoring: Scoring = Field("dense", description="dev retrieval: dense (one vector) or maxsim (token late "
                                                  "interaction, re-ranking the dense top dev_rerank_k)")
    dev_rerank_k: int = Field(100, ge=1, description="dense candidates re-ranked by maxsim on dev")
    cost: Literal["cosine", "sqeuclidean"] = Field("cosine", description="OT cost between token embeddings")
    token_weights: Literal["uniform", "idf"] = Field("uniform", description="OT marginals over tokens (special and "
                                                                          "padding tokens always weigh 0)")
    # OT parameters left None take the loss's own defaults (clirkit.losses.OTLoss, one source of
    # truth); the resolved values are written to manifest.json under loss.params.
    cost_scale: str | float | None = Field(None, description="OT cost divisor: auto, none, dim or a positive "
                                                             "number (default: the loss's)")
    eps_scale: str | None = Field(None, description="unit of eps: cost, median or spread (default: the loss's)")
    eps: float | None = Field(None, gt=0, description="Sinkhorn entropic regularisation, in eps_scale units "
                                                      "(default: the loss's)")
    iters: int | None = Field(None, ge=1, description="Sinkhorn iterations (default: the loss's)")
    anneal_from: float | None = Field(None, gt=0, description="first eps of the eps-scaling schedule "
                                                              "(default: the loss's)")
    anneal_iters: int | None = Field(None, ge=0, description="Sinkhorn iterations spent annealing eps "
                                                             "(default: the loss's)")
    blur: float | None = Field(None, gt=0, description="ot-divergence: blur scale eps^(1/p) of geomloss' Sinkhorn "
                                                       "divergence (default: the loss's)")
    scaling: float | None = Field(None, gt=0, lt=1, description="ot-divergence: ratio of successive blur values in "
                                                                "the eps-scaling descent (default: the loss's)")
    ot_grad_plan: bool = Field(False, description="backpropagate through the Sinkhorn iterations (default: the "
                                                  "plan is a constant, the envelope-theorem gradient)")
    ot_weight: float | None = Field(None, ge=0, description="weight of the OT term in ot+mse (default: the loss's)")
    mse_weight: float | None = Field(None, ge=0, description="weight of the MSE term in ot+mse (default: the "
                                                             "loss's)")
    teacher_batch_size: int = Field(64, ge=1, description="batch size for encoding the English side with the teacher")
    augment: str | None = Field(None, description="perturb the foreign side of the training bitext on the fly, "
                                                  "e.g. char-swap:rate=0.1 (robust distillation)")
    resume: Path | None = Field(None, description="continue a stopped distill run from its last/ state (a new run "
                                                  "directory records resumed_from)")

    @field_validator("cost_scale")
    @classmethod
    def _cost_scale(cls, v: str | float | None) -> str | float | None:
        # "0.5" from the command line is the number 0.5; words are checked by the loss itself.
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    @model_validator(mode="before")
    @classmethod
    def _student_defaults(cls, data: Any) -> Any:
        # The right step size differs by 500x between an embedding table and a pretrained
        # transformer, so the default depends on the student (and is written out resolved). The
        # transfer student's new input embeddings are only initialised, so it takes a larger step;
        # its defaults (lr 1e-4, 12000 tokens) are those of the vocabulary-transfer prototype of
        # issue 11, not chosen on test data.
        if not isinstance(data, dict):
            return data
        student = data.get("student", "static")
        if data.get("lr") is None:
            data = {**data, "lr": {"static": 0.01, "transfer": 1e-4}.get(student, 2e-5)}
        if data.get("vocab_size") is None:
            data = {**data, "vocab_size": 12000 if student == "transfer" else 16000}
        return data

    @model_validator(mode="after")
    def _transfer_options(self) -> DistillConfig:
        if self.student_layers is not None and self.student != "transfer":
            raise ValueError(f"student_layers applies to the transfer student, not {self.student!r}")
        if self.transfer_pairs is not None and self.student != "transfer":
            raise ValueError(f"transfer_pairs applies to the transfer student, not {self.student!r}")
        return self


class AttackConfig(RetrievalOptions, BenchmarkOptions, CommandConfig):
    """``clirkit attack``: perturb the queries (randomly or greedily) and measure the retrieval loss.

    Several ``model`` and ``query_translation`` values give one system per combination, so one
    experiment directory compares them under the same perturbed queries.
    """

    model: list[str] = Field(default_factory=list, description="encoders to attack (folder, hub id, distill run or "
                                                              "'minilm'); empty: the newest completed distill run")
    dataset: Path | None = Field(None, description="prepared dataset folder (default: the distill run's dataset)")
    perturb: list[str] = Field(default_factory=lambda: ["char-swap"],
                               description="perturbation specs such as char-swap or word-drop:rate=0.1")
    rates: list[float] = Field(default_factory=list, description="rates overriding every spec's rate (random search)")
    seeds: int = Field(3, ge=1, description="perturbation seeds per spec and rate: seed, seed+1, ...")
    search: Literal["random", "greedy"] = Field("random", description="random perturbations, or the greedy "
                                                                       "rank-aware black-box attack")
    max_edits: int = Field(3, ge=1, description="greedy: most edits accepted per query")
    max_queries: int = Field(200, ge=1, description="greedy: most candidate texts encoded per query")
    success_k: int = Field(10, ge=1, description="greedy: success when no relevant document is left in the top k")
    objective: Literal["topk", "top1"] = Field(
        "topk", description="greedy: best relevant score minus the k-th (topk) or the best (top1) non-relevant score")
    sample: int | None = Field(None, ge=1, description="attack a seeded sample of this many judged queries")
    query_translation: list[str] = Field(
        default_factory=list, description="none, lexicon or lexicon:PATH per system (translate queries first); "
                                          "every model is attacked with every one, except with --fuse")
    fuse: FusionMethod | None = Field(
        None, description="attack one fused system instead: model i with query_translation i (one value: all) "
                          "searched with the same perturbed query and fused by this method (random search only)")
    fuse_weights: list[float] | None = Field(None, description="--fuse: one weight per model, in order")
    fuse_rrf_k: int = Field(60, ge=0, description="--fuse rrf: the k in 1/(k + rank)")
    fuse_norm: FusionNorm | None = Field(None, description="--fuse combsum/combmnz: ranx score normalisation "
                                                           "(default min-max)")

    _fuse_weights = field_validator("fuse_weights")(check_fusion_weights)

    @model_validator(mode="after")
    def _fused_systems(self) -> AttackConfig:
        if self.fuse is None:
            for name in ("fuse_weights", "fuse_norm"):
                if getattr(self, name) is not None:
                    raise ValueError(f"--{name.replace('_', '-')} applies to a fused system: add --fuse rrf, "
                                     f"combsum or combmnz, or drop it")
            return self
        if self.search == "greedy":
            raise ValueError("--fuse attacks with random search only: a rank fusion scores no document outside "
                             "its members' rankings, which the greedy search needs")
        if len(self.model) < 2:
            raise ValueError("--fuse needs two or more --model values (the members)")
        if len(self.query_translation) not in (0, 1, len(self.model)):
            raise ValueError(f"--fuse pairs query_translation with model: give one value, or one per model "
                             f"({len(self.model)}), not {len(self.query_translation)}")
        if self.fuse_weights is not None and len(self.fuse_weights) != len(self.model):
            raise ValueError(f"--fuse-weights has {len(self.fuse_weights)} values for {len(self.model)} --model "
                             f"values; give one weight per model, in order")
        if self.fuse == "rrf" and self.fuse_norm not in (None, "none"):
            raise ValueError(f"fuse_norm {self.fuse_norm} does not apply to rrf (it fuses ranks, not scores)")
        return self

    @field_validator("rates")
    @classmethod
    def _rates_in_unit_interval(cls, rates: list[float]) -> list[float]:
        for r in rates:
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"rate {r} is outside [0, 1]")
        return rates


class FuseConfig(CommandConfig):
    """``clirkit fuse``: fuse the run.trec of eval (or fuse) runs with ranx and score the result."""

    runs: list[Path] = Field(..., description="experiment directories (paths, or ids under --runs-dir) of completed "
                                              "eval or fuse runs over the same dataset and split")
    method: FusionMethod = Field("rrf", description="fusion method")
    weights: list[float] | None = Field(None, description="one weight per run, in order (weighted fusion)")
    rrf_k: int = Field(60, ge=0, description="RRF: the k in 1/(k + rank)")
    norm: FusionNorm | None = Field(
        None, description="combsum/combmnz: ranx score normalisation of each run (default min-max; rrf: none)")
    top_k: int = Field(1000, ge=1, description="documents kept per query in the fused run")
    measures: list[str] = Field(default_factory=lambda: list(DEFAULT_MEASURES), description="ir_measures strings")

    _weights = field_validator("weights")(check_fusion_weights)

    @model_validator(mode="before")
    @classmethod
    def _default_norm(cls, data: Any) -> Any:
        # RRF reads ranks only, so a normalisation would be silently ignored: refuse it
        if isinstance(data, dict):
            method, norm = data.get("method", "rrf"), data.get("norm")
            if method == "rrf" and norm not in (None, "none"):
                raise ValueError(f"--norm {norm} does not apply to rrf (it fuses ranks, not scores)")
            if norm is None:
                data = {**data, "norm": "none" if method == "rrf" else "min-max"}
        return data
