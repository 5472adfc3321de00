"""Exhaustive MaxSim on the real Bible index: the former per-query implementation (one float32
product against every document token, ``np.maximum.reduceat`` per document) against
:func:`clirkit.retrieval.maxsim.maxsim_top` (a bfloat16 pass with rigorous error bounds, then
float32 MaxSim of the documents that can still reach the top ``k``), in the same run.

Data: the en-tl Bible (``prepare bible --pair en-tl``: 7,957 English verses, Tagalog queries),
indexed with ``--scoring maxsim`` by the bundled teacher ``minilm``; the queries' token vectors
come from the same model's ``encode_tokens`` (special tokens dropped, as the index stores them).
Without ``--index`` both are built in a temporary directory (about 10 minutes on 2 cores).

Reported per thread count and ``k``: CPU and wall seconds per query of both, their ratio, the
share of documents never scored in float32 (pruned), and whether the returned documents and
scores equal the old implementation's top ``k`` (:func:`same_top`: up to float32 rounding; the
order of verses whose scores tie to 1e-6, such as repeated verses, may differ).

Usage::

    .venv/bin/python bench/bench_maxsim.py --index RUN/index --dataset DATA --write
    .venv/bin/python bench/bench_maxsim.py --queries 32 --threads 1 --k 10 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def old_maxsim(q_tokens, d_tokens, offsets):
    """clirkit 0.x's per-query MaxSim (one product against every token, reduceat per document)."""
    import numpy as np

    sims = q_tokens.astype(np.float32) @ d_tokens.T
    lengths = np.diff(offsets)
    out = np.full(len(lengths), -np.inf, dtype=np.float32)
    nonempty = lengths > 0
    out[nonempty] = np.maximum.reduceat(sims, offsets[:-1][nonempty], axis=1).sum(axis=0)
    return out


def same_top(old, rows, scores, k, tol=1e-5) -> bool:
    """Whether ``rows``/``scores`` are the top ``k`` of the old full scores ``old``, up to float32
    rounding: every document clearly above the k-th score is returned, none clearly below, and
    the scores at each rank agree (documents tied to 1e-5, e.g. repeated verses, may swap)."""
    import numpy as np

    for o, r, s in zip(old, rows, scores):
        kth = np.sort(o)[::-1][min(k, len(o)) - 1]
        must = set(np.flatnonzero(o > kth + tol).tolist())
        if not must <= set(r.tolist()) or (o[r] < kth - tol).any():
            return False
        if np.abs(np.sort(o)[::-1][:len(r)] - s).max() > 10 * tol:
            return False
    return True


def build(tmp: Path) -> tuple[Path, Path]:
    """Prepare the en-tl Bible and index it with minilm (maxsim) under ``tmp``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    data = tmp / "data" / "bible-en-tl"
    py = [sys.executable, "-m", "clirkit"]
    subprocess.run([*py, "prepare", "bible", "--pair", "en-tl", "--out", str(data)], check=True, env=env)
    subprocess.run([*py, "--runs-dir", str(tmp / "runs"), "index", "--model", "minilm", "--dataset", str(data),
                    "--scoring", "maxsim"], check=True, env=env)
    return next((tmp / "runs").glob("*/index")), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, help="an index built with --scoring maxsim (default: build one)")
    ap.add_argument("--dataset", type=Path, help="the dataset of --index (its queries are encoded)")
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--write", action="store_true", help="rewrite the MaxSim section of bench/results.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.index is None:
            args.index, args.dataset = build(Path(tmp))
        run(args)


def run(args) -> None:
    import numpy as np
    import pandas as pd
    import torch
    from threadpoolctl import threadpool_limits

    from clirkit.models import load_encoder
    from clirkit.retrieval.base import top_rows
    from clirkit.retrieval.maxsim import maxsim_top, packed_tokens
    from clirkit.retrieval.store import load_index
    from clirkit.tables import print_table

    index = load_index(args.index)
    lines = (args.dataset / "queries.jsonl").read_text(encoding="utf-8").splitlines()[:args.queries]
    queries = load_encoder("minilm").encode_tokens([json.loads(x)["text"] for x in lines])
    tokens32 = np.asarray(index.tokens, dtype=np.float32)
    offsets = index.token_offsets
    start = time.perf_counter()
    packed = packed_tokens(index)
    packed.low()
    setup = time.perf_counter() - start
    q_len = np.array([len(q) for q in queries])
    d_len = np.diff(offsets)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            c, w = time.process_time(), time.perf_counter()
            old = np.stack([old_maxsim(q, tokens32, offsets) for q in queries])
            old_cpu, old_wall = (time.process_time() - c) / len(queries), (time.perf_counter() - w) / len(queries)
            for k in args.k:
                c, w = time.process_time(), time.perf_counter()
                got, scores, scored = maxsim_top(queries, packed, k)
                cpu, wall = (time.process_time() - c) / len(queries), (time.perf_counter() - w) / len(queries)
                want, want_scores = top_rows(old, k)
                rows.append({
                    "threads": threads, "k": k, "old s/query (cpu)": old_cpu, "new s/query (cpu)": cpu,
                    "speed-up (cpu)": old_cpu / cpu, "old s/query (wall)": old_wall, "new s/query (wall)": wall,
                    "speed-up (wall)": old_wall / wall, "pruned": 1 - scored.mean() / len(d_len),
                    "identical order": bool(np.array_equal(got, want)),
                    "same top k": same_top(old, got, scores, k),
                    "max score diff": float(np.abs(scores - want_scores).max()),
                })
    table = pd.DataFrame(rows)
    title = (f"exhaustive MaxSim, {len(queries)} en-tl queries ({q_len.mean():.1f} tokens, {q_len.min()}-"
             f"{q_len.max()}) x {len(d_len)} verses ({offsets[-1]} tokens, {d_len.mean():.1f} per verse), "
             f"{tokens32.shape[1]}-d; bf16 copy built in {setup:.1f} s")
    print_table(table, title=title)
    if args.write:
        from _results import machine, write_section

        md = table.to_markdown(index=False, floatfmt=".3g")
        cmd = "python bench/bench_maxsim.py --index RUN/index --dataset DATA --write"
        write_section("MaxSim", f"{title}. Measured {machine()} (wall times are shared; CPU times are this "
                      f"process's).\n\nCommand: `{cmd}`\n\n{md}\n")


if __name__ == "__main__":
    main()
