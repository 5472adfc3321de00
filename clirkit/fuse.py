"""``clirkit fuse``: fuse the runs of finished eval (or fuse) experiments and score the result.

Each member is a completed experiment directory with a ``run.trec``; all must be over the
same dataset, split and query file (checked on the sha256 their manifests recorded). The
fused run is scored against that dataset's qrels like ``clirkit eval`` scores its run, and the
new directory records the members (ids and run.trec sha256), method, parameters, normalisation
and weights under ``fusion`` in its manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clirkit.config import FuseConfig
from clirkit.data.formats import load_dataset, sha256_file
from clirkit.errors import ClirkitError
from clirkit.evaluate import write_trec
from clirkit.measures import aggregate, parse_measures, score_run
from clirkit.report import print_table, write_table
from clirkit.retrieval.fusion import RunDict, check_fusion, cut, fuse_runs
from clirkit.rundir import read_json, run_status, start_run

MEMBER_COMMANDS = ("eval", "fuse")


@dataclass
class Member:
    """One run to fuse, as its experiment directory describes it."""

    path: Path
    id: str
    command: str
    dataset: Path
    split: str
    queries_sha256: str | None
    qrels_sha256: str | None
    run_sha256: str


def resolve_run(arg: Path, runs_dir: Path) -> Path:
    """A RUN argument as a directory: the path itself, else an id under ``runs_dir``."""
    for p in (arg, runs_dir / arg):
        if p.is_dir():
            return p
    raise ClirkitError("experiment directory not found", path=arg, fix=f"pass a run directory or an id in {runs_dir}")


def _recorded_sha(manifest: dict, dataset: Path, rel: str) -> str | None:
    """The sha256 the manifest recorded for ``<dataset>/<rel>``, if any."""
    want = (dataset / rel).resolve()
    for name, digest in manifest.get("inputs", {}).get("dataset", {}).items():
        if Path(name).resolve() == want:
            return digest
    return None


def load_member(path: Path) -> Member:
    """Read a member's config and manifest; it must be a completed eval or fuse run with a run.trec."""
    not_run = "is not a completed eval or fuse run with a run.trec"
    if run_status(path) != "completed" or not (path / "config.json").is_file():
        raise ClirkitError(not_run, path=path, fix="pass the directories `clirkit eval` printed")
    config, manifest = read_json(path / "config.json"), read_json(path / "manifest.json")
    command = config.get("command")
    source = config if command == "eval" else manifest  # a fuse run records the dataset it inherited
    if command not in MEMBER_COMMANDS or not (path / "run.trec").is_file() or not source.get("dataset"):
        raise ClirkitError(not_run, path=path, fix="pass the directories `clirkit eval` printed")
    dataset, split = Path(source["dataset"]), str(source.get("split", "test"))
    return Member(path=path, id=manifest.get("id", path.name), command=command, dataset=dataset, split=split,
                  queries_sha256=_recorded_sha(manifest, dataset, "queries.jsonl"),
                  qrels_sha256=_recorded_sha(manifest, dataset, f"qrels/{split}.tsv"),
                  run_sha256=sha256_file(path / "run.trec"))


def check_members(members: list[Member]) -> None:
    """All members over one dataset, split and query file; no run twice."""
    first = members[0]
    seen: set[Path] = set()
    for m in members:
        if m.path.resolve() in seen:
            raise ClirkitError("the same run is given twice", path=m.path, fix="fuse different runs")
        seen.add(m.path.resolve())
        if m.dataset.resolve() != first.dataset.resolve():
            raise ClirkitError(f"runs of different datasets: {first.id} is on {first.dataset}, "
                               f"{m.id} on {m.dataset}", fix="fuse runs of one dataset")
        if m.split != first.split:
            raise ClirkitError(f"runs of different splits: {first.id} is on {first.split!r}, {m.id} on {m.split!r}",
                               fix="fuse runs scored on one split")
        if m.queries_sha256 != first.queries_sha256 or m.qrels_sha256 != first.qrels_sha256:
            raise ClirkitError(f"runs of different query sets: {first.id} and {m.id} searched different "
                               f"queries.jsonl or qrels files of {m.dataset}", fix="re-run eval on the current dataset")


def read_run(path: Path) -> RunDict:
    """A TREC run file as ``{qid: {doc_id: score}}``, documents in the file's order (its ranks)."""
    import ir_measures

    run: RunDict = {}
    try:
        for sd in ir_measures.read_trec_run(str(path)):
            run.setdefault(sd.query_id, {})[sd.doc_id] = float(sd.score)
    except (ValueError, IndexError) as e:
        raise ClirkitError(f"malformed TREC run ({e})", path=path, fix="is this a clirkit run.trec?") from None
    return run


def fusion_label(cfg: FuseConfig) -> str:
    detail = f"k={cfg.rrf_k}" if cfg.method == "rrf" else cfg.norm
    weighted = f", weights={','.join(f'{w:g}' for w in cfg.weights)}" if cfg.weights else ""
    return f"{cfg.method}({detail}{weighted})"


def run_fuse(cfg: FuseConfig) -> Path:
    """``clirkit fuse``: one experiment directory with the fused run.trec and its metrics tables."""
    params = {"k": cfg.rrf_k} if cfg.method == "rrf" else {"norm": cfg.norm}
    check_fusion(len(cfg.runs), cfg.method, cfg.weights, params)  # all checks before any work
    measures = parse_measures(cfg.measures)
    members = [load_member(resolve_run(p, cfg.runs_dir)) for p in cfg.runs]
    check_members(members)
    ds = load_dataset(members[0].dataset, members[0].split)
    for name, digest in (("queries.jsonl", members[0].queries_sha256),
                         (f"qrels/{ds.split}.tsv", members[0].qrels_sha256)):
        if digest is not None and sha256_file(ds.path / name) != digest:
            raise ClirkitError("the dataset changed since the runs were made", path=ds.path / name,
                               fix="re-run eval on the current dataset")
    runs = [read_run(m.path / "run.trec") for m in members]
    for m, r in zip(members, runs):
        unknown = sorted(set(r) - set(ds.queries))
        if unknown:
            raise ClirkitError(f"run.trec has {len(unknown)} queries not in {ds.path} (e.g. {unknown[0]!r})",
                               path=m.path / "run.trec", fix="fuse runs of this dataset")
    with start_run(cfg.runs_dir, "fuse", cfg, cfg.seed) as run:
        run.add_inputs(dataset=ds.path, **{f"member_{i}": m.path / "run.trec" for i, m in enumerate(members)})
        run.record(dataset=str(ds.path), split=ds.split, fusion={
            "members": [{"id": m.id, "path": str(m.path), "command": m.command, "run_trec_sha256": m.run_sha256}
                        for m in members],
            "method": cfg.method, "params": params, "norm": cfg.norm, "weights": cfg.weights,
            "library": "ranx.fuse"})
        fused = cut(fuse_runs(runs, cfg.method, cfg.weights, params), cfg.top_k)
        write_trec(fused, run.path / "run.trec", f"clirkit-fuse-{cfg.method}")
        per_query = score_run(ds.qrels, fused, measures)
        metrics = run.sub("metrics")
        per_query.to_csv(metrics / "per_query.csv")
        agg = aggregate(per_query).to_frame().T
        agg.insert(0, "system", fusion_label(cfg))
        agg.insert(1, "members", " + ".join(m.id for m in members))
        agg.insert(2, "queries", len(per_query))
        write_table(agg, metrics / "aggregate")
        print_table(agg, title=f"{ds.path.name} ({ds.split}, {len(per_query)} queries), {fusion_label(cfg)}")
    return run.path
