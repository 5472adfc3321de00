"""What both attack searches share: the target (models, dataset), the systems under attack and
their searchers, the attacked queries and their perturbed variants, and the robustness statistics."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clirkit.config import AttackConfig, EvalConfig, RetrievalOptions
from clirkit.data.formats import Dataset
from clirkit.errors import ClirkitError
from clirkit.evaluate import is_bm25, searcher_for
from clirkit.index import ensure_index
from clirkit.models import EncoderPair, load_pair
from clirkit.perturb import PerturbSpec, parse_spec, perturb_many, spec_identity, spec_labels
from clirkit.retrieval import RunDict, Searcher, Translated, retrieve
from clirkit.retrieval.store import DenseIndex
from clirkit.rundir import Run, completed_runs, read_json
from clirkit.seeding import set_seed
from clirkit.tables import file_label

Translate = Callable[[dict[str, str]], dict[str, str]]

# --------------------------------------------------------------------------- target


def latest_distill_run(runs_dir: Path) -> Path:
    """The newest completed ``distill`` experiment directory in ``runs_dir``.

    Raises:
        ClirkitError: there is none.
    """
    runs = completed_runs(runs_dir, "distill")
    if not runs:
        raise ClirkitError(f"no completed distillation run in {runs_dir} to attack",
                           fix="run `clirkit distill ...` first, or pass --model and --dataset")
    return runs[-1]


def _collection(path: Path) -> Path | None:
    """``path`` or the nearest ancestor (up to 3 levels) that is a prepared test collection."""
    for p in (path, *list(path.parents)[:3]):
        if (p / "dataset.json").is_file() and (p / "qrels").is_dir() and (p / "queries.jsonl").is_file():
            return p
    return None


def _path_values(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` of every string value in a nested config, in document order."""
    if isinstance(data, dict):
        return [kv for k, v in data.items() for kv in _path_values(v, f"{prefix}{k}.")]
    if isinstance(data, str):
        return [(prefix.rstrip("."), data)]
    return []


def dataset_of_run(run: Path) -> Path:
    """The test collection a distillation run was trained for.

    A distill run records the bitext it trained on (``bitext``: a prepared dataset folder
    holding ``bitext/train.tsv``, or the table itself; its manifest has ``bitext.folder`` even
    when the config left ``bitext`` to be found by ``pair``) and may record a ``dataset``; the
    first path under a key ``eval_dataset``, ``test_dataset``, ``dataset``, ``bitext`` or
    ``data`` (in ``config.json``, then ``manifest.json``) that is, or sits inside, a folder
    with a card, queries and qrels wins.
    Prepared Bible folders hold both the bitext and the test collection, so training on one
    names its test collection.

    Raises:
        ClirkitError: no recorded path is a test collection.
    """
    order = ("eval_dataset", "test_dataset", "dataset", "bitext", "data")
    seen = []
    for name in ("config.json", "manifest.json"):
        if not (run / name).is_file():
            continue
        values = _path_values(read_json(run / name))
        for key in order:
            for dotted, value in values:
                if key not in dotted.split("."):  # config "bitext", manifest "bitext.folder"
                    continue
                seen.append(dotted)
                found = _collection(Path(value))
                if found is not None:
                    return found
    raise ClirkitError(f"the distill run {run.name} records no test collection "
                       f"({', '.join(seen) or 'no dataset or bitext path'})",
                       path=run, fix="pass --dataset DIR (a prepared folder with queries and qrels)")


def resolve_target(cfg: AttackConfig) -> tuple[list[str], Path, Path | None]:
    """``(models, dataset, distill run or None)``: bare ``clirkit attack`` takes the newest
    completed distill run in ``runs_dir`` and the test collection it recorded."""
    if cfg.model:
        if cfg.dataset is None:
            raise ClirkitError("--model given without --dataset", fix="pass --dataset DIR")
        # a fusion pairs model i with query_translation i, so a model may be a member twice
        return list(dict.fromkeys(cfg.model)) if cfg.fuse is None else list(cfg.model), cfg.dataset, None
    chosen = latest_distill_run(cfg.runs_dir)
    dataset = cfg.dataset if cfg.dataset is not None else dataset_of_run(chosen)
    return [str(chosen)], dataset, chosen


# --------------------------------------------------------------------------- systems


@dataclass
class System:
    """One retrieval system under attack: an encoder pair (None for ``bm25``), its index, an
    optional query translation applied to every (clean or perturbed) query before encoding, and
    its searcher (set by :func:`attach_indexes`). A fused system has ``members`` instead and
    searches each of them with the same (perturbed) text (:func:`fused_system`)."""

    name: str
    model: str
    translation: str | None
    pair: EncoderPair | None
    eval_cfg: EvalConfig
    translate: Translate
    index: DenseIndex | None = None
    searcher: Searcher | None = None
    ds: Dataset | None = None
    run: Run | None = None
    members: list[System] | None = None
    fusion: dict[str, Any] | None = None

    def make_searcher(self, ignore_identical_ids: bool, batch_size: int | None = -1) -> Searcher:
        """The system's searcher as ``clirkit eval`` builds it (``batch_size=None``: one batch per call)."""
        if self.members is not None:
            from clirkit.retrieval.fusion import FusionSearcher

            assert self.fusion is not None
            return FusionSearcher([m.make_searcher(ignore_identical_ids, batch_size) for m in self.members],
                                  **self.fusion)
        assert self.index is not None or self.pair is None
        inner = searcher_for(self.pair, self.index, self.eval_cfg, ignore_identical_ids, batch_size, self.name,
                             self.ds, self.run)
        return Translated(inner, self.translate, _translation_label(self.translation)) if self.translation else inner

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the system."""
        if self.members is not None:
            return {"name": self.name, "fusion": self.fusion, "members": [m.describe() for m in self.members]}
        models = self.pair.describe() if self.pair is not None else {"system": self.model}
        return {"name": self.name, **models, "query_translation": self.translation}


class _IndexSlot:
    """A stand-in for :class:`Run` so a second document encoder's index goes to
    ``indexes/<i>/index`` instead of clobbering ``index/`` (ensure_index always uses
    ``run.path / "index"``, and hard-links files, so overwriting would corrupt the source run)."""

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i
        self.runs_dir = run.runs_dir
        self.path = run.path / "indexes" / str(i)

    def record(self, **fields: Any) -> None:
        self.run.record(**{f"{k}_{self.i}": v for k, v in fields.items()})


def _short(spec: str) -> str:
    p = Path(spec)
    return p.name if p.exists() and p.name else spec


def _translation_label(spec: str) -> str:
    kind, sep, path = spec.partition(":")
    return f"{kind}:{Path(path).name}" if sep and path else spec


def eval_config(cfg: AttackConfig, model: str, dataset: Path, translation: str | None) -> EvalConfig:
    """The ``clirkit eval`` configuration one system of the attack retrieves with."""
    return EvalConfig(runs_dir=cfg.runs_dir, seed=cfg.seed, device=cfg.device, model=model, dataset=dataset,
                      split=cfg.split, query_translation=translation, **cfg.subset(RetrievalOptions))


def _translation(spec: str) -> str | None:
    return None if spec.strip().lower() in ("", "none") else spec.strip()


def load_systems(cfg: AttackConfig, models: list[str], ds: Dataset) -> list[System]:
    """Every model x query translation (``none`` = untranslated), encoders loaded, no index yet;
    with ``fuse``, model i with query translation i (one translation: the same for all)."""
    if cfg.fuse is None:
        translations = [_translation(t) for t in dict.fromkeys(cfg.query_translation or ["none"])]
        combos = [(m, t) for m in models for t in translations]
    else:
        given = cfg.query_translation or ["none"]
        combos = list(zip(models, [_translation(t) for t in (given * len(models) if len(given) == 1 else given)]))
    translators: dict[str, Translate] = {}
    pairs: dict[str, EncoderPair | None] = {}
    systems = []
    for model, t in combos:
        if model not in pairs:
            pairs[model] = None if is_bm25(model) else load_pair(model, device=cfg.device, precision=cfg.precision,
                                                                 devices=cfg.devices)
        if t is not None and t not in translators:
            from clirkit.lexicon import translator_for

            translators[t] = translator_for(t, ds)
        name = _short(model) + (f"+{_translation_label(t)}" if t else "")
        systems.append(System(name, model, t, pairs[model], eval_config(cfg, model, ds.path, t),
                              translators[t] if t else dict))
    return systems


def fused_system(cfg: AttackConfig, members: list[System]) -> System:
    """The one system ``--fuse`` attacks: its members' searchers fused (:class:`FusionSearcher`)."""
    params = {"k": cfg.fuse_rrf_k} if cfg.fuse == "rrf" else {"norm": cfg.fuse_norm or "min-max"}
    fusion = {"method": cfg.fuse, "weights": cfg.fuse_weights, "params": params}
    name = f"{cfg.fuse}({', '.join(m.name for m in members)})"
    return System(name, name, None, None, members[0].eval_cfg, dict, members=members, fusion=fusion)


def attach_indexes(systems: list[System], ds: Dataset, cfg: AttackConfig, run: Run) -> None:
    """Index (or reuse by fingerprint) the corpus once per distinct document encoder, and build
    each system's searcher."""
    by_fp: dict[str, DenseIndex] = {}
    for system in systems:
        system.ds, system.run = ds, run
        if system.pair is None:  # bm25 builds (or reuses) its own index in <run>/bm25
            system.searcher = system.make_searcher(bool(ds.card.get("ignore_identical_ids")))
            continue
        doc = system.pair.doc
        if doc.fingerprint not in by_fp:
            where = run if not by_fp else _IndexSlot(run, len(by_fp))
            by_fp[doc.fingerprint] = ensure_index(doc, ds, where, cfg.factory, cfg.scoring, cfg.batch_size)
        system.index = by_fp[doc.fingerprint]
        system.searcher = system.make_searcher(bool(ds.card.get("ignore_identical_ids")))


# --------------------------------------------------------------------------- queries


def attacked_query_ids(ds: Dataset, cfg: AttackConfig) -> list[str]:
    """Judged queries (a grade > 0) in dataset order, a seeded sample of them with ``sample``.

    Raises:
        ClirkitError: a judged query is empty (it cannot be perturbed), or none is judged.
    """
    judged = [q for q in ds.queries if any(g > 0 for g in ds.qrels.get(q, {}).values())]
    if not judged:
        raise ClirkitError("the qrels judge no document relevant", path=ds.path, fix="check the dataset's qrels")
    for q in judged:
        if not ds.queries[q].strip():
            raise ClirkitError(f"query {q!r} is empty; it cannot be perturbed", path=ds.path / "queries.jsonl",
                               fix="give it text or remove it from the queries file")
    if cfg.sample is not None and cfg.sample < len(judged):
        # sorted positions keep dataset order, so a sample is a prefix-stable subset per seed
        keep = sorted(set_seed(cfg.seed).py.sample(range(len(judged)), cfg.sample))
        judged = [judged[i] for i in keep]
    return judged


@dataclass
class Variant:
    """One perturbed copy of the queries: a spec at a rate under a seed."""

    label: str
    spec: PerturbSpec
    rate: float
    seed: int
    texts: dict[str, str]

    @property
    def stem(self) -> str:
        return f"{file_label(self.label)}-rate{self.rate:g}-seed{self.seed}"


def plan_variants(cfg: AttackConfig, specs: list[PerturbSpec], ds: Dataset, qids: list[str]) -> list[Variant]:
    """Perturb the queries for every spec x rate x seed (cheap; done before any model work so
    bad input fails fast). ``cfg.rates`` overrides each spec's own rate."""
    originals = [ds.queries[q] for q in qids]
    out = []
    for spec, label in zip(specs, spec_labels(specs)):
        rates = cfg.rates or [spec.with_defaults().params.get("rate", math.nan)]
        for rate in dict.fromkeys(rates):
            rated = PerturbSpec(spec.name, {**spec.params, "rate": rate}) if cfg.rates else spec
            for seed in range(cfg.seed, cfg.seed + cfg.seeds):
                texts = perturb_many(rated, originals, seed, ids=qids)
                out.append(Variant(label, rated, float(rate), seed, dict(zip(qids, texts))))
    return out


def parse_specs(cfg: AttackConfig) -> list[PerturbSpec]:
    """Parse and deduplicate the perturbation specs (unknown names list the known ones): specs that
    perturb alike (one lexicon file named two ways; with ``rates``, specs differing only by rate)
    are one."""
    if not cfg.perturb:
        raise ClirkitError("no perturbation given", fix="pass e.g. --perturb char-swap")
    specs = [parse_spec(s) for s in cfg.perturb]
    rate = (lambda s: None) if cfg.rates else (lambda s: s.with_defaults().params.get("rate"))
    return list({(spec_identity(s), rate(s)): s for s in specs}.values())


def write_queries(path: Path, texts: dict[str, str], ds: Dataset) -> None:
    """Perturbed queries as BEIR ``queries.jsonl`` records (usable as a dataset's queries)."""
    with open(path, "w", encoding="utf-8") as f:
        for q, t in texts.items():
            f.write(json.dumps({"_id": q, "text": t, "lang": ds.query_lang.get(q, "")}, ensure_ascii=False) + "\n")


def _retrieve_changed(system: System, texts: dict[str, str], clean_texts: dict[str, str],
                      clean_run: RunDict, ignore_ids: bool) -> RunDict:
    """Retrieve only the queries the perturbation changed; unchanged ones keep the clean result
    (identical by construction, and it spares the encoder most of the work at low rates)."""
    changed = {q: t for q, t in texts.items() if t != clean_texts[q]}
    assert system.searcher is not None
    fresh = retrieve(system.searcher, changed, system.eval_cfg.top_k, ignore_ids) if changed else {}
    return {q: fresh.get(q, clean_run[q]) for q in texts}


def _long(pq: pd.DataFrame, system: str, perturbation: str, rate: float, seed: int | None) -> pd.DataFrame:
    df = pq.reset_index()
    df.insert(0, "system", system)
    df.insert(1, "perturbation", perturbation)
    df.insert(2, "rate", rate)
    df.insert(3, "seed", pd.array([seed] * len(df), dtype="Int64"))
    return df


