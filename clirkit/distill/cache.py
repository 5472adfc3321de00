"""The teacher-output cache: the frozen teacher's outputs for the English side, computed once.

Token embeddings without special tokens (float16, memory-mapped), their token ids (for idf
weights) and sentence embeddings are stored under ``$CLIRKIT_CACHE/teacher/<key>/``, the key a
hash of :data:`CACHE_FORMAT`, the teacher's weights fingerprint, the maximum length, the
precision of the forward passes (bf16/fp16 only, so fp32 keys are those of older versions) and
the texts (:func:`content_key`), so a changed model or bitext never reuses stale outputs. An
entry is written under a temporary name and renamed into place, and a killed computation
removes its temporary folder, so the cache never holds a partial entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clirkit.config import DistillConfig
from clirkit.device import autocast
from clirkit.distill.ddp import DistEnv, barrier
from clirkit.distill.pairs import Bitext
from clirkit.errors import ClirkitError
from clirkit.progress import progress

log = logging.getLogger("clirkit")

#: bump when the layout of a cache entry (teacher outputs, trained tokenizers) changes
CACHE_FORMAT = 1


def content_key(meta: list[Any], texts: list[str]) -> str:
    """A 32-hex-digit key of ``meta`` (JSON) and ``texts``, for cache entries."""
    h = hashlib.sha256(json.dumps(meta).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class TeacherOutputs:
    """The teacher's outputs for a list of English texts, read from the cache.

    Attributes:
        sentence: (N, d) float32 sentence embeddings (the teacher's pooled output).
        tokens: (T, d) float16 token embeddings of all texts, concatenated, special tokens
            removed (memory-mapped).
        offsets: (N + 1,) int64; text ``i`` owns ``tokens[offsets[i]:offsets[i + 1]]``.
        ids: (T,) int32 token ids (for idf weights).
        truncated: fraction of texts longer than the maximum length.
    """

    sentence: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    truncated: float

    def __len__(self) -> int:
        return len(self.sentence)

    def token_lists(self, rows: np.ndarray | list[int] | range) -> list[np.ndarray]:
        """The float32 token embeddings of each of ``rows``."""
        return [np.asarray(self.tokens[self.offsets[r]:self.offsets[r + 1]], dtype=np.float32) for r in rows]

    def id_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded token ids (B, m) and mask (B, m) for ``rows``."""
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        ids = np.zeros((len(rows), max(int(lengths.max()), 1)), np.int64)
        mask = np.zeros(ids.shape, bool)
        for j, (r, n) in enumerate(zip(rows, lengths)):
            ids[j, :n] = self.ids[self.offsets[r]:self.offsets[r] + n]
            mask[j, :n] = True
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def batch(self, rows: np.ndarray):
        """Padded tensors for ``rows``: tokens (B, m, d) float32, mask (B, m) bool, ids (B, m), sentence (B, d)."""
        ids, mask = self.id_batch(rows)
        tok = np.zeros((*ids.shape, self.tokens.shape[1]), np.float32)
        for j, r in enumerate(rows):
            tok[j, :self.offsets[r + 1] - self.offsets[r]] = self.tokens[self.offsets[r]:self.offsets[r + 1]]
        return (torch.from_numpy(tok), mask, ids, torch.from_numpy(np.ascontiguousarray(self.sentence[rows])))


def load_teacher_outputs(folder: Path) -> TeacherOutputs:
    """Open a cache entry written by :func:`teacher_outputs` (token arrays memory-mapped)."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return TeacherOutputs(np.load(folder / "sentence.npy"), np.load(folder / "tokens.npy", mmap_mode="r"),
                          np.load(folder / "offsets.npy"), np.load(folder / "ids.npy", mmap_mode="r"),
                          meta["truncated"])


def teacher_outputs(teacher, texts: list[str], max_length: int, batch_size: int, root: Path,
                    what: str = "English") -> tuple[Path, bool]:
    """Compute (once) the teacher's outputs for ``texts`` into the cache; return the folder and whether it was cached.

    The key hashes the teacher's weights fingerprint, the maximum length, the precision (when
    not fp32) and the texts, so a changed model or bitext never reuses stale outputs. The
    forward passes run under :func:`clirkit.device.autocast` of the teacher's precision. Texts
    are encoded longest first, which keeps padding (and the memory peak) small.
    """
    precision = teacher.precision
    meta: list[Any] = [CACHE_FORMAT, "teacher", teacher.fingerprint, max_length]
    if precision.mixed:
        meta.append(precision.name)
    key = content_key(meta, texts)
    folder = root / "teacher" / key
    if (folder / "meta.json").is_file():
        return folder, True
    model = teacher.model
    special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long)
    full = model.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = float(np.mean([len(x) > max_length for x in full])) if texts else 0.0
    order = np.argsort([-len(x) for x in full], kind="stable")
    del full
    old_max = model.max_seq_length
    model.max_seq_length = max_length
    tmp = root / "teacher" / f".{key}.tmp-{os.getpid()}"
    try:
        chunks = []
        lengths = np.zeros(len(texts), np.int64)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            feats = model.preprocess([texts[r] for r in rows])
            keep = feats["attention_mask"].bool() & ~torch.isin(feats["input_ids"], special)
            lengths[rows] = keep.sum(1).numpy()
            chunks.append((rows, feats, keep))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tmp.mkdir(parents=True, exist_ok=True)
        dim = teacher.dim
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), dim))
        ids = np.lib.format.open_memmap(tmp / "ids.npy", mode="w+", dtype=np.int32, shape=(int(offsets[-1]),))
        sentence = np.zeros((len(texts), dim), np.float32)
        with progress() as bar, torch.inference_mode(), autocast(teacher.device, precision):
            task = bar.add_task(f"teacher: {what}", total=len(texts), info="")
            for rows, feats, keep in chunks:
                feats = {k: v.to(teacher.device) if hasattr(v, "to") else v for k, v in feats.items()}
                out = model.forward(feats)
                if out["token_embeddings"].shape[-1] != dim:
                    raise ClirkitError(f"teacher {teacher.name!r} has {out['token_embeddings'].shape[-1]}-d tokens "
                                       f"but {dim}-d sentences", fix="use a teacher without a sentence-level Dense")
                sentence[rows] = out["sentence_embedding"].float().cpu().numpy()
                tok = out["token_embeddings"].float().cpu().numpy()
                kp = keep.numpy()
                in_ids = feats["input_ids"].cpu().numpy()
                for j, r in enumerate(rows):
                    tokens[offsets[r]:offsets[r + 1]] = tok[j][kp[j]]
                    ids[offsets[r]:offsets[r + 1]] = in_ids[j][kp[j]]
                bar.update(task, advance=len(rows))
        tokens.flush()
        ids.flush()
        del tokens, ids
        np.save(tmp / "sentence.npy", sentence)
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "meta.json").write_text(json.dumps({
            "teacher": teacher.name, "fingerprint": teacher.fingerprint, "max_length": max_length,
            "count": len(texts), "tokens": int(offsets[-1]), "dim": dim, "truncated": truncated,
            "format": CACHE_FORMAT, **({"precision": precision.name} if precision.mixed else {})},
            indent=2), encoding="utf-8")
        with contextlib.suppress(OSError):  # OSError: another process finished the same entry first
            os.replace(tmp, folder)
    finally:
        model.max_seq_length = old_max
        shutil.rmtree(tmp, ignore_errors=True)  # a kill (or a lost race) leaves no partial entry
    return folder, False


@dataclass
class Prepared:
    """Everything a training run reads, loaded once: the bitext and the teacher's outputs for its English side."""

    bitext: Bitext
    teacher: Any
    train: TeacherOutputs | None = None
    dev: TeacherOutputs | None = None
    #: split -> cache folder (recorded in the manifest as ``teacher_cache``)
    cache: dict[str, str] = field(default_factory=dict)


def prepare_teacher(cfg: DistillConfig, env: DistEnv, teacher, bitext: Bitext, root: Path, need_train: bool
                    ) -> Prepared:
    """Teacher outputs for the English side: rank 0 computes what is not cached, the others wait."""
    max_len = cfg.teacher_max_length or teacher.max_length
    data = Prepared(bitext, teacher)
    jobs = [("train", bitext.train_en)] if need_train else []
    if bitext.dev_en:
        jobs.append(("dev", bitext.dev_en))
    for name, texts in jobs:
        if env.main:
            t0 = time.perf_counter()
            folder, cached = teacher_outputs(teacher, texts, max_len, cfg.teacher_batch_size, root,
                                             f"{len(texts)} English {name} sentences")
            log.info("teacher outputs for %d %s sentences: %s (%s, %.1f s)", len(texts), name, folder,
                     "cached" if cached else "computed", time.perf_counter() - t0)
        barrier(env)
        if not env.main:
            folder, _ = teacher_outputs(teacher, texts, max_len, cfg.teacher_batch_size, root)
        data.cache[name] = str(folder)
        setattr(data, name, load_teacher_outputs(folder))
    return data
