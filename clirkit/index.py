"""Encode a corpus into a memory-mapped float32 matrix and a FAISS index, reused by fingerprint.

``<run>/index/`` holds ``doc_ids.txt``, ``embeddings.npy`` (written incrementally through a
memory map, so a corpus never has to fit in memory twice), ``index.faiss`` and
``manifest.json``. With ``scoring="maxsim"`` it also holds the documents' token embeddings
(``tokens.npy`` float16, ``token_offsets.npy``) for late interaction (ColBERT, Khattab &
Zaharia, SIGIR 2020).

An index is identified by a key over the model fingerprint (sha256 of its weights), the
corpus sha256, the factory string and the scoring; any completed run holding an index with
the same key is reused (hard-linked) instead of recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from clirkit.config import IndexConfig
from clirkit.data.formats import Dataset, file_digest, load_dataset
from clirkit.errors import ClirkitError
from clirkit.models import Encoder, load_encoder
from clirkit.progress import progress
from clirkit.retrieval.store import DenseIndex, load_index
from clirkit.rundir import Run, find_stored, freeze_tree, link_tree, start_run, write_json

log = logging.getLogger("clirkit")
FORMAT_VERSION = 1


def index_key(model_fp: str, corpus_sha: str, factory: str, scoring: str) -> str:
    blob = json.dumps([FORMAT_VERSION, model_fp, corpus_sha, factory, scoring == "maxsim"])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _count_docs(ds: Dataset) -> int:
    with open(ds.corpus_path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _batches(ds: Dataset, size: int):
    batch: list[tuple[str, str]] = []
    for doc_id, text, _ in ds.iter_corpus():
        batch.append((doc_id, text))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_index(encoder: Encoder, ds: Dataset, out: Path, factory: str, scoring: str, batch_size: int,
                key: str, corpus_sha: str) -> Path:
    """Encode ``ds``'s corpus into ``out`` and build the FAISS index."""
    import faiss

    n = _count_docs(ds)
    if n == 0:
        raise ClirkitError("the corpus is empty", path=ds.corpus_path, fix="prepare a dataset with documents")
    out.mkdir(parents=True, exist_ok=True)
    emb = np.lib.format.open_memmap(out / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, encoder.dim))
    token_chunks: list[np.ndarray] = []
    lengths: list[int] = []
    row = 0
    with open(out / "doc_ids.txt", "w", encoding="utf-8") as ids_file, progress() as bar:
        task = bar.add_task(f"encoding {ds.path.name}", total=n, info="")
        # chunks of many batches so sentence-transformers' length sorting cuts padding
        for batch in _batches(ds, batch_size * 32):
            texts = [t for _, t in batch]
            if scoring == "maxsim":
                emb[row:row + len(batch)], tokens = encoder.encode_both(texts, batch_size=batch_size)
                token_chunks.extend(t.astype(np.float16) for t in tokens)
                lengths.extend(len(t) for t in tokens)
            else:
                emb[row:row + len(batch)] = encoder.encode(texts, batch_size=batch_size)
            ids_file.write("".join(f"{d}\n" for d, _ in batch))
            row += len(batch)
            bar.update(task, advance=len(batch))
    emb.flush()
    try:
        index = faiss.index_factory(encoder.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ClirkitError(f"invalid FAISS factory string {factory!r} ({str(e).splitlines()[0][:120]})",
                           fix="use e.g. Flat, HNSW32, IVF256,Flat, IVF256,PQ32") from None
    if not index.is_trained:
        sample = emb[np.linspace(0, n - 1, min(n, 100_000)).astype(int)]
        index.train(np.ascontiguousarray(sample))
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(emb[start:start + 65536]))
    faiss.write_index(index, str(out / "index.faiss"))
    if scoring == "maxsim":
        np.save(out / "tokens.npy", np.concatenate(token_chunks) if token_chunks else
                np.zeros((0, encoder.dim), np.float16))
        np.save(out / "token_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    write_json(out / "manifest.json", {
        "key": key, "model": encoder.name, "model_fingerprint": encoder.fingerprint,
        "dataset": str(ds.path), "corpus_sha256": corpus_sha, "factory": factory, "scoring": scoring,
        "dim": encoder.dim, "count": n, "normalized": True, "format": FORMAT_VERSION,
    })
    return out


def ensure_index(encoder: Encoder, ds: Dataset, run: Run, factory: str, scoring: str, batch_size: int
                 ) -> DenseIndex:
    """The index for (encoder, corpus, factory, scoring) in ``run``: hard-linked from an earlier
    completed run when one has the same key, built otherwise."""
    corpus_sha = file_digest(ds.corpus_path)
    key = index_key(encoder.fingerprint, corpus_sha, factory, scoring)
    dest = run.path / "index"
    found = find_stored(run.runs_dir, "index", key)
    if found is not None:
        log.info("reusing index %s (key %s)", found, key)
        link_tree(found, dest)
        run.record(index={"key": key, "reused_from": str(found.parent)})
    else:
        log.info("building index (key %s) with %s", key, encoder.name)
        build_index(encoder, ds, dest, factory, scoring, batch_size, key, corpus_sha)
        freeze_tree(dest)
        run.record(index={"key": key, "reused_from": None})
    return load_index(dest)


def run_index(cfg: IndexConfig) -> Path:
    """``clirkit index``: one experiment directory holding the corpus index."""
    ds = load_dataset(cfg.dataset)
    encoder = load_encoder(cfg.model, cfg.device, cfg.precision, cfg.devices)
    with start_run(cfg.runs_dir, "index", cfg, cfg.seed) as run, encoder:
        run.add_inputs(corpus=ds.corpus_path, model=encoder.folder)
        idx = ensure_index(encoder, ds, run, cfg.factory, cfg.scoring, cfg.batch_size)
        log.info("indexed %d documents (%d-d)", len(idx.doc_ids), idx.manifest["dim"])
    return run.path
