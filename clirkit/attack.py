"""Random and adversarial query attacks on cross-lingual retrievers, and robustness tables.

Two searches, both over the perturbation families of :mod:`clirkit.perturb`:

- **random**: every query is perturbed by ``perturb_many`` for each perturbation spec, rate and
  seed, retrieved and scored exactly as ``clirkit eval`` does, and compared with the clean run
  (computed once). The robustness table reports, per system x perturbation x rate x measure,
  the clean and attacked means, the absolute and relative drop, a 95% t-interval of the drop
  over seeds, and a paired t-test of clean vs perturbed per query.
- **greedy**: a rank-aware, score-based black-box attack in the spirit of TextAttack's greedy
  search (Morris et al., "TextAttack: A Framework for Adversarial Attacks, Data Augmentation,
  and Adversarial Training in NLP", EMNLP 2020 demos), with the classification goal replaced
  by a ranking goal as in ranking attacks (Liu et al., "Order-Disorder: Imitation Adversarial
  Attacks for Black-box Neural Ranking Models", CCS 2022; Wu et al., "PRADA: Practical
  Black-box Adversarial Attacks against Neural Ranking Models", TOIS 2023). Per query it
  repeatedly applies the single edit (:func:`clirkit.perturb.edit_candidates`) that most
  lowers a margin between the relevant documents and their competitors, until no relevant
  document is left in the top ``success_k``, no edit helps, or a budget is spent.

Everything goes into one experiment directory (``start_run(..., "attack", ...)``)::

    queries/<spec>-rate<r>-seed<s>.jsonl   perturbed queries (BEIR records), random search
    queries/greedy.jsonl                   each query's edit trail, greedy search
    metrics/per_query.csv                  long: system, perturbation, rate, seed, query_id, measures
    metrics/robustness.csv + .md           clean vs attacked per system x perturbation x rate x measure
    metrics/greedy_summary.csv + .md       success rate, edits, model queries, rank change (greedy)
    plots/<measure>.png                    measure vs rate, one line per system (random)
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clirkit.config import AttackConfig, EvalConfig
from clirkit.data.formats import Dataset, load_dataset
from clirkit.errors import ClirkitError
from clirkit.evaluate import MAXSIM_EXHAUSTIVE_MAX_DOCS, RunDict, dense_search, parse_measures, retrieve, score_run
from clirkit.index import DenseIndex, ensure_index
from clirkit.models import EncoderPair, load_pair
from clirkit.perturb import PerturbSpec, edit_candidates, parse_spec, perturb_many
from clirkit.progress import progress
from clirkit.report import file_label, plot_robustness, print_table, write_robustness, write_table
from clirkit.rundir import Run, completed_runs, read_json, start_run
from clirkit.seeding import set_seed

log = logging.getLogger("clirkit")
Translate = Callable[[dict[str, str]], dict[str, str]]
#: non-relevant documents kept as competitors of a greedy query: at least this many, and 3 * k
GREEDY_POOL_MIN = 50
#: an edit must lower the objective by more than this to be accepted; scores are computed in
#: float64 so numerical noise is far below it, which makes "only improving edits" exact
GREEDY_TOL = 1e-9


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
        return list(dict.fromkeys(cfg.model)), cfg.dataset, None
    chosen = latest_distill_run(cfg.runs_dir)
    dataset = cfg.dataset if cfg.dataset is not None else dataset_of_run(chosen)
    return [str(chosen)], dataset, chosen


# --------------------------------------------------------------------------- systems


@dataclass
class System:
    """One retrieval system under attack: an encoder pair, its index, and an optional query
    translation applied to every (clean or perturbed) query before encoding."""

    name: str
    model: str
    translation: str | None
    pair: EncoderPair
    eval_cfg: EvalConfig
    translate: Translate
    index: DenseIndex | None = None


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
                      factory=cfg.factory, batch_size=cfg.batch_size, scoring=cfg.scoring, split=cfg.split,
                      top_k=cfg.top_k, measures=cfg.measures, maxsim_mode=cfg.maxsim_mode,
                      rerank_k=cfg.rerank_k, query_translation=translation)


def load_systems(cfg: AttackConfig, models: list[str], ds: Dataset) -> list[System]:
    """Every model x query translation (``none`` = untranslated), encoders loaded, no index yet."""
    translations = [None if t.strip().lower() in ("", "none") else t.strip()
                    for t in dict.fromkeys(cfg.query_translation or ["none"])]
    translators: dict[str, Translate] = {}
    systems = []
    for model in models:
        pair = load_pair(model, device=cfg.device)
        for t in translations:
            if t is not None and t not in translators:
                from clirkit.lexicon import translator_for

                translators[t] = translator_for(t, ds)
            name = _short(model) + (f"+{_translation_label(t)}" if t else "")
            systems.append(System(name, model, t, pair, eval_config(cfg, model, ds.path, t),
                                  translators[t] if t else dict))
    return systems


def attach_indexes(systems: list[System], ds: Dataset, cfg: AttackConfig, run: Run) -> None:
    """Index (or reuse by fingerprint) the corpus once per distinct document encoder."""
    by_fp: dict[str, DenseIndex] = {}
    for system in systems:
        doc = system.pair.doc
        if doc.fingerprint not in by_fp:
            where = run if not by_fp else _IndexSlot(run, len(by_fp))
            by_fp[doc.fingerprint] = ensure_index(doc, ds, where, cfg.factory, cfg.scoring, cfg.batch_size)
        system.index = by_fp[doc.fingerprint]


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


def spec_label(spec: PerturbSpec) -> str:
    """The spec without its rate (rates are their own column), a lexicon path by its file name."""
    params = {k: (Path(v).name if k == "lexicon" and isinstance(v, (str, Path)) else v)
              for k, v in spec.params.items() if k != "rate"}
    if not params:
        return spec.name
    return f"{spec.name}:" + ",".join(f"{k}={_fmt_param(v)}" for k, v in sorted(params.items()))


def _fmt_param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


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
    for spec in specs:
        rates = cfg.rates or [spec.with_defaults().params.get("rate", math.nan)]
        for rate in dict.fromkeys(rates):
            rated = PerturbSpec(spec.name, {**spec.params, "rate": rate}) if cfg.rates else spec
            for seed in range(cfg.seed, cfg.seed + cfg.seeds):
                texts = perturb_many(rated, originals, seed, ids=qids)
                out.append(Variant(spec_label(spec), rated, float(rate), seed, dict(zip(qids, texts))))
    return out


def parse_specs(cfg: AttackConfig) -> list[PerturbSpec]:
    """Parse and deduplicate the perturbation specs (unknown names list the known ones)."""
    if not cfg.perturb:
        raise ClirkitError("no perturbation given", fix="pass e.g. --perturb char-swap")
    specs = [parse_spec(s) for s in cfg.perturb]
    return list({str(s): s for s in specs}.values())


def write_queries(path: Path, texts: dict[str, str], ds: Dataset) -> None:
    """Perturbed queries as BEIR ``queries.jsonl`` records (usable as a dataset's queries)."""
    with open(path, "w", encoding="utf-8") as f:
        for q, t in texts.items():
            f.write(json.dumps({"_id": q, "text": t, "lang": ds.query_lang.get(q, "")}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- statistics


def robustness_rows(system: str, perturbation: str, rate: float, clean: pd.DataFrame,
                    attacked: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """Clean vs attacked for each measure column.

    ``drop = clean - attacked`` (positive: the attack hurts), ``rel_drop = drop / clean``. The
    95% interval of the drop is a t-interval over the per-seed drops (NaN with one seed). The
    p-value is a two-sided paired t-test over queries of the clean score against the query's
    perturbed score averaged over seeds; averaging first keeps the test's unit the query (seeds
    are not independent samples of queries), and the t-test agrees with the randomisation test
    on IR measures (Smucker, Allan & Carterette, CIKM 2007).

    Args:
        system: the system's name.
        perturbation: the spec label.
        rate: the perturbation rate.
        clean: per-query table of the clean run (index query_id, one column per measure).
        attacked: one such table per seed, same index.
    """
    from scipy import stats

    rows = []
    n = len(attacked)
    for m in clean.columns:
        c = clean[m]
        per_seed = np.array([a[m].reindex(c.index).mean() for a in attacked])
        drops = c.mean() - per_seed
        drop = float(drops.mean())
        if n >= 2:
            sd = float(drops.std(ddof=1))
            half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
            lo, hi = drop - half, drop + half
        else:
            lo = hi = math.nan
        pooled = pd.concat([a[m].reindex(c.index) for a in attacked], axis=1).mean(axis=1)
        if np.allclose(c.to_numpy(), pooled.to_numpy()):
            p = 1.0
        elif len(c) < 2:
            p = math.nan
        else:
            p = float(stats.ttest_rel(c.to_numpy(), pooled.to_numpy()).pvalue)
        clean_mean = float(c.mean())
        rows.append({"system": system, "perturbation": perturbation, "rate": rate, "measure": m,
                     "clean": clean_mean, "attacked": float(per_seed.mean()), "drop": drop,
                     "rel_drop": drop / clean_mean if clean_mean > 0 else math.nan,
                     "ci_low": lo, "ci_high": hi, "p_value": p, "seeds": n, "queries": len(c)})
    return rows


# --------------------------------------------------------------------------- random attack


def _retrieve_changed(system: System, texts: dict[str, str], clean_texts: dict[str, str],
                      clean_run: RunDict, ignore_ids: bool) -> RunDict:
    """Retrieve only the queries the perturbation changed; unchanged ones keep the clean result
    (identical by construction, and it spares the encoder most of the work at low rates)."""
    changed = {q: t for q, t in texts.items() if t != clean_texts[q]}
    assert system.index is not None
    fresh = retrieve(system.pair, system.index, system.translate(changed), system.eval_cfg, ignore_ids) \
        if changed else {}
    return {q: fresh.get(q, clean_run[q]) for q in texts}


def random_attack(systems: list[System], variants: list[Variant], ds: Dataset, qids: list[str],
                  measures: list, run: Run) -> pd.DataFrame:
    """Retrieve and score every variant for every system; write queries, tables and plots."""
    qrels = {q: ds.qrels[q] for q in qids}
    originals = {q: ds.queries[q] for q in qids}
    ignore = bool(ds.card.get("ignore_identical_ids"))
    qdir = run.sub("queries")
    for v in variants:
        write_queries(qdir / f"{v.stem}.jsonl", v.texts, ds)
    long_rows: list[pd.DataFrame] = []
    table_rows: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("attacking", total=len(systems) * (len(variants) + 1), info="")
        for system in systems:
            assert system.index is not None
            bar.update(task, info=f"{system.name}: clean")
            clean_run = retrieve(system.pair, system.index, system.translate(originals), system.eval_cfg, ignore)
            clean = score_run(qrels, clean_run, measures)
            long_rows.append(_long(clean, system.name, "none", 0.0, None))
            bar.advance(task)
            by_cell: dict[tuple[str, float], list[pd.DataFrame]] = {}
            for v in variants:
                bar.update(task, info=f"{system.name}: {v.stem}")
                result = _retrieve_changed(system, v.texts, originals, clean_run, ignore)
                pq = score_run(qrels, result, measures)
                by_cell.setdefault((v.label, v.rate), []).append(pq)
                long_rows.append(_long(pq, system.name, v.label, v.rate, v.seed))
                bar.advance(task)
            for (label, rate), frames in by_cell.items():
                table_rows.extend(robustness_rows(system.name, label, rate, clean, frames))
    metrics = run.sub("metrics")
    pd.concat(long_rows).to_csv(metrics / "per_query.csv", index=False)
    table = pd.DataFrame(table_rows)
    shown = write_robustness(table, metrics / "robustness")
    if not table["rate"].isna().all():
        plot_robustness(table.dropna(subset=["rate"]), run.sub("plots"))
    print_table(shown.drop(columns=["seeds", "queries"]),
                title=f"{ds.path.name}: random attack ({len(qids)} queries, {len({v.seed for v in variants})} seed(s))")
    return table


def _long(pq: pd.DataFrame, system: str, perturbation: str, rate: float, seed: int | None) -> pd.DataFrame:
    df = pq.reset_index()
    df.insert(0, "system", system)
    df.insert(1, "perturbation", perturbation)
    df.insert(2, "rate", rate)
    df.insert(3, "seed", pd.array([seed] * len(df), dtype="Int64"))
    return df


# --------------------------------------------------------------------------- greedy attack


class Scorer:
    """Query-document scores of one system for the greedy attack, in float64.

    Dense scoring is the inner product of normalised embeddings, as the FAISS index computes
    it. MaxSim scoring is computed directly (ColBERT, Khattab & Zaharia, SIGIR 2020) against
    the documents' stored token embeddings, so the attack optimises the system's real score
    rather than a dense surrogate. float64 makes rescoring the same document reproducible to
    far below :data:`GREEDY_TOL`, which is what the monotonicity guarantee rests on.
    """

    def __init__(self, system: System, ignore_ids: bool) -> None:
        assert system.index is not None
        self.system = system
        self.index = system.index
        self.cfg = system.eval_cfg
        self.maxsim = self.cfg.scoring == "maxsim"
        self.ignore_ids = ignore_ids
        self.row_of = {d: i for i, d in enumerate(self.index.doc_ids)}
        self._emb = self.index.embeddings
        self.search_encodes = 0

    def encode(self, texts: list[str]) -> list[Any]:
        """One batched forward pass over ``texts`` (translated first when the system does)."""
        translated = list(self.system.translate(dict(enumerate(texts))).values()) if self.system.translation \
            else texts
        enc = self.system.pair.query
        if self.maxsim:
            return [t.astype(np.float64) for t in enc.encode_tokens(translated, batch_size=max(1, len(texts)))]
        return list(enc.encode(translated, batch_size=max(1, len(texts))).astype(np.float64))

    def scores(self, reps: list[Any], rows: np.ndarray) -> np.ndarray:
        """``len(reps) x len(rows)`` scores."""
        if len(rows) == 0:
            return np.zeros((len(reps), 0))
        if not self.maxsim:
            docs = np.asarray(self._emb[np.sort(rows)], dtype=np.float64)
            order = np.argsort(np.argsort(rows))  # back from sorted (memmap-friendly) to given order
            return (np.stack(reps) @ docs.T)[:, order]
        toks = [np.asarray(self.index.doc_tokens(int(r)), dtype=np.float64) for r in rows]
        lengths = np.array([len(t) for t in toks])
        flat = np.concatenate(toks) if lengths.sum() else np.zeros((0, self.index.manifest["dim"]))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        out = np.full((len(reps), len(rows)), -np.inf)
        nonempty = lengths > 0
        for i, q in enumerate(reps):
            if len(q) and nonempty.any():
                sims = q @ flat.T
                out[i, nonempty] = np.maximum.reduceat(sims, starts[nonempty], axis=1).sum(axis=0)
        return out

    def top(self, text: str, rep: Any, n: int) -> np.ndarray:
        """Rows of the top ``n`` documents for one query, from the index (as ``retrieve`` does)."""
        n = min(n, len(self.index.doc_ids))
        if not self.maxsim:
            _, rows = self.index.faiss_index.search(np.asarray(rep, dtype=np.float32)[None], n)
            return rows[0][rows[0] >= 0]
        exhaustive = self.cfg.maxsim_mode == "exhaustive" or (
            self.cfg.maxsim_mode == "auto" and len(self.index.doc_ids) <= MAXSIM_EXHAUSTIVE_MAX_DOCS)
        if exhaustive:
            assert self.index.tokens is not None and self.index.token_offsets is not None
            from clirkit.evaluate import maxsim

            s = maxsim(rep.astype(np.float32), self.index.tokens_f32, self.index.token_offsets)
            return np.argsort(-s, kind="stable")[:n]
        # re-ranking mode: the dense candidates need the dense embedding (one extra encode)
        self.search_encodes += 1
        translated = self.system.translate({"q": text})["q"]
        emb = self.system.pair.query.encode([translated])
        cands = dense_search(self.index, emb, ["q"], max(n, self.cfg.rerank_k))["q"]
        rows = np.array([self.row_of[d] for d in cands], dtype=np.int64)
        s = self.scores([rep], rows)[0]
        return rows[np.argsort(-s, kind="stable")][:n]


@dataclass
class GreedyState:
    """Where a query stands: its objective, the estimated rank of its first relevant document,
    and the non-relevant competitors (rows, best first) the next edit is scored against."""

    objective: float
    rank: int
    pool: np.ndarray
    best_relevant: float
    reference: float


@dataclass
class GreedyResult:
    """One query's greedy attack: the final text, status, costs and the edit trail."""

    query_id: str
    original: str
    attacked: str
    status: str  # success | failed | skipped
    stop: str  # success | no-improvement | max-edits | max-queries | no-candidates | skipped
    edits: int
    model_queries: int
    objective_clean: float
    objective_final: float
    rank_clean_est: int
    rank_final_est: int
    trail: list[dict[str, Any]] = field(default_factory=list)


def _reference_index(n_pool: int, k: int, objective: str) -> int:
    # topk: the k-th best competitor; with fewer competitors than k (tiny corpora) the last one,
    # so the objective stays finite and still rewards pushing relevant documents down.
    return 0 if objective == "top1" else max(0, min(k, n_pool) - 1)


def greedy_state(scorer: Scorer, text: str, rep: Any, rel_rows: np.ndarray, exclude: set[int],
                 old_pool: np.ndarray, k: int, objective: str) -> GreedyState:
    """Re-search once and evaluate the objective of the current query.

    The competitor pool is the union of the previous pool and the fresh top documents,
    rescored, best ``max(GREEDY_POOL_MIN, 3k)`` kept. Because the union contains the pool the
    accepted edit was scored on, the k-th best competitor can only be at least as strong as
    estimated, so the true objective after an edit is never above the estimate that got it
    accepted: accepted edits strictly lower the objective even with an approximate index.
    """
    size = max(GREEDY_POOL_MIN, 3 * k)
    fresh = scorer.top(text, rep, size + len(rel_rows) + len(exclude))
    rel = set(rel_rows.tolist())
    pool = np.array(list(dict.fromkeys(int(r) for r in (*old_pool, *fresh) if r not in rel and r not in exclude)),
                    dtype=np.int64)
    s_pool = scorer.scores([rep], pool)[0]
    order = np.argsort(-s_pool, kind="stable")[:size]
    pool, s_pool = pool[order], s_pool[order]
    best_rel = float(scorer.scores([rep], rel_rows)[0].max())
    ref = float(s_pool[_reference_index(len(pool), k, objective)]) if len(pool) else -math.inf
    rank = 1 + int((s_pool > best_rel).sum())
    return GreedyState(best_rel - ref, rank, pool, best_rel, ref)


def greedy_query(scorer: Scorer, spec: PerturbSpec, qid: str, text: str, rel_rows: np.ndarray, exclude: set[int],
                 cfg: AttackConfig, rng: random.Random) -> GreedyResult:
    """Greedily attack one query.

    Each step scores every single edit of the current text (all words and positions of the
    spec's family) in one batched forward pass against the relevant documents and the current
    competitor pool, and accepts the edit with the lowest objective if it is strictly lower;
    then re-searches once (:func:`greedy_state`). When the remaining budget is smaller than the
    number of candidates a seeded random subset is scored (TextAttack's query budget).

    The objective is ``best relevant score - reference``, the reference being the k-th best
    non-relevant score (``topk``: negative exactly when every relevant document is pushed out of
    the top k, the goal of a rank-aware attack) or the best one (``top1``).
    """
    k = cfg.success_k
    rep = scorer.encode([text])[0]
    state = greedy_state(scorer, text, rep, rel_rows, exclude, np.zeros(0, np.int64), k, cfg.objective)
    clean_obj, clean_rank = state.objective, state.rank
    trail: list[dict[str, Any]] = []
    used = edits = 0
    if state.rank > k:
        return GreedyResult(qid, text, text, "skipped", "skipped", 0, 0, clean_obj, clean_obj, clean_rank,
                            clean_rank, trail)
    current = text
    stop = "max-edits"
    while edits < cfg.max_edits:
        remaining = cfg.max_queries - used
        if remaining <= 0:
            stop = "max-queries"
            break
        cands = edit_candidates(spec, current)
        if not cands:
            stop = "no-candidates"
            break
        if len(cands) > remaining:
            cands = [cands[i] for i in sorted(rng.sample(range(len(cands)), remaining))]
        reps = scorer.encode([c for c, _ in cands])
        used += len(cands)
        best_rel = scorer.scores(reps, rel_rows).max(axis=1)
        s_pool = scorer.scores(reps, state.pool)
        if s_pool.shape[1]:
            j = _reference_index(s_pool.shape[1], k, cfg.objective)
            ref = -np.partition(-s_pool, j, axis=1)[:, j]
        else:
            ref = np.full(len(reps), -math.inf)
        objs = best_rel - ref
        best = int(np.argmin(objs))  # ties: the first candidate, i.e. the earliest edit
        if not objs[best] < state.objective - GREEDY_TOL:
            stop = "no-improvement"
            break
        current, rep = cands[best][0], reps[best]
        state = greedy_state(scorer, current, rep, rel_rows, exclude, state.pool, k, cfg.objective)
        edits += 1
        trail.append({"edit": cands[best][1], "text": current, "objective": state.objective,
                      "estimated": float(objs[best]), "rank": state.rank, "candidates": len(cands)})
        if state.rank > k:
            stop = "success"
            break
    status = "success" if state.rank > k else "failed"
    return GreedyResult(qid, text, current, status, stop, edits, used, clean_obj, state.objective, clean_rank,
                        state.rank, trail)


def first_relevant_rank(run: RunDict, qrels: dict[str, dict[str, int]], depth: int) -> dict[str, int]:
    """Rank of the first relevant document per query in ``run`` (``depth + 1`` if not retrieved)."""
    out = {}
    for q, rels in qrels.items():
        ranked = sorted(run.get(q, {}).items(), key=lambda x: (-x[1], x[0]))
        out[q] = next((i for i, (d, _) in enumerate(ranked, 1) if rels.get(d, 0) > 0), depth + 1)
    return out


def greedy_attack(systems: list[System], spec: PerturbSpec, ds: Dataset, qids: list[str], measures: list,
                  cfg: AttackConfig, run: Run) -> pd.DataFrame:
    """Greedy-attack every query for every system; write the trail, summary and tables.

    The clean and attacked queries are finally retrieved and scored exactly as ``clirkit eval``
    does, so the measures (and the first relevant document's rank) are the system's, not the
    attack's internal estimate.
    """
    qrels = {q: ds.qrels[q] for q in qids}
    ignore = bool(ds.card.get("ignore_identical_ids"))
    label = f"greedy:{spec_label(spec)}"
    summary_rows, table_rows, long_rows = [], [], []
    with open(run.sub("queries") / "greedy.jsonl", "w", encoding="utf-8") as trail_file, progress() as bar:
        for system in systems:
            assert system.index is not None
            scorer = Scorer(system, ignore)
            results: list[GreedyResult] = []
            task = bar.add_task(f"greedy {system.name}", total=len(qids), info="")
            for i, q in enumerate(qids):
                rel_rows = np.array([scorer.row_of[d] for d, g in ds.qrels[q].items()
                                     if g > 0 and d in scorer.row_of], dtype=np.int64)
                exclude = {scorer.row_of[q]} if ignore and q in scorer.row_of else set()
                rng = set_seed(cfg.seed).child(i).py
                r = greedy_query(scorer, spec, q, ds.queries[q], rel_rows, exclude, cfg, rng)
                results.append(r)
                trail_file.write(json.dumps({"system": system.name, **r.__dict__}, ensure_ascii=False) + "\n")
                n_ok = sum(x.status == "success" for x in results)
                bar.update(task, advance=1, info=f"{n_ok} succeeded")
            originals = {r.query_id: r.original for r in results}
            attacked = {r.query_id: r.attacked for r in results}
            clean_run = retrieve(system.pair, system.index, system.translate(originals), system.eval_cfg, ignore)
            att_run = _retrieve_changed(system, attacked, originals, clean_run, ignore)
            clean_pq, att_pq = score_run(qrels, clean_run, measures), score_run(qrels, att_run, measures)
            long_rows += [_long(clean_pq, system.name, "none", 0.0, None),
                          _long(att_pq, system.name, label, math.nan, cfg.seed)]
            table_rows += robustness_rows(system.name, label, math.nan, clean_pq, [att_pq])
            r_clean = first_relevant_rank(clean_run, qrels, cfg.top_k)
            r_att = first_relevant_rank(att_run, qrels, cfg.top_k)
            summary_rows.append(greedy_summary(system.name, label, results, r_clean, r_att, clean_pq, att_pq,
                                               scorer.search_encodes))
    metrics = run.sub("metrics")
    pd.concat(long_rows).to_csv(metrics / "per_query.csv", index=False)
    summary = pd.DataFrame(summary_rows)
    write_table(summary, metrics / "greedy_summary")
    table = pd.DataFrame(table_rows)
    shown = write_robustness(table, metrics / "robustness")
    stats_cols = ["system", "queries", "skipped", "succeeded", "success_rate", "mean_edits", "mean_model_queries",
                  "mean_rank_change"]
    print_table(summary[stats_cols], title=f"{ds.path.name}: greedy {spec_label(spec)} (k={cfg.success_k}, "
                                           f"<= {cfg.max_edits} edits, <= {cfg.max_queries} model queries per query)")
    print_table(shown.drop(columns=["rate", "seeds", "drop 95% CI"]), title="clean vs attacked")
    return summary


def greedy_summary(system: str, label: str, results: list[GreedyResult], rank_clean: dict[str, int],
                   rank_attacked: dict[str, int], clean: pd.DataFrame, attacked: pd.DataFrame,
                   search_encodes: int = 0) -> dict[str, Any]:
    """TextAttack's attack summary reframed for ranking.

    ``skipped`` queries already have no relevant document in the top k before any edit (the
    system fails them unattacked); success rate, mean edits and mean model queries are over
    the other (``attacked``) queries, as TextAttack reports them. Ranks are those of the first
    relevant document in the system's own runs (``top_k + 1`` when not retrieved).
    """
    att = [r for r in results if r.status != "skipped"]
    ok = [r for r in att if r.status == "success"]
    ids = [r.query_id for r in att]
    rc = np.array([rank_clean[q] for q in ids], dtype=float)
    ra = np.array([rank_attacked[q] for q in ids], dtype=float)
    row: dict[str, Any] = {
        "system": system, "perturbation": label, "queries": len(results), "skipped": len(results) - len(att),
        "attacked": len(att), "succeeded": len(ok),
        "success_rate": len(ok) / len(att) if att else math.nan,
        "mean_edits": float(np.mean([r.edits for r in att])) if att else math.nan,
        "mean_model_queries": float(np.mean([r.model_queries for r in att])) if att else math.nan,
        "mean_rank_clean": float(rc.mean()) if att else math.nan,
        "mean_rank_attacked": float(ra.mean()) if att else math.nan,
        "mean_rank_change": float((ra - rc).mean()) if att else math.nan,
        "median_rank_change": float(np.median(ra - rc)) if att else math.nan,
    }
    for m in clean.columns:
        row[f"{m} clean"] = float(clean[m].mean())
        row[f"{m} attacked"] = float(attacked[m].reindex(clean.index).mean())
    if search_encodes:
        row["search_encodes"] = search_encodes
    return row


# --------------------------------------------------------------------------- command


def xglue_scores(task: str, data, encode, threshold: float | None) -> float:
    """The XGLUE headline of one file: official WPR nDCG, or QAM/QADSM accuracy at ``threshold``."""
    from clirkit.data.xglue import accuracy, score_wpr

    return score_wpr(data, encode)["nDCG_xglue"] if task == "wpr" else accuracy(data, encode, threshold)


def run_xglue_attack(cfg: AttackConfig) -> Path:
    """``clirkit attack --benchmark xglue``: perturb the XGLUE queries (WPR, QADSM) or questions
    (QAM) of every language and report the drop per language.

    The QAM/QADSM threshold stays the one fixed on the clean English dev set, as in
    :func:`clirkit.data.xglue.run_xglue`, so only the queries change.
    """
    from clirkit.data.xglue import TASKS, _require_labels, best_threshold, load_xglue, pair_scores, xglue_dir

    specs = parse_specs(cfg)
    task = cfg.task.lower()
    if task not in TASKS:
        raise ClirkitError(f"unknown XGLUE task {cfg.task!r}", fix=f"use one of: {', '.join(TASKS)}")
    data_dir = xglue_dir(cfg.data_dir)
    langs = cfg.langs or list(TASKS[task][1])
    files = {lang: load_xglue(task, lang, cfg.split, data_dir) for lang in langs}  # fails before any work
    en_dev = load_xglue(task, "en", "dev", data_dir) if task != "wpr" else None
    rated = [(spec_label(s), r, PerturbSpec(s.name, {**s.params, "rate": r}) if cfg.rates else s)
             for s in specs for r in (cfg.rates or [s.with_defaults().params.get("rate", math.nan)])]
    models = cfg.model or ["minilm"]
    with start_run(cfg.runs_dir, "attack", cfg, cfg.seed) as run:
        run.add_inputs(xglue=data_dir)
        rows = []
        for model in models:
            encoder = load_pair(model, device=cfg.device).query
            run.add_inputs(**{f"model_{model}": encoder.folder})

            def encode(texts: list[str], encoder=encoder) -> np.ndarray:
                return encoder.encode(texts, cfg.batch_size)

            threshold = None
            if en_dev is not None:
                threshold, _ = best_threshold(pair_scores(en_dev, encode), _require_labels(en_dev))
            for lang, data in files.items():
                clean = xglue_scores(task, data, encode, threshold)
                for label, rate, spec in rated:
                    attacked = [xglue_scores(task, data.with_group_queries(
                        perturb_many(spec, data.group_queries(), seed)), encode, threshold)
                        for seed in range(cfg.seed, cfg.seed + cfg.seeds)]
                    drops = clean - np.array(attacked)
                    half = (float(stats_t(len(drops)) * drops.std(ddof=1) / math.sqrt(len(drops)))
                            if len(drops) > 1 else math.nan)
                    rows.append({"system": model, "lang": lang, "perturbation": label, "rate": rate,
                                 "measure": "nDCG_xglue" if task == "wpr" else "accuracy", "clean": clean,
                                 "attacked": float(np.mean(attacked)), "drop": float(drops.mean()),
                                 "rel_drop": float(drops.mean() / clean) if clean > 0 else math.nan,
                                 "ci_low": float(drops.mean() - half), "ci_high": float(drops.mean() + half),
                                 "seeds": len(drops)})
        table = pd.DataFrame(rows)
        table.to_csv(run.sub("metrics") / f"xglue_{task}_robustness.csv", index=False)
        (run.path / "metrics" / f"xglue_{task}_robustness.md").write_text(
            table.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8")
        print_table(table.drop(columns=["ci_low", "ci_high"]), title=f"XGLUE {task.upper()} under attack")
    return run.path


def stats_t(n: int) -> float:
    """The two-sided 95% t quantile for ``n`` samples."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def run_attack(cfg: AttackConfig) -> Path:
    """``clirkit attack``: one experiment directory with perturbed queries and robustness tables.

    All user errors (unknown perturbation, bad rate, empty query, no distill run for a bare
    call, unknown measure) are raised before any model is loaded or directory created.
    """
    if cfg.benchmark == "xglue":
        return run_xglue_attack(cfg)
    measures = parse_measures(cfg.measures)
    specs = parse_specs(cfg)
    if cfg.search == "greedy" and len(specs) > 1:
        raise ClirkitError("the greedy attack takes one perturbation family", fix="pass one --perturb")
    models, dataset, chosen = resolve_target(cfg)
    if chosen is not None:  # config.json must name what ran, not "the newest distill run" of that day
        cfg = cfg.model_copy(update={"model": models, "dataset": dataset})
    ds = load_dataset(dataset, cfg.split)
    qids = attacked_query_ids(ds, cfg)
    variants = plan_variants(cfg, specs, ds, qids) if cfg.search == "random" else []
    if cfg.search == "greedy":
        edit_candidates(specs[0], ds.queries[qids[0]])  # a family without single edits fails here
    systems = load_systems(cfg, models, ds)
    with start_run(cfg.runs_dir, "attack", cfg, cfg.seed) as run:
        if chosen is not None:
            log.info("attacking the newest completed distill run %s on %s", chosen, ds.path)
        run.record(attacked_run=str(chosen) if chosen else None, dataset=str(ds.path),
                   systems=[{"name": s.name, **s.pair.describe(), "query_translation": s.translation}
                            for s in systems])
        run.add_inputs(dataset=ds.path, **{f"model_{i}": p for i, p in enumerate(
            dict.fromkeys(f for s in systems for f in (s.pair.query.folder, s.pair.doc.folder)))})
        attach_indexes(systems, ds, cfg, run)
        if cfg.search == "random":
            random_attack(systems, variants, ds, qids, measures, run)
        else:
            greedy_attack(systems, specs[0], ds, qids, measures, cfg, run)
    return run.path
