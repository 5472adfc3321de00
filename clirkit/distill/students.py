"""The students: trainable encoders of the foreign side, one class per kind, registered by name.

Registered students (the ``student`` value of :class:`~clirkit.config.DistillConfig`):

* ``copy`` -- the teacher's own transformer, fine-tuned (the setting of OPTICAL, Huang, Yu,
  Allan, WSDM 2023, arXiv:2301.12566).
* ``static`` -- a :class:`sentence_transformers.models.StaticEmbedding` (mean of per-token
  vectors) over a WordPiece vocabulary trained on the foreign side of the training bitext; it
  trains in seconds on a CPU and is the default for laptop-sized experiments.
* ``transfer`` -- the teacher's transformer (its first ``student_layers`` layers) reading a
  WordPiece vocabulary of the foreign side, input embeddings initialised from the teacher's by
  bitext co-occurrence (:mod:`clirkit.distill.transfer`).

Any other value is a model folder or hub id (:class:`ModelStudent`): its transformer, with a
learned linear projection (``--project``) when its width differs from the teacher's.

Adding a student (the extension point): write a subclass of :class:`Student` -- usually of
:class:`TransformerStudent` or :class:`StaticStudent`, whose forward passes it then reuses --
and register it under its config name::

    @STUDENTS.register("transfer")
    class TransferStudent(TransformerStudent):
        @classmethod
        def prepare(cls, cfg, teacher, device): ...   # optional: check options, load inputs
        @classmethod
        def build(cls, cfg, teacher, prepared, bitext, root, device): ...

``prepare`` runs before any work (a bad option fails before the run directory exists) and may
return an encoder the student starts from (hashed into the manifest as input ``student``);
``build`` creates the initialised student from torch's global RNG, from the training pairs of
``bitext`` only (the dev pairs measure the student); ``load`` reloads a saved
one on resume (the default suits any sentence-transformers folder); ``record`` adds files to
the run directory and fields to the manifest's ``student``. A student in its own module
registers itself when imported: add that import to ``clirkit/distill/__init__.py`` so the name
is known (and listed in errors) before any lookup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from clirkit.config import DistillConfig
from clirkit.distill.cache import CACHE_FORMAT, content_key
from clirkit.distill.objective import ZERO_SHOT
from clirkit.distill.pairs import Bitext
from clirkit.errors import ClirkitError
from clirkit.registry import Registry

#: student name -> the Student class that builds it (a name outside it is a model folder or hub id)
STUDENTS: Registry[type[Student]] = Registry("student")


class Student(torch.nn.Module):
    """A trainable sentence-transformers model and the forward pass the losses need.

    ``forward(features)`` returns ``(tokens (B, L, d), token_mask (B, L) bool, sentence (B, d))``;
    special and padding tokens are False in the mask.
    """

    #: recorded in the manifest as ``student.kind``
    kind: ClassVar[str] = "transformer"

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    # -- life cycle (class methods: the registry holds classes)

    @classmethod
    def prepare(cls, cfg: DistillConfig, teacher, device: str) -> Any:
        """Check the options before any work; return what :meth:`build` starts from (None: nothing)."""
        return None

    @classmethod
    def build(cls, cfg: DistillConfig, teacher, prepared: Any, bitext: Bitext, root: Path, device: str
              ) -> Student:
        """The initialised student (random parts drawn from torch's global RNG, seeded by the caller)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, cfg: DistillConfig, device: str) -> Student:
        """Reload a student saved by :meth:`save` (for resume)."""
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device=device)
        st.max_seq_length = cfg.max_length
        return cls(st)

    def save(self, path: Path) -> None:
        """A sentence-transformers folder with safetensors weights."""
        self.model.save(str(path), safe_serialization=True, create_model_card=False)

    def record(self, run) -> dict[str, Any]:
        """Write extra files into the run directory; return extra manifest fields for ``student``."""
        return {}

    # -- the forward pass

    def tokenize(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def token_mask(self, features: dict) -> torch.Tensor:
        """(B, L) True for the tokens that carry content (not special, not padding)."""
        raise NotImplementedError

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Untruncated token counts (what the truncated fraction is measured on)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError


@STUDENTS.register("static")
class StaticStudent(Student):
    """StaticEmbedding over a WordPiece vocabulary trained on the foreign training side.

    Mean of per-token vectors (sentence-transformers ``StaticEmbedding``); the token rows are the
    token embeddings.
    """

    kind = "static"

    def __init__(self, model) -> None:
        super().__init__(model)
        self.normalize = _has_normalize(model)

    @classmethod
    def build(cls, cfg: DistillConfig, teacher, prepared: Any, bitext: Bitext, root: Path, device: str
              ) -> StaticStudent:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

        dim = teacher.dim
        tok = wordpiece_tokenizer(bitext.train_fx, cfg.vocab_size, cfg.max_length, root)
        # N(0, 1/d) rows (norm ~1) instead of EmbeddingBag's N(0, 1) (norm ~sqrt(d)): a rare token
        # that gets few updates must not dominate the mean with a huge random vector.
        weights = torch.randn(tok.get_vocab_size(), dim) / math.sqrt(dim)
        modules = [StaticEmbedding(tok, embedding_weights=weights)]
        if _has_normalize(teacher.model):  # mirror the teacher: MSE then compares unit vectors, as retrieval does
            modules.append(Normalize())
        return cls(SentenceTransformer(modules=modules, device=device))

    @classmethod
    def load(cls, path: Path, cfg: DistillConfig, device: str) -> StaticStudent:
        from sentence_transformers import SentenceTransformer

        return cls(SentenceTransformer(str(path), device=device))

    def record(self, run) -> dict[str, Any]:
        self.tokenizer.save(str(run.sub("tokenizer") / "tokenizer.json"))
        return {"vocab_size": self.tokenizer.get_vocab_size()}

    @property
    def tokenizer(self):
        return self.model[0].tokenizer

    def tokenize(self, texts: list[str]) -> dict:
        return self.pad([e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)])

    def token_mask(self, features: dict) -> torch.Tensor:
        return features["mask"]

    def token_lengths(self, texts: list[str]) -> list[int]:
        tok = self.tokenizer
        truncation = tok.truncation
        tok.no_truncation()
        try:
            return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        finally:
            if truncation is not None:
                tok.enable_truncation(**truncation)

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

    def token_lengths(self, texts: list[str]) -> list[int]:
        enc = self.model.tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(x) for x in enc["input_ids"]]

    @property
    def vocab_size(self) -> int:
        return len(self.model.tokenizer)

    def forward(self, features: dict):
        dev = self.special_ids.device
        out = self.model({k: v.to(dev) for k, v in features.items()})
        return out["token_embeddings"], self.token_mask(out), out["sentence_embedding"]


@STUDENTS.register("copy")
class CopyStudent(TransformerStudent):
    """Transformer initialised from the teacher."""

    @classmethod
    def build(cls, cfg: DistillConfig, teacher, prepared: Any, bitext: Bitext, root: Path, device: str
              ) -> CopyStudent:
        from sentence_transformers import SentenceTransformer

        # A fresh copy: the cached teacher Encoder must stay frozen and untouched.
        st = SentenceTransformer(str(teacher.folder), device=device)
        st.max_seq_length = cfg.max_length
        return cls(st)


class ModelStudent(TransformerStudent):
    """A model folder or hub id: its transformer, mean pooling, and a linear projection to the teacher's width."""

    @classmethod
    def prepare(cls, cfg: DistillConfig, teacher, device: str):
        """Load the model and check that it can become a student of ``teacher``."""
        from sentence_transformers.sentence_transformer.modules import Transformer

        base = _load_model_student(cfg.student, device)
        first = base.model[0]
        if not isinstance(first, Transformer):
            raise ClirkitError(f"student {cfg.student!r} does not start with a transformer ({type(first).__name__})",
                               fix="pass a sentence-transformers folder built on a Hugging Face transformer")
        width = int(first.get_embedding_dimension())
        if width != teacher.dim and not cfg.project:
            raise ClirkitError(f"student {cfg.student!r} is {width}-d but teacher {cfg.teacher!r} is "
                               f"{teacher.dim}-d", fix="pass --project to learn a linear projection, or pick a "
                                                       "student of the teacher's width")
        return base

    @classmethod
    def build(cls, cfg: DistillConfig, teacher, prepared: Any, bitext: Bitext, root: Path, device: str
              ) -> ModelStudent:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

        dim = teacher.dim
        first = prepared.model[0]
        width = int(first.get_embedding_dimension())
        modules = [first]
        if width != dim:
            modules.append(Dense(width, dim, activation_function=None, module_input_name="token_embeddings"))
        modules.append(Pooling(dim, pooling_mode="mean"))
        if _has_normalize(teacher.model):
            modules.append(Normalize())
        st = SentenceTransformer(modules=modules, device=device)
        st.max_seq_length = cfg.max_length
        return cls(st)


def student_class(name: str) -> type[Student]:
    """The class of the student named ``name`` (a name not registered is a model folder or hub id)."""
    return STUDENTS.get(name) if name in STUDENTS else ModelStudent


def prepare_student(cfg: DistillConfig, teacher, device: str):
    """Check the student option before any work; return what the student starts from (None for copy/static)."""
    if cfg.loss == ZERO_SHOT:
        return None
    return student_class(cfg.student).prepare(cfg, teacher, device)


def build_student(cfg: DistillConfig, teacher, prepared, bitext: Bitext, root: Path, device: str) -> Student:
    """Create the student named by ``cfg.student`` (initialised from torch's global RNG, seeded by the caller)."""
    return student_class(cfg.student).build(cfg, teacher, prepared, bitext, root, device)


def load_student(path: Path, cfg: DistillConfig, device: str) -> Student:
    """Reload a saved student (for resume)."""
    return student_class(cfg.student).load(path, cfg, device)


def truncated_fraction(student: Student, texts: list[str], max_length: int) -> float:
    """Fraction of foreign texts longer than ``max_length`` tokens."""
    if not texts:
        return 0.0
    return float(np.mean([n > max_length for n in student.token_lengths(texts)]))


def wordpiece_tokenizer(texts: list[str], vocab_size: int, max_length: int, root: Path):
    """A WordPiece tokenizer trained on ``texts`` (cached by content hash), truncating at ``max_length``.

    BERT-style normalisation (lower-casing) and pre-tokenisation, but accents are kept: they
    carry meaning in Vietnamese or Yoruba. Only ``[PAD]`` and ``[UNK]`` are special; the static
    student adds no special tokens. References: Schuster & Nakajima, "Japanese and Korean voice
    search", ICASSP 2012 (WordPiece); Wu et al. 2016 (arXiv:1609.08144).

    The vocabulary is the same in every process. The trainer (tokenizers' BPE trainer, up to at
    least 0.23) numbers the continuation pieces ``##c`` in the iteration order of a randomly
    seeded hash map, and those ids break ties between merges of equal count, so two processes
    could pick different merges (huggingface/tokenizers#1794). Here every ``##c`` of the texts
    is handed to the trainer up front, sorted, as a special token, which fixes its id; the
    special marks are then dropped, so they stay ordinary vocabulary entries.
    """
    import json

    import tokenizers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    key = content_key([CACHE_FORMAT, "wordpiece-sorted", vocab_size, tokenizers.__version__], texts)
    path = root / "tokenizers" / f"{key}.json"
    if not path.is_file():
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        special = ["[PAD]", "[UNK]"]
        # the words the trainer sees (normalised, pre-tokenised), and the continuation pieces it would make
        pieces = sorted({f"##{c}" for t in texts for word, _ in
                         tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(t)) for c in word[1:]})
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special + pieces,
                                            show_progress=False)
        tok.train_from_iterator(texts, trainer, length=len(texts))
        spec = json.loads(tok.to_str())
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in special]
        tok = Tokenizer.from_str(json.dumps(spec))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tok.save(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a kill between the two leaves no partial file in the cache
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


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
