"""Wall time and peak memory of ``prepare_mmarco`` on a synthetic mMARCO-format collection.

Generates, in a temporary folder, the unicamp-dl layout with N passages (default 1,000,000,
~60 words each, like MS MARCO), 6,980 German dev queries and ~7,400 TREC-style qrels, then runs
the preparation (German queries -> English passages) in a subprocess and reports its wall time
and peak resident set size (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). The point is the
streaming claim: peak memory should stay flat as N grows, since only the judgements are held.

Usage::

    .venv/bin/python bench/bench_prepare_mmarco.py                  # 1M passages
    .venv/bin/python bench/bench_prepare_mmarco.py --passages 200000 --max-docs 50000 --fill random
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, write_section  # noqa: E402


def generate(root: Path, n_passages: int, n_queries: int, seed: int) -> int:
    """Write the synthetic release under ``root``; return the collection size in bytes."""
    rng = random.Random(seed)
    vocab = [f"w{i}{'abcdefgh'[i % 8]}" for i in range(20000)]
    coll = root / "data/google/collections/english_collection.tsv"
    qdir = root / "data/google/queries/dev"
    coll.parent.mkdir(parents=True)
    qdir.mkdir(parents=True)
    with open(coll, "w", encoding="utf-8", newline="\n") as f:
        for pid in range(n_passages):
            f.write(f"{pid}\t{' '.join(rng.choices(vocab, k=rng.randint(30, 90)))}\n")
    qids = rng.sample(range(1_000_000, 1_200_000), n_queries)
    with open(qdir / "german_queries.dev.small.tsv", "w", encoding="utf-8") as f:
        for q in qids:
            f.write(f"{q}\twas ist {' '.join(rng.choices(vocab, k=rng.randint(3, 8)))}\n")
    with open(root / "data/qrels.dev.small.tsv", "w", encoding="utf-8") as f:
        for q in qids:
            for pid in rng.sample(range(n_passages), 2 if rng.random() < 0.065 else 1):
                f.write(f"{q}\t0\t{pid}\t1\n")
    return coll.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=6980)
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--fill", choices=["first", "random"], default="first")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-mmarco-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        size = generate(tmp_path / "mmarco", args.passages, args.queries, args.seed)
        gen_s = time.perf_counter() - t0
        out = tmp_path / "prepared"
        code = (
            "from pathlib import Path\n"
            "from clirkit.data.mmarco import MMarcoConfig, prepare_mmarco\n"
            f"prepare_mmarco(MMarcoConfig(query_lang='de', doc_lang='en', data_dir=Path({str(tmp_path / 'mmarco')!r}),"
            f" out=Path({str(out)!r}), max_docs={args.max_docs!r}, fill={args.fill!r}, seed={args.seed}))\n"
        )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        wall = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        # the same interpreter + imports doing nothing, to separate the fixed cost from the data
        base = subprocess.run(
            [sys.executable, "-c", "import resource, clirkit.data.mmarco; "
                                   "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
            check=True, cwd=REPO, capture_output=True, text=True)
        base_kib = int(base.stdout.strip())
        card = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
        corpus_mb = (out / "corpus.jsonl").stat().st_size / 1e6

    lines = [
        f"passages={args.passages:,} queries={args.queries:,} max_docs={args.max_docs} fill={args.fill}",
        f"generated collection: {size / 1e6:.0f} MB in {gen_s:.1f} s",
        f"written: {card['counts']} (corpus.jsonl {corpus_mb:.0f} MB)",
        f"prepare wall time: {wall:.1f} s ({args.passages / wall:,.0f} passages/s)",
        f"prepare peak RSS: {peak_kib / 1024:.1f} MiB (import-only baseline {base_kib / 1024:.1f} MiB)",
    ]
    print("\n".join(lines))
    md = f"""`bench/bench_prepare_mmarco.py --passages {args.passages} --queries {args.queries}`: synthetic
unicamp-dl mMARCO layout ({size / 1e6:.0f} MB collection), German queries -> English passages, prepared in a
subprocess. Measured {machine()}; the machine was shared with other jobs.

| figure | value |
|---|---|
| prepare wall time | {wall:.1f} s ({args.passages / wall:,.0f} passages/s) |
| peak RSS / import-only baseline | {peak_kib / base_kib:.2f} ({peak_kib / 1024:.0f} MiB vs {base_kib / 1024:.0f} MiB) |
| written | {card['counts']['documents']:,} documents, {card['counts']['queries']:,} queries (corpus.jsonl \
{corpus_mb:.0f} MB) |

The peak-memory ratio is the streaming claim: it should stay near 1 as the collection grows, since
only the judgements are held in memory.
"""
    write_section("mMARCO prepare: 1M passages", md)

if __name__ == "__main__":
    main()
