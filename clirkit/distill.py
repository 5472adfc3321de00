"""``clirkit distill``: train a foreign-language student encoder from a frozen English teacher on bitext.

The method is OPTICAL (Huang, Yu, Allan, "Improving Cross-lingual Information Retrieval on
Low-Resource Languages via Optimal Transport Distillation", WSDM 2023, arXiv:2301.12566): the
student's token embeddings of the foreign sentence are aligned to the teacher's token embeddings
of the English sentence by an entropic optimal-transport plan; the sentence-level MSE baseline is
Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
Distillation", EMNLP 2020 (arXiv:2004.09813). The losses themselves live in
:mod:`clirkit.losses`; this module holds the students, the teacher-output cache, the training
loop (AdamW/Adam, linear warmup and decay, clipping), dev evaluation, checkpoints, bit-exact
resume and multi-process (DDP) training.

Students:

* ``copy`` -- the teacher's own transformer, fine-tuned (the setting of the paper).
* ``static`` -- a :class:`sentence_transformers.models.StaticEmbedding` (mean of per-token
  vectors) over a WordPiece vocabulary trained on the foreign side of the training bitext; it
  trains in seconds on a CPU and is the default for laptop-sized experiments.
* a model folder or hub id -- its transformer, with a learned linear projection (``--project``)
  when its width differs from the teacher's.

Files of a run (see GUIDE.md, "The experiment directory")::

    checkpoint/            best student by dev RR@10 (a sentence-transformers folder, safetensors)
    last/model/ last/state.pt   the latest resumable state (model, optimizer, scheduler, RNG, step)
    tokenizer/tokenizer.json    the trained WordPiece tokenizer (static student)
    metrics/training.csv   step, epoch, loss and its parts, lr, pairs/s, dev loss and metrics
    plots/training.png

Teacher outputs for the English side (token embeddings without special tokens, in float16, their
token ids, and sentence embeddings) are computed once and cached by content hash under
``$CLIRKIT_CACHE`` (default ``experiments/cache``), as are trained tokenizers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clirkit.config import DistillConfig
from clirkit.data.formats import iter_bitext, read_card
from clirkit.errors import ClirkitError
from clirkit.registry import Registry

log = logging.getLogger("clirkit")

CACHE_FORMAT = 1
ZERO_SHOT = "zero-shot"
DEV_MEASURES = ("RR@10", "R@1")
#: the dev metric that picks the best checkpoint
BEST_BY = "RR@10"

#: student name -> what it is (a name outside this registry is a model folder or hub id)
STUDENTS: Registry[str] = Registry("student")
STUDENTS.register("copy")("transformer initialised from the teacher")
STUDENTS.register("static")("StaticEmbedding over a WordPiece vocabulary trained on the foreign training side")


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (``rank 0 of 1`` without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_env() -> DistEnv:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by torchrun."""
    return DistEnv(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(env: DistEnv, device: str) -> str:
    """Join the process group (gloo on CPU, nccl on CUDA); return this process's device."""
    if not env.distributed:
        return device
    import torch.distributed as dist

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        device = f"cuda:{env.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------- bitext


@dataclass
class Bitext:
    """The English and foreign sides of the training and dev pairs.

    Attributes:
        folder: the prepared folder holding ``bitext/``.
        pair: ``<src>-<tgt>``; the English side is ``src`` unless the pair is ``xx-en``.
        files: the bitext files read (hashed into the manifest).
    """

    folder: Path
    pair: str
    train_en: list[str]
    train_fx: list[str]
    dev_en: list[str]
    dev_fx: list[str]
    files: dict[str, Path] = field(default_factory=dict)


def prepare_hint(pair: str) -> str:
    """The command that prepares bitext for ``pair``."""
    from clirkit.data.bible import VERSIONS

    src, _, tgt = pair.partition("-")
    bible = {lang for _, lang, _ in VERSIONS.values()} - {"en"}
    if src == "en" and tgt in bible:
        return f"run `clirkit prepare bible --pair {pair}` first (or pass --bitext DIR)"
    return f"run `clirkit prepare bitext --pair {pair} ...` on parallel text first (or pass --bitext DIR)"


def find_bitext(pair: str, data_root: Path = Path("data")) -> Path:
    """The prepared folder under ``data_root`` whose card names ``pair`` and that has ``bitext/train.tsv``."""
    found = []
    for card in sorted(data_root.glob("*/dataset.json")) if data_root.is_dir() else []:
        try:
            meta = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("pair") == pair and (card.parent / "bitext" / "train.tsv").is_file():
            found.append(card.parent)
    if not found:
        raise ClirkitError(f"no prepared bitext for the pair {pair!r} under {data_root}/", fix=prepare_hint(pair))
    if len(found) > 1:
        log.info("bitext for %s found in %s; using %s", pair, ", ".join(map(str, found)), found[0])
    return found[0]


def _bitext_file(folder: Path, split: str) -> Path | None:
    for suffix in (".tsv", ".parquet"):
        p = folder / "bitext" / f"{split}{suffix}"
        if p.is_file():
            return p
    return None


def load_bitext(cfg: DistillConfig) -> Bitext:
    """Read the training and dev bitext named by ``cfg`` (``--bitext`` or found by ``--pair``)."""
    if cfg.bitext is None and cfg.pair is None:
        raise ClirkitError("no bitext: give --pair (to find the prepared bitext under data/) or --bitext DIR",
                           fix="e.g. clirkit distill --pair en-tl")
    folder = Path(cfg.bitext) if cfg.bitext is not None else find_bitext(cfg.pair or "")
    if not folder.is_dir():
        raise ClirkitError("bitext folder not found", path=folder, fix="pass a folder made by `clirkit prepare`")
    card = read_card(folder) if (folder / "dataset.json").is_file() else {}
    pair = cfg.pair or card.get("pair")
    if not pair:
        raise ClirkitError("the bitext's dataset.json names no pair", path=folder, fix="pass --pair, e.g. --pair en-tl")
    if cfg.pair and card.get("pair") and card["pair"] != cfg.pair:
        raise ClirkitError(f"the bitext is {card['pair']}, not {cfg.pair}", path=folder,
                           fix="pass the matching --pair or another --bitext")
    train = _bitext_file(folder, "train")
    if train is None:
        raise ClirkitError("no bitext/train.tsv", path=folder, fix=prepare_hint(pair))
    src, _, tgt = pair.partition("-")
    # The teacher reads English: ``src`` is English for en-xx pairs; an xx-en pair has it on the right.
    english_is_src = not (tgt == "en" and src != "en")

    def read(path: Path, limit: int | None) -> tuple[list[str], list[str]]:
        en: list[str] = []
        fx: list[str] = []
        for _, s, t in iter_bitext(path):
            if limit is not None and len(en) >= limit:
                break
            en.append(s if english_is_src else t)
            fx.append(t if english_is_src else s)
        return en, fx

    train_en, train_fx = read(train, cfg.max_pairs)
    if not train_en:
        raise ClirkitError("the training bitext is empty", path=train, fix=prepare_hint(pair))
    files = {"bitext_train": train}
    dev = _bitext_file(folder, "dev")
    dev_en: list[str] = []
    dev_fx: list[str] = []
    if dev is not None and cfg.dev_pairs > 0:
        dev_en, dev_fx = read(dev, cfg.dev_pairs)
        files["bitext_dev"] = dev
    return Bitext(folder, pair, train_en, train_fx, dev_en, dev_fx, files)


# --------------------------------------------------------------------------- caches


def _content_key(meta: list[Any], texts: list[str]) -> str:
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

    def token_lists(self, rows: np.ndarray | list[int]) -> list[np.ndarray]:
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


def _load_teacher_outputs(folder: Path) -> TeacherOutputs:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return TeacherOutputs(np.load(folder / "sentence.npy"), np.load(folder / "tokens.npy", mmap_mode="r"),
                          np.load(folder / "offsets.npy"), np.load(folder / "ids.npy", mmap_mode="r"),
                          meta["truncated"])


def teacher_outputs(teacher, texts: list[str], max_length: int, batch_size: int, root: Path,
                    what: str = "English") -> tuple[Path, bool]:
    """Compute (once) the teacher's outputs for ``texts`` into the cache; return the folder and whether it was cached.

    The key hashes the teacher's weights fingerprint, the maximum length and the texts, so a
    changed model or bitext never reuses stale outputs. Texts are encoded longest first, which
    keeps padding (and the memory peak) small.
    """

    key = _content_key([CACHE_FORMAT, "teacher", teacher.fingerprint, max_length], texts)
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
        tmp = root / "teacher" / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        dim = teacher.dim
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), dim))
        ids = np.lib.format.open_memmap(tmp / "ids.npy", mode="w+", dtype=np.int32, shape=(int(offsets[-1]),))
        sentence = np.zeros((len(texts), dim), np.float32)
        from clirkit.progress import progress

        with progress() as bar, torch.inference_mode():
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
            "format": CACHE_FORMAT}, indent=2), encoding="utf-8")
    finally:
        model.max_seq_length = old_max
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same entry first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, False


def wordpiece_tokenizer(texts: list[str], vocab_size: int, max_length: int, root: Path):
    """A WordPiece tokenizer trained on ``texts`` (cached by content hash), truncating at ``max_length``.

    BERT-style normalisation (lower-casing) and pre-tokenisation, but accents are kept: they
    carry meaning in Vietnamese or Yoruba. Only ``[PAD]`` and ``[UNK]`` are special; the static
    student adds no special tokens. References: Schuster & Nakajima, "Japanese and Korean voice
    search", ICASSP 2012 (WordPiece); Wu et al. 2016 (arXiv:1609.08144).
    """
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    key = _content_key([CACHE_FORMAT, "wordpiece", vocab_size, tokenizers.__version__], texts)
    path = root / "tokenizers" / f"{key}.json"
    if not path.is_file():
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]"],
                                            show_progress=False)
        tok.train_from_iterator(texts, trainer, length=len(texts))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tok.save(str(tmp))
        os.replace(tmp, path)
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


# --------------------------------------------------------------------------- students


class Student(torch.nn.Module):
    """A trainable sentence-transformers model and the forward pass the losses need.

    ``forward(features)`` returns ``(tokens (B, L, d), token_mask (B, L) bool, sentence (B, d))``;
    special and padding tokens are False in the mask.
    """

    kind = "transformer"

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def tokenize(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def token_mask(self, features: dict) -> torch.Tensor:
        """(B, L) True for the tokens that carry content (not special, not padding)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """A sentence-transformers folder with safetensors weights."""
        self.model.save(str(path), safe_serialization=True, create_model_card=False)


class StaticStudent(Student):
    """Mean of per-token vectors (sentence-transformers ``StaticEmbedding``), token rows as token embeddings."""

    kind = "static"

    def __init__(self, model) -> None:
        super().__init__(model)
        self.normalize = _has_normalize(model)

    @property
    def tokenizer(self):
        return self.model[0].tokenizer

    def tokenize(self, texts: list[str]) -> dict:
        return self.pad([e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)])

    def token_mask(self, features: dict) -> torch.Tensor:
        return features["mask"]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @staticmethod
    def pad(id_lists: list[list[int]]) -> dict:
        m = max([len(x) for x in id_lists] + [1])
        ids = torch.zeros((len(id_lists), m), dtype=torch.long)
        mask = torch.zeros((len(id_lists), m), dtype=torch.bool)
        for j, x in enumerate(id_lists):
            ids[j, :len(x)] = torch.as_tensor(x, dtype=torch.long)
            mask[j, :len(x)] = True
        return {"input_ids": ids, "mask": mask}

    def forward(self, features: dict):
        weight = self.model[0].embedding.weight
        ids, mask = features["input_ids"].to(weight.device), features["mask"].to(weight.device)
        tokens = torch.nn.functional.embedding(ids, weight)
        m = mask.to(tokens.dtype)
        # the same mean StaticEmbedding's EmbeddingBag computes at inference time (0 for an empty text)
        sentence = (tokens * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
        if self.normalize:
            sentence = torch.nn.functional.normalize(sentence, dim=-1)
        return tokens, mask, sentence


class TransformerStudent(Student):
    """A transformer (plus optional token projection) with the teacher's pooling."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.register_buffer("special_ids", torch.tensor(sorted(set(model.tokenizer.all_special_ids)),
                                                         dtype=torch.long), persistent=False)

    def tokenize(self, texts: list[str]) -> dict:
        feats = self.model.preprocess(texts)
        return {k: v for k, v in feats.items() if hasattr(v, "to")}

    def token_mask(self, features: dict) -> torch.Tensor:
        ids = features["input_ids"]
        return features["attention_mask"].bool() & ~torch.isin(ids, self.special_ids.to(ids.device))

    @property
    def vocab_size(self) -> int:
        return len(self.model.tokenizer)

    def forward(self, features: dict):
        dev = self.special_ids.device
        out = self.model({k: v.to(dev) for k, v in features.items()})
        return out["token_embeddings"], self.token_mask(out), out["sentence_embedding"]


def _has_normalize(model) -> bool:
    from sentence_transformers.sentence_transformer.modules import Normalize

    return any(isinstance(m, Normalize) for m in model)


def _load_model_student(spec: str, device: str):
    """Load a MODEL student (folder or hub id), mapping an unknown name to the list of known students."""
    from clirkit.models import load_encoder, resolve

    known = f"use one of: {', '.join(STUDENTS.names())}, or a model folder or a hub id in the local cache"
    try:
        ref = resolve(spec)
    except ClirkitError as e:
        raise ClirkitError(f"unknown student {spec!r} ({e.message})", fix=known) from None
    if ref.kind == "run":
        raise ClirkitError("a distill run cannot be a student", path=spec, fix="pass its checkpoint/ folder")
    try:
        return load_encoder(spec, device)
    except ClirkitError as e:
        if ref.kind == "hub":
            raise ClirkitError(f"unknown student {spec!r} (not a folder, and not in the local Hugging Face cache)",
                               fix=known) from e
        raise


def prepare_student(cfg: DistillConfig, teacher, device: str):
    """Check the student option before any work; return the loaded MODEL student (or None for copy/static)."""
    if cfg.loss == ZERO_SHOT or cfg.student in STUDENTS:
        return None
    base = _load_model_student(cfg.student, device)
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = base.model[0]
    if not isinstance(first, Transformer):
        raise ClirkitError(f"student {cfg.student!r} does not start with a transformer ({type(first).__name__})",
                           fix="pass a sentence-transformers folder built on a Hugging Face transformer")
    width = int(first.get_embedding_dimension())
    if width != teacher.dim and not cfg.project:
        raise ClirkitError(f"student {cfg.student!r} is {width}-d but teacher {cfg.teacher!r} is {teacher.dim}-d",
                           fix="pass --project to learn a linear projection, or pick a student of the teacher's width")
    return base


def build_student(cfg: DistillConfig, teacher, model_student, train_fx: list[str], root: Path, device: str
                  ) -> Student:
    """Create the student named by ``cfg.student`` (initialised from torch's global RNG, seeded by the caller)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, StaticEmbedding

    dim = teacher.dim
    if cfg.student == "static":
        tok = wordpiece_tokenizer(train_fx, cfg.vocab_size, cfg.max_length, root)
        # N(0, 1/d) rows (norm ~1) instead of EmbeddingBag's N(0, 1) (norm ~sqrt(d)): a rare token
        # that gets few updates must not dominate the mean with a huge random vector.
        weights = torch.randn(tok.get_vocab_size(), dim) / math.sqrt(dim)
        modules = [StaticEmbedding(tok, embedding_weights=weights)]
        if _has_normalize(teacher.model):  # mirror the teacher: MSE then compares unit vectors, as retrieval does
            modules.append(Normalize())
        st = SentenceTransformer(modules=modules, device=device)
        return StaticStudent(st)
    if cfg.student == "copy":
        # A fresh copy: the cached teacher Encoder must stay frozen and untouched.
        st = SentenceTransformer(str(teacher.folder), device=device)
    else:
        first = model_student.model[0]
        width = int(first.get_embedding_dimension())
        modules = [first]
        if width != dim:
            modules.append(Dense(width, dim, activation_function=None, module_input_name="token_embeddings"))
        modules.append(Pooling(dim, pooling_mode="mean"))
        if _has_normalize(teacher.model):
            modules.append(Normalize())
        st = SentenceTransformer(modules=modules, device=device)
    st.max_seq_length = cfg.max_length
    return TransformerStudent(st)


def load_student(path: Path, cfg: DistillConfig, device: str) -> Student:
    """Reload a saved student (for resume)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    st = SentenceTransformer(str(path), device=device)
    if isinstance(st[0], StaticEmbedding):
        return StaticStudent(st)
    st.max_seq_length = cfg.max_length
    return TransformerStudent(st)


def truncated_fraction(student: Student, texts: list[str], max_length: int) -> float:
    """Fraction of foreign texts longer than ``max_length`` tokens."""
    if not texts:
        return 0.0
    if isinstance(student, StaticStudent):
        tok = student.tokenizer
        tok.no_truncation()
        try:
            lengths = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        finally:
            tok.enable_truncation(max_length)
    else:
        enc = student.model.tokenizer(texts, add_special_tokens=True, truncation=False)
        lengths = [len(x) for x in enc["input_ids"]]
    return float(np.mean([n > max_length for n in lengths]))


# --------------------------------------------------------------------------- losses


def make_loss(cfg: DistillConfig):
    """The loss module named by ``cfg.loss`` with every option it takes (see :mod:`clirkit.losses`)."""
    from clirkit.losses import build_loss

    return build_loss(cfg.loss, **loss_params(cfg))


def loss_params(cfg: DistillConfig) -> dict[str, Any]:
    """The constructor arguments of ``cfg.loss`` that ``cfg`` sets; the others keep the loss's defaults."""
    if cfg.loss not in ("ot", "ot+mse"):
        return {}
    params = {"cost": cfg.cost, "cost_scale": cfg.cost_scale, "eps_scale": cfg.eps_scale, "eps": cfg.eps,
              "iters": cfg.iters, "anneal_from": cfg.anneal_from, "anneal_iters": cfg.anneal_iters,
              "grad_plan": cfg.ot_grad_plan}
    if cfg.loss == "ot+mse":
        params.update(ot_weight=cfg.ot_weight, mse_weight=cfg.mse_weight)
    return {k: v for k, v in params.items() if v is not None}


def parse_augment(cfg: DistillConfig):
    """The perturbation spec of ``--augment`` (None without it); a bad spec is a ClirkitError."""
    if not cfg.augment:
        return None
    from clirkit.perturb import parse_spec

    return parse_spec(cfg.augment)


def check_loss(name: str) -> None:
    """Reject an unknown loss before any work, listing the known ones (zero-shot included)."""
    from clirkit.losses import LOSSES

    if name != ZERO_SHOT and name not in LOSSES:
        raise ClirkitError(f"unknown loss {name!r}", fix=f"use one of: {', '.join([*LOSSES.names(), ZERO_SHOT])}")


def document_frequencies(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], vocab: int
                         ) -> tuple[torch.Tensor, int]:
    """Sentence counts per token id over ``(input_ids, mask)`` batches, and the number of sentences."""
    from clirkit.losses import document_frequency

    df = torch.zeros(vocab, dtype=torch.long)
    n = 0
    for ids, mask in batches:
        df += document_frequency(ids, mask, vocab)
        n += ids.shape[0]
    return df, n


@dataclass
class IdfTables:
    """Document frequencies of each side of the training bitext, for idf token weights."""

    student_df: torch.Tensor
    student_n: int
    teacher_df: torch.Tensor
    teacher_n: int


def distill_batch(s_tokens, s_mask, s_sentence, s_ids, t_tokens, t_mask, t_ids, t_sentence,
                  idf: IdfTables | None):
    """Assemble a :class:`clirkit.losses.DistillBatch`; special and padding tokens weigh 0."""
    from clirkit.losses import DistillBatch, idf_weights, uniform_weights

    dev = s_tokens.device
    if idf is None:
        s_w, t_w = uniform_weights(s_mask), uniform_weights(t_mask)
    else:
        s_w = idf_weights(s_ids, s_mask.to(s_ids.device), idf.student_df, idf.student_n)
        t_w = idf_weights(t_ids, t_mask, idf.teacher_df, idf.teacher_n)
    return DistillBatch(student_tokens=s_tokens, student_weights=s_w.to(dev), student_sentence=s_sentence,
                        teacher_tokens=t_tokens.to(dev), teacher_weights=t_w.to(dev),
                        teacher_sentence=t_sentence.to(dev))


# --------------------------------------------------------------------------- dev evaluation


def dev_retrieval(s_sent: np.ndarray, t_sent: np.ndarray, side: str, scoring: str, rerank_k: int,
                  s_tokens: list[np.ndarray] | None = None, t_tokens: list[np.ndarray] | None = None
                  ) -> dict[str, float]:
    """Mate retrieval on dev: every sentence of one side retrieves its translation among all of the other.

    ``side="query"``: foreign (student) queries, English (teacher) documents; ``"document"``:
    the reverse. Scored with ir_measures (RR@10, R@1). ``maxsim`` re-ranks the dense top
    ``rerank_k`` by ColBERT MaxSim (Khattab & Zaharia, SIGIR 2020) over L2-normalised tokens.
    """
    from clirkit.evaluate import maxsim, parse_measures, score_run

    def norm(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    q, d = (s_sent, t_sent) if side == "query" else (t_sent, s_sent)
    sims = norm(q) @ norm(d).T
    k = min(rerank_k if scoring == "maxsim" else 10, sims.shape[1])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    run: dict[str, dict[str, float]] = {}
    if scoring == "maxsim":
        assert s_tokens is not None and t_tokens is not None
        q_tok, d_tok = (s_tokens, t_tokens) if side == "query" else (t_tokens, s_tokens)
        for i, cands in enumerate(top):
            docs = [norm(d_tok[j]) for j in cands]
            offsets = np.concatenate([[0], np.cumsum([len(x) for x in docs])])
            if len(q_tok[i]) and offsets[-1]:
                scores = maxsim(norm(q_tok[i]), np.concatenate(docs), offsets)
            else:
                scores = np.full(len(cands), -np.inf, np.float32)
            run[f"q{i}"] = {f"d{j}": float(s) for j, s in zip(cands, scores) if np.isfinite(s)}
    else:
        for i, cands in enumerate(top):
            run[f"q{i}"] = {f"d{j}": float(sims[i, j]) for j in cands}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(q))}
    per_query = score_run(qrels, run, parse_measures(list(DEV_MEASURES)))
    return {str(m): float(v) for m, v in per_query.mean(axis=0).items()}


# --------------------------------------------------------------------------- checkpoints


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing it, so a kill never leaves ``final`` half-written."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_model(student: Student, final: Path) -> None:
    tmp = final.with_name(f".{final.name}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save(tmp)
    _replace_dir(tmp, final)


def save_state(run_path: Path, student: Student, state: dict[str, Any]) -> None:
    """Write ``last/`` (model folder + ``state.pt``) atomically."""

    tmp = run_path / ".last.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    student.save(tmp / "model")
    torch.save(state, tmp / "state.pt")
    _replace_dir(tmp, run_path / "last")


def load_state(run: Path) -> tuple[Path, dict[str, Any]]:
    """The ``last/`` folder of ``run`` and its state (also from a ``.tmp`` run left by a hard kill)."""

    last = run / "last"
    if not (last / "state.pt").is_file():
        old = run / ".last.old"  # killed between the two renames of _replace_dir
        if (old / "state.pt").is_file():
            last = old
        else:
            raise ClirkitError("no saved state (last/state.pt) to resume from", path=run,
                               fix="resume a distill run that saved at least once (see --save-every)")
    return last, torch.load(last / "state.pt", map_location="cpu", weights_only=True)


def resumed_config(cfg: DistillConfig) -> DistillConfig:
    """The configuration of the run being resumed, with this invocation's runs_dir, device and resume."""
    from clirkit.rundir import read_json

    assert cfg.resume is not None
    run = Path(cfg.resume)
    if not run.is_dir():
        raise ClirkitError("run to resume not found", path=run, fix="pass a distill experiment directory")
    old = read_json(run / "config.json")
    if old.get("command") != "distill":
        raise ClirkitError(f"not a distill run (command {old.get('command')!r})", path=run,
                           fix="pass a directory made by `clirkit distill`")
    values = {k: v for k, v in old.items() if k in DistillConfig.model_fields}
    values.update(resume=run, runs_dir=cfg.runs_dir, device=cfg.device)
    return DistillConfig(**values)


# --------------------------------------------------------------------------- reports


def write_training(rows: list[dict[str, Any]], metrics: Path, plots: Path | None = None) -> None:
    """``metrics/training.csv`` (and ``plots/training.png``) from the logged rows."""
    import pandas as pd

    if not rows:
        return
    df = pd.DataFrame(rows)
    # step, epoch, loss and its parts, lr, pairs/s, then the dev columns
    rank = {"step": 0, "epoch": 1, "loss": 2, "lr": 4, "pairs_per_s": 5, "dev_loss": 6}
    df = df[sorted(df.columns, key=lambda c: (rank.get(c, 7 if c.startswith("dev_") else 3), c))]
    tmp = metrics / ".training.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, metrics / "training.csv")
    if plots is not None:
        plot_training(df, plots / "training.png")


def plot_training(df, path: Path) -> None:
    """Training and dev loss against steps, with the dev metrics on a second axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=120)
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    ax = fig.add_subplot(1, 1, 1)
    train = df.dropna(subset=["loss"]) if "loss" in df else df.iloc[0:0]
    if len(train):
        ax.plot(train["step"], train["loss"], label="train loss", color="tab:blue", lw=1)
    if "dev_loss" in df:
        dev = df.dropna(subset=["dev_loss"])
        ax.plot(dev["step"], dev["dev_loss"], "o-", label="dev loss", color="tab:orange", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for col, color in ((f"dev_{BEST_BY}", "tab:green"), ("dev_R@1", "tab:red")):
        if col in df:
            dev = df.dropna(subset=[col])
            ax2.plot(dev["step"], dev[col], "s--", label=col, color=color, ms=3)
    ax2.set_ylabel("dev retrieval")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# --------------------------------------------------------------------------- training


@dataclass
class Prepared:
    """Everything a training run reads, loaded once."""

    bitext: Bitext
    teacher: Any
    train: TeacherOutputs | None = None
    dev: TeacherOutputs | None = None
    cache: dict[str, str] = field(default_factory=dict)


class Trainer:
    """The training loop of one process (rank 0 also evaluates and writes the run directory)."""

    def __init__(self, cfg: DistillConfig, env: DistEnv, device: str, data: Prepared, student: Student,
                 run=None, resume_state: dict[str, Any] | None = None) -> None:
        self.cfg, self.env, self.device, self.data, self.run = cfg, env, device, data, run
        self.student = student.to(device)
        self.loss_fn = make_loss(cfg).to(device)
        self.static = isinstance(student, StaticStudent)
        self.augment = parse_augment(cfg)
        n = len(data.bitext.train_en)
        if cfg.batch_size % env.world:
            raise ClirkitError(f"--batch-size {cfg.batch_size} is not divisible by the {env.world} processes",
                               fix=f"use a multiple of {env.world}")
        self.local_bs = cfg.batch_size // env.world
        from torch.utils.data import DistributedSampler

        # DistributedSampler shuffles with its own torch.Generator seeded by seed + epoch, so the
        # order is a pure function of (seed, epoch): a resumed run sees the same batches.
        self.sampler = DistributedSampler(range(n), num_replicas=env.world, rank=env.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=False)
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.local_bs)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(cfg.warmup * self.total)
        params = [p for p in self.student.parameters() if p.requires_grad]
        # The fused kernel is 3x faster on CPU for a 16k x 384 table (one pass instead of one per
        # operation) and just as deterministic.
        if self.static:
            # Adam without decay for an embedding table: rows of rare tokens must not shrink to 0 between updates.
            self.opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.lr_factor)
        self.model = self.student
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.student, find_unused_parameters=not self.static)
        self.train_ids = None
        if self.static:  # tokenise the foreign side once; it is a rust call, but per batch it adds up
            self.train_ids = [e.ids for e in student.tokenizer.encode_batch(data.bitext.train_fx,
                                                                              add_special_tokens=False)]
        # Document frequencies over each side of the training bitext (idf OT marginals), counted once.
        self.idf = self._idf() if cfg.token_weights == "idf" and cfg.loss != "mse" else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best = -math.inf
        self.best_step: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.elapsed = 0.0
        if resume_state is not None:
            self._restore(resume_state)

    # -- schedule

    def lr_factor(self, step: int) -> float:
        """Linear warmup to the peak over ``warmup`` steps, then linear decay to 0 at the last step."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    # -- state

    def state(self) -> dict[str, Any]:
        rng = torch.get_rng_state()
        rngs = [rng]
        if self.env.distributed:
            import torch.distributed as dist

            rngs = [None] * self.env.world
            dist.all_gather_object(rngs, rng)
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "torch_rng": rngs, "best": self.best, "best_step": self.best_step,
                "rows": json.dumps(self.rows), "elapsed": self.elapsed, "world": self.env.world}

    def _restore(self, state: dict[str, Any]) -> None:
        if state["world"] != self.env.world:
            raise ClirkitError(f"the run was trained by {state['world']} processes, this job has {self.env.world}",
                               fix=f"resume with --nproc_per_node {state['world']}")
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"][self.env.rank])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best, self.best_step = state["best"], state["best_step"]
        self.rows = json.loads(state["rows"])
        self.elapsed = state["elapsed"]

    def _idf(self) -> IdfTables:
        """Document frequencies over the training bitext: English side (teacher ids), foreign side (student ids)."""
        t = self.data.train
        assert t is not None
        chunks = [np.arange(i, min(i + 512, len(t))) for i in range(0, len(t), 512)]
        t_df, t_n = document_frequencies((t.id_batch(rows) for rows in chunks),
                                         len(self.data.teacher.model.tokenizer))
        fx = self.data.bitext.train_fx

        def student_batches():
            for rows in chunks:
                feats = self.features(rows, fx, self.train_ids)
                yield feats["input_ids"], self.student.token_mask(feats)

        s_df, s_n = document_frequencies(student_batches(), self.student.vocab_size)
        return IdfTables(s_df, s_n, t_df, t_n)

    # -- forward

    def features(self, rows: np.ndarray, texts: list[str], ids: list[list[int]] | None) -> dict:
        if ids is not None:
            return StaticStudent.pad([ids[r] for r in rows])
        return self.student.tokenize([texts[r] for r in rows])

    def train_features(self, rows: np.ndarray, epoch: int) -> dict:
        """Student features of training rows; with ``augment`` the foreign side is perturbed on
        the fly, each (epoch, row) by its own seeded generator, so a resumed run sees the same
        noise (robust distillation: the student learns to map noisy text to the clean teacher)."""
        texts = self.data.bitext.train_fx
        if self.augment is None:
            return self.features(rows, texts, self.train_ids)
        from clirkit.perturb import text_rng

        noisy = [self.augment.apply(texts[r], text_rng(self.cfg.seed, epoch * len(texts) + int(r))) for r in rows]
        return self.student.tokenize(noisy)

    def loss(self, model, feats: dict, teacher: TeacherOutputs, rows: np.ndarray):
        s_tok, s_mask, s_sent = model(feats)
        t_tok, t_mask, t_ids, t_sent = teacher.batch(rows)
        return self.loss_fn(distill_batch(s_tok, s_mask, s_sent, feats["input_ids"], t_tok, t_mask, t_ids, t_sent,
                                          self.idf))

    # -- evaluation

    def evaluate(self) -> dict[str, float]:
        """Dev loss and dev mate retrieval (rank 0, unwrapped student, no gradients)."""
        b, dev = self.data.bitext, self.data.dev
        if dev is None or not b.dev_fx:
            return {}
        self.student.eval()
        total, parts_sum, n = 0.0, {}, 0
        sents, toks = [], []
        bs = max(self.local_bs, 64)
        with torch.no_grad():
            for start in range(0, len(b.dev_fx), bs):
                rows = np.arange(start, min(start + bs, len(b.dev_fx)))
                feats = self.student.tokenize([b.dev_fx[r] for r in rows])
                s_tok, s_mask, s_sent = self.student(feats)
                t_tok, t_mask, t_ids, t_sent = dev.batch(rows)
                out = self.loss_fn(distill_batch(s_tok, s_mask, s_sent, feats["input_ids"], t_tok, t_mask, t_ids,
                                                 t_sent, self.idf))
                total += float(out.loss) * len(rows)
                for k, v in out.parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(rows)
                n += len(rows)
                sents.append(s_sent.float().cpu().numpy())
                if self.cfg.scoring == "maxsim":
                    s_tok, s_mask = s_tok.float().cpu().numpy(), s_mask.cpu().numpy()
                    toks.extend(t[m] for t, m in zip(s_tok, s_mask))
        self.student.train()
        result = {"dev_loss": total / n, **{f"dev_{k}": v / n for k, v in parts_sum.items()}}
        scores = dev_retrieval(np.concatenate(sents), dev.sentence, self.cfg.side, self.cfg.scoring,
                               self.cfg.dev_rerank_k, toks or None,
                               dev.token_lists(range(len(dev))) if self.cfg.scoring == "maxsim" else None)
        result.update({f"dev_{k}": v for k, v in scores.items()})
        return result

    def _eval_and_checkpoint(self, row: dict[str, Any]) -> None:
        """Evaluate, and keep the student in checkpoint/ when it is the best so far."""
        assert self.run is not None
        metrics = self.evaluate()
        row.update(metrics)
        score = metrics.get(f"dev_{BEST_BY}")
        if score is not None and score > self.best:
            self.best, self.best_step = score, self.step
            save_model(self.student, self.run.path / "checkpoint")
        if metrics:
            log.info("step %d: dev loss %.4f, dev %s %.4f, R@1 %.4f", self.step, metrics["dev_loss"], BEST_BY,
                     metrics.get(f"dev_{BEST_BY}", float("nan")), metrics.get("dev_R@1", float("nan")))

    def _save(self) -> None:
        assert self.run is not None
        write_training(self.rows, self.run.sub("metrics"))
        state = self.state()
        if self.env.main:
            save_state(self.run.path, self.student, state)

    # -- loop

    def batches(self, epoch: int) -> list[np.ndarray]:
        self.sampler.set_epoch(epoch)
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        return [order[i:i + self.local_bs] for i in range(0, len(order), self.local_bs)]

    def train(self) -> None:
        """Train to the end (or until killed); rank 0 logs, evaluates and saves."""
        cfg, main = self.cfg, self.env.main
        assert self.data.train is not None
        eval_at = (lambda s, end_of_epoch: s % cfg.eval_every == 0) if cfg.eval_every else \
            (lambda s, end_of_epoch: end_of_epoch)
        if main and self.step == 0 and self.data.dev is not None:
            row = {"step": 0, "epoch": 0}
            self._eval_and_checkpoint(row)
            self.rows.append(row)
        bar_ctx = _progress() if main else nullcontext()
        self.student.train()
        window_pairs, window_start = 0, time.perf_counter()
        with bar_ctx as bar:
            task = bar.add_task("distilling", total=self.total, completed=self.step, info="") if main else None
            for epoch in range(self.epoch, cfg.epochs):
                batches = self.batches(epoch)
                start = self.batch_in_epoch if epoch == self.epoch else 0
                self.epoch = epoch
                for bi in range(start, len(batches)):
                    t0 = time.perf_counter()
                    rows = batches[bi]
                    feats = self.train_features(rows, epoch)
                    out = self.loss(self.model, feats, self.data.train, rows)
                    self.opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.max_grad_norm)
                    self.opt.step()
                    lr = self.sched.get_last_lr()[0]
                    self.sched.step()
                    self.step += 1
                    self.batch_in_epoch = bi + 1
                    end_of_epoch = bi + 1 == len(batches)
                    if end_of_epoch:
                        self.epoch, self.batch_in_epoch = epoch + 1, 0
                    self.elapsed += time.perf_counter() - t0
                    window_pairs += len(rows) * self.env.world
                    last = self.step == self.total
                    do_eval = eval_at(self.step, end_of_epoch) or last
                    do_save = (self.step % cfg.save_every == 0) if cfg.save_every else do_eval
                    if not main:
                        if do_save or last:
                            self.state()  # the all_gather of RNG states is collective
                        continue
                    if self.step % cfg.log_every == 0 or do_eval or last:
                        now = time.perf_counter()
                        pps = window_pairs / max(now - window_start, 1e-9)
                        window_pairs, window_start = 0, now
                        loss = float(out.loss.detach())
                        row = {"step": self.step, "epoch": epoch + (bi + 1) / len(batches), "loss": loss,
                               **{k: float(v) for k, v in out.parts.items()}, "lr": lr, "pairs_per_s": pps}
                        if do_eval:
                            self._eval_and_checkpoint(row)
                        self.rows.append(row)
                        info = f"loss {loss:.4f} · {pps:,.0f} pairs/s"
                        if self.best > -math.inf:
                            info += f" · dev {BEST_BY} {self.best:.3f}"
                        bar.update(task, completed=self.step, info=info)
                    if do_save or last:
                        self._save()
                    if do_eval or do_save:  # pairs/s measures training, not evaluation or saving
                        window_start = time.perf_counter()


def _progress():
    from clirkit.progress import progress

    return progress()


# --------------------------------------------------------------------------- command


def _prepare_teacher(cfg: DistillConfig, env: DistEnv, teacher, bitext: Bitext, root: Path, need_train: bool
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
        setattr(data, name, _load_teacher_outputs(folder))
    return data


def run_distill(cfg: DistillConfig) -> Path | None:
    """``clirkit distill``: one experiment directory holding the trained student.

    References:
        Huang, Yu, Allan. Improving Cross-lingual Information Retrieval on Low-Resource Languages
        via Optimal Transport Distillation. WSDM 2023 (arXiv:2301.12566);
        Reimers & Gurevych. Making Monolingual Sentence Embeddings Multilingual using Knowledge
        Distillation. EMNLP 2020 (arXiv:2004.09813);
        Loshchilov & Hutter. Decoupled Weight Decay Regularization. ICLR 2019 (AdamW).

    Returns:
        The run directory (on every process of a torchrun job).
    """
    from clirkit.models import load_encoder
    from clirkit.rundir import cache_root, start_run, terminate_as_interrupt
    from clirkit.seeding import set_seed

    resume_from = None
    if cfg.resume is not None:
        cfg = resumed_config(cfg)
        resume_from = Path(cfg.resume)  # type: ignore[arg-type]
        log.info("resuming %s with its own configuration (other options are ignored)", resume_from)
    check_loss(cfg.loss)
    parse_augment(cfg)  # fail on a bad spec before any work
    env = dist_env()
    if not env.main:
        log.setLevel(logging.WARNING)  # one process talks
    device = init_distributed(env, cfg.device)
    set_seed(cfg.seed, torch_global=True)
    bitext = load_bitext(cfg)
    teacher = load_encoder(cfg.teacher, device)
    model_student = prepare_student(cfg, teacher, device)
    last_dir, state = load_state(resume_from) if resume_from is not None else (None, None)
    root = cache_root()

    ctx = start_run(cfg.runs_dir, "distill", cfg, cfg.seed) if env.main else nullcontext()
    path: Path | None = None
    with terminate_as_interrupt(), ctx as run:
        if run is not None:
            inputs = {**bitext.files, "teacher": teacher.folder}
            if model_student is not None:
                inputs["student"] = model_student.folder
            run.add_inputs(**inputs)
            run.record(device=device, world_size=env.world, teacher={"spec": cfg.teacher,
                                                                      "fingerprint": teacher.fingerprint},
                       # the resolved folder under the key `clirkit attack` looks for its test collection
                       bitext=str(bitext.folder), pair=bitext.pair,
                       pairs={"train": len(bitext.train_en), "dev": len(bitext.dev_en)},
                       loss=make_loss(cfg).as_config() if cfg.loss != ZERO_SHOT else {"name": ZERO_SHOT},
                       resumed_from=str(resume_from) if resume_from else None)
        if cfg.loss == ZERO_SHOT:
            if run is not None:
                zero_shot(cfg, env, device, teacher, bitext, root, run)
        else:
            data = _prepare_teacher(cfg, env, teacher, bitext, root, need_train=True)
            if last_dir is not None:
                student = load_student(last_dir / "model", cfg, device)
            else:
                student = build_student(cfg, teacher, model_student, bitext.train_fx, root, device)
            if run is not None:
                _record_student(cfg, run, student, bitext, data)
                if resume_from is not None and (resume_from / "checkpoint").is_dir():
                    shutil.copytree(resume_from / "checkpoint", run.path / "checkpoint")
            trainer = Trainer(cfg, env, device, data, student, run, state)
            t0 = time.perf_counter()
            trainer.train()
            if run is not None:
                if not (run.path / "checkpoint").is_dir():  # no dev set: the last model is the result
                    save_model(student, run.path / "checkpoint")
                write_training(trainer.rows, run.sub("metrics"), run.sub("plots"))
                run.record(training={"steps": trainer.step, "seconds": round(time.perf_counter() - t0, 2),
                                     "train_seconds_total": round(trainer.elapsed, 2),
                                     "best_step": trainer.best_step, f"best_dev_{BEST_BY}": trainer.best
                                     if trainer.best > -math.inf else None})
                log.info("trained %d steps in %.1f s; best dev %s %.4f at step %s", trainer.step,
                         time.perf_counter() - t0, BEST_BY, trainer.best, trainer.best_step)
    if run is not None:
        path = run.path
    if env.distributed:
        import torch.distributed as dist

        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0]) if box[0] else None
        dist.barrier()
        dist.destroy_process_group()
    return path


def _record_student(cfg: DistillConfig, run, student: Student, bitext: Bitext, data: Prepared) -> None:
    info: dict[str, Any] = {"student": cfg.student, "kind": student.kind,
                            "parameters": sum(p.numel() for p in student.parameters()),
                            "foreign_truncated": truncated_fraction(student, bitext.train_fx, cfg.max_length),
                            "english_truncated": data.train.truncated if data.train else None}
    if isinstance(student, StaticStudent):
        tok_dir = run.sub("tokenizer")
        student.tokenizer.save(str(tok_dir / "tokenizer.json"))
        info["vocab_size"] = student.tokenizer.get_vocab_size()
    log.info("student %s (%s, %d parameters); foreign side truncated at %d tokens: %.2f%% of sentences",
             cfg.student, student.kind, info["parameters"], cfg.max_length, 100 * info["foreign_truncated"])
    run.record(student=info, teacher_cache=data.cache)


def zero_shot(cfg: DistillConfig, env: DistEnv, device: str, teacher, bitext: Bitext, root: Path, run) -> None:
    """The baseline: the checkpoint is the teacher itself (same files, so indexes are shared)."""
    shutil.copytree(teacher.folder, run.path / "checkpoint", ignore=shutil.ignore_patterns(".*", "README.md"))
    rows: list[dict[str, Any]] = [{"step": 0, "epoch": 0}]
    if bitext.dev_en:

        data = _prepare_teacher(cfg, env, teacher, bitext, root, need_train=False)
        assert data.dev is not None
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(run.path / "checkpoint"), device=device)
        st.max_seq_length = cfg.max_length
        student = TransformerStudent(st).to(device)
        s_sent, s_tok = [], []
        with torch.no_grad():
            for start in range(0, len(bitext.dev_fx), cfg.teacher_batch_size):
                tok, mask, sent = student(student.tokenize(bitext.dev_fx[start:start + cfg.teacher_batch_size]))
                s_sent.append(sent.float().cpu().numpy())
                if cfg.scoring == "maxsim":
                    s_tok.extend(t[m] for t, m in zip(tok.float().cpu().numpy(), mask.cpu().numpy()))
        scores = dev_retrieval(np.concatenate(s_sent), data.dev.sentence, cfg.side, cfg.scoring, cfg.dev_rerank_k,
                               s_tok or None, data.dev.token_lists(range(len(data.dev)))
                               if cfg.scoring == "maxsim" else None)
        rows[0].update({f"dev_{k}": v for k, v in scores.items()})
        log.info("zero-shot dev %s %.4f, R@1 %.4f", BEST_BY, scores[BEST_BY], scores["R@1"])
    write_training(rows, run.sub("metrics"), run.sub("plots"))
