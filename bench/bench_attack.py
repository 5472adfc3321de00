"""Cost of the greedy attack: model calls (candidate texts encoded) and wall time per query.

On a small sample of the Bible benchmark (Tagalog queries, English verses) with MiniLM, the
greedy char-swap attack of :mod:`clirkit.attack` runs query by query; the table reports the
model calls per query (TextAttack's "number of queries", Morris et al. 2020), the edits, and
the wall time per query relative to encoding one clean query, the unit a user pays per search.

To stay within a few minutes on a laptop CPU the corpus is the sampled queries' relevant
verses plus ``--docs`` random others (``--docs 0``: the whole corpus), indexed in a temporary
folder. MiniLM zero-shot rarely ranks a relevant English verse in the top 10 for a Tagalog
query, which leaves the attack nothing to do, so by default the queries are translated word
by word with a lexicon induced from the benchmark's bitext (the query-translation baseline),
and only queries with a relevant verse in the top ``--success-k`` are sampled (the others
would be "skipped" at zero cost).

Usage::

    .venv/bin/python bench/bench_attack.py                       # 10 queries, 500 distractors
    .venv/bin/python bench/bench_attack.py --queries 20 --max-queries 500 --translation none
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sub_collection(src: Path, dst: Path, n_queries: int, n_docs: int, seed: int) -> Path:
    """A BEIR folder with ``4 * n_queries`` sampled queries (candidates for the attack), their
    relevant documents and ``n_docs`` random other documents (all of them with ``n_docs=0``)."""
    from clirkit.data.formats import load_dataset

    ds = load_dataset(src)
    rng = random.Random(seed)
    qids = rng.sample(sorted(ds.qrels), min(len(ds.qrels), 4 * n_queries))
    rel = {d for q in qids for d in ds.qrels[q]}
    docs = [json.loads(line) for line in ds.corpus_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    others = [d for d in docs if d["_id"] not in rel]
    keep = rel | {d["_id"] for d in (others if n_docs <= 0 else rng.sample(others, min(n_docs, len(others))))}
    dst.mkdir(parents=True)
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs
                                              if d["_id"] in keep), encoding="utf-8")
    (dst / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": ds.queries[q], "lang": "tl"},
                                                          ensure_ascii=False) + "\n" for q in qids), encoding="utf-8")
    (dst / "qrels").mkdir()
    (dst / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q in qids for d, g in ds.qrels[q].items()), encoding="utf-8")
    if ds.bitext_path("train").is_file():
        (dst / "bitext").mkdir()
        (dst / "bitext" / "train.tsv").write_bytes(ds.bitext_path("train").read_bytes())
    (dst / "dataset.json").write_text(json.dumps({"name": f"{src.name}-bench", "ignore_identical_ids": False}),
                                      encoding="utf-8")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=None, help="prepared Bible folder (default: prepare en-tl)")
    ap.add_argument("--queries", type=int, default=10, help="queries attacked")
    ap.add_argument("--docs", type=int, default=500, help="random distractor verses (0: whole corpus)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--translation", default="lexicon", help="lexicon, or none (zero-shot MiniLM)")
    ap.add_argument("--perturb", default="char-swap")
    ap.add_argument("--max-edits", type=int, default=3)
    ap.add_argument("--max-queries", type=int, default=200)
    ap.add_argument("--success-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from clirkit.attack import System, eval_config, greedy_query
    from clirkit.config import AttackConfig
    from clirkit.data.formats import load_dataset, sha256_file
    from clirkit.index import build_index, index_key
    from clirkit.lexicon import translator_for
    from clirkit.models import load_pair
    from clirkit.perturb import parse_spec
    from clirkit.report import print_table
    from clirkit.retrieval.store import load_index

    with tempfile.TemporaryDirectory(prefix="bench-attack-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("CLIRKIT_CACHE", str(tmp / "cache"))
        src = args.dataset
        if src is None:
            from clirkit.data.bible import BibleConfig, prepare_bible

            src = prepare_bible(BibleConfig(pair="en-tl", out=tmp / "bible-en-tl"))
        ds = load_dataset(sub_collection(Path(src), tmp / "bench", args.queries, args.docs, args.seed))
        t0 = time.perf_counter()
        pair = load_pair("minilm")
        cfg = AttackConfig(model=["minilm"], dataset=ds.path, max_edits=args.max_edits,
                           max_queries=args.max_queries, success_k=args.success_k, seed=args.seed)
        out = tmp / "index"
        build_index(pair.doc, ds, out, "Flat", "dense", 64,
                    index_key(pair.doc.fingerprint, sha256_file(ds.corpus_path), "Flat", "dense"),
                    sha256_file(ds.corpus_path))
        setup = time.perf_counter() - t0
        t = None if args.translation == "none" else args.translation
        translate = translator_for(t, ds) if t else dict
        system = System("minilm" + (f"+{t}" if t else ""), "minilm", t, pair, eval_config(cfg, "minilm", ds.path, t),
                        translate, load_index(out))
        system.index = load_index(out)
        scorer = system.make_searcher(ignore_identical_ids=False, batch_size=None)
        spec = parse_spec(args.perturb)

        # unit cost: one clean query encoded alone (translated first, as the attack does), the
        # median over 10 queries; and, for comparison, the per-text cost of one batch of them
        texts = list(ds.queries.values())[:10]
        unit = []
        for text in texts:
            start = time.perf_counter()
            scorer.encode([text])
            unit.append(time.perf_counter() - start)
        clean_encode = statistics.median(unit)
        start = time.perf_counter()
        scorer.encode(texts * 5)
        batched = (time.perf_counter() - start) / (5 * len(texts))

        rows, skipped = [], 0
        for i, q in enumerate(ds.queries):
            if len(rows) == args.queries:
                break
            rel = np.array([scorer.row_of[d] for d, g in ds.qrels[q].items() if g > 0 and d in scorer.row_of])
            start = time.perf_counter()
            r = greedy_query(scorer, spec, q, ds.queries[q], rel, set(), cfg, random.Random(args.seed * 1000 + i))
            wall = time.perf_counter() - start
            if r.status == "skipped":
                skipped += 1
                continue
            rows.append({"query": q, "words": len(ds.queries[q].split()), "status": r.status, "stop": r.stop,
                         "edits": r.edits, "model_queries": r.model_queries, "wall_s": wall,
                         "rank": f"{r.rank_clean_est}->{r.rank_final_est}"})
        per = pd.DataFrame(rows)
        print_table(per, title=f"greedy {args.perturb} per query ({system.name}, {len(scorer.doc_ids)} docs)")
        if per.empty:
            print(f"no attackable query among {skipped} sampled (all skipped)")
            return
        summary = pd.DataFrame([{
            "system": system.name, "docs": len(scorer.doc_ids), "attacked": len(per), "skipped": skipped,
            "success_rate": float((per["status"] == "success").mean()),
            "mean_edits": float(per["edits"].mean()),
            "model_queries_mean": float(per["model_queries"].mean()),
            "model_queries_median": float(per["model_queries"].median()),
            "model_queries_max": int(per["model_queries"].max()),
            "wall_s_per_query": float(per["wall_s"].mean()),
            "threads": torch.get_num_threads(),
            "clean_encode_ms": 1000 * clean_encode,
            "batched_encode_ms": 1000 * batched,
            "wall_vs_clean_encode": float(per["wall_s"].mean() / clean_encode),
            "ms_per_model_query": float(1000 * per["wall_s"].sum() / max(1, per["model_queries"].sum())),
        }])
        print_table(summary, title=f"greedy attack cost (<= {args.max_edits} edits, <= {args.max_queries} "
                                   f"model queries; setup {setup:.0f} s)")


if __name__ == "__main__":
    main()
