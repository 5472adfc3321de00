"""Vocabulary transfer: a teacher's transformer with a new WordPiece vocabulary for the foreign language.

The student keeps the teacher's transformer layers (optionally only the first ``layers``), its
pooling and normalisation, but reads the foreign language with its own WordPiece vocabulary,
trained on the foreign side of the training bitext (the one the static student uses,
:func:`clirkit.distill.students.wordpiece_tokenizer`). Each new token's input embedding is initialised
from the teacher's input embeddings, in the family of WECHSEL (Minixhofer, Paischer & Rekabsaz,
"WECHSEL: Effective initialization of subword embeddings for cross-lingual transfer of
monolingual language models", NAACL 2022) and FOCUS (Dobler & de Melo, "FOCUS: Effective
Embedding Initialization for Monolingual Specialization of Multilingual Models", EMNLP 2023),
with the bitext in place of their static word vectors:

* special tokens (``[PAD] [UNK] [CLS] [SEP] [MASK]``) copy the teacher's special token of the
  same role;
* a token whose string is in the teacher's vocabulary copies that row (the overlapping tokens
  FOCUS and WECHSEL copy);
* any other token takes the Dice-weighted mean of the input embeddings of the ``top_n`` teacher
  tokens with the highest Dice coefficient of sentence co-occurrence over the aligned pairs
  (:func:`clirkit.lexicon.dice_scores`, Dice 1945);
* a token that co-occurs with no teacher token (it never occurs in the bitext after tokenisation)
  takes the mean of all the teacher's input embeddings.

The result is a sentence-transformers folder (safetensors) with its own tokenizer.
``clirkit distill --student transfer`` (:class:`TransferStudent`) builds it from the run's
training pairs, cached under ``$CLIRKIT_CACHE/transfer/`` by the teacher's fingerprint, the texts
and the options, then fine-tunes it like any transformer student.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from clirkit.config import DistillConfig
from clirkit.distill.cache import CACHE_FORMAT, content_key
from clirkit.distill.pairs import Bitext
from clirkit.distill.students import STUDENTS, TransformerStudent, wordpiece_tokenizer
from clirkit.errors import ClirkitError

log = logging.getLogger("clirkit")

#: the student's special tokens, by the role the teacher's tokenizer names them
SPECIAL_ROLES = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
#: the ones :func:`clirkit.distill.students.wordpiece_tokenizer` does not already put in the vocabulary
ADDED_SPECIALS = ("[CLS]", "[SEP]", "[MASK]")
STATS_FILE = "transfer.json"


def _flatten(id_lists: list[list[int]], drop: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ids and offsets (the layout of :func:`clirkit.lexicon.dice_scores`)."""
    if drop:
        id_lists = [[i for i in x if i not in drop] for x in id_lists]
    lengths = np.fromiter((len(x) for x in id_lists), dtype=np.int64, count=len(id_lists))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    flat = np.fromiter((i for x in id_lists for i in x), dtype=np.int64, count=int(offsets[-1]))
    return flat, offsets


def top_n_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row, its ``n`` entries with the highest values (ties go to the lowest column id)."""
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    if not len(rows):
        return rows, cols, vals
    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.append(starts, len(rows))))
    keep = rank < n
    return rows[keep], cols[keep], vals[keep]


def _student_tokenizer(foreign_texts: list[str], vocab_size: int, max_length: int, cache: Path):
    """The static student's WordPiece tokenizer plus ``[CLS] [SEP] [MASK]`` and BERT's ``[CLS] $A [SEP]`` template."""
    from tokenizers import processors

    tok = wordpiece_tokenizer(foreign_texts, vocab_size - len(ADDED_SPECIALS), max_length, cache)
    tok.no_truncation()  # the Hugging Face wrapper truncates
    tok.add_special_tokens(list(ADDED_SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def transfer_embeddings(teacher_emb: np.ndarray, teacher_vocab: dict[str, int], teacher_specials: dict[str, int],
                        student_vocab: dict[str, int], student_ids: list[list[int]], teacher_ids: list[list[int]],
                        top_n: int) -> tuple[np.ndarray, dict[str, float | int]]:
    """Input embeddings for the student's vocabulary from the teacher's, through aligned sentences.

    Args:
        teacher_emb: (V_t, d) the teacher's input embeddings.
        teacher_vocab: teacher token string -> id.
        teacher_specials: student special token (``[CLS]`` ...) -> the teacher's id of that role.
        student_vocab: student token string -> id (ids ``0 .. V_s - 1``).
        student_ids: per aligned pair, the student's token ids of the foreign sentence.
        teacher_ids: per aligned pair, the teacher's token ids of the English sentence (specials excluded).
        top_n: teacher tokens averaged per student token.

    Returns:
        ``(V_s, d)`` float32 embeddings and counts/fractions of how each row was set
        (``special``, ``exact``, ``cooccurrence``, ``fallback``; fractions of ``V_s``).
    """
    from clirkit.lexicon import dice_scores

    n_s = len(student_vocab)
    if sorted(student_vocab.values()) != list(range(n_s)):
        raise ValueError("student ids must be 0 .. V_s - 1")
    f_ids, f_off = _flatten(student_ids)
    e_ids, e_off = _flatten(teacher_ids)
    rows, cols, dice = top_n_per_row(*dice_scores(f_ids, f_off, n_s, e_ids, e_off, len(teacher_emb)), top_n)
    weights = sp.csr_matrix((dice, (rows, cols)), shape=(n_s, len(teacher_emb)))
    totals = np.asarray(weights.sum(axis=1)).ravel()
    out = np.tile(teacher_emb.mean(axis=0, dtype=np.float64), (n_s, 1))
    has = totals > 0
    out[has] = (weights[has] @ teacher_emb.astype(np.float64)) / totals[has, None]
    how = np.where(has, "cooccurrence", "fallback").astype(object)
    for token, sid in student_vocab.items():
        if token in teacher_specials:
            out[sid], how[sid] = teacher_emb[teacher_specials[token]], "special"
        elif token in teacher_vocab:
            out[sid], how[sid] = teacher_emb[teacher_vocab[token]], "exact"
    stats: dict[str, float | int] = {"vocab_size": n_s, "top_n": top_n}
    for kind in ("special", "exact", "cooccurrence", "fallback"):
        count = int(np.sum(how == kind))
        stats[kind] = count
        stats[f"{kind}_fraction"] = count / n_s
    top1 = np.asarray(weights.max(axis=1).todense()).ravel()
    co = how == "cooccurrence"
    stats["mean_top1_dice"] = float(top1[co].mean()) if co.any() else 0.0
    return out.astype(np.float32), stats


def _teacher_model(teacher_folder: str | Path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    from clirkit.models import resolve

    ref = resolve(str(teacher_folder))
    if ref.kind == "hub":
        raise ClirkitError(f"teacher {teacher_folder!r} must be a local folder or a bundled alias",
                           fix="pass a sentence-transformers folder or 'minilm'")
    st = SentenceTransformer(ref.location, device="cpu")
    if not isinstance(st[0], Transformer) or st[0].tokenizer is None:
        raise ClirkitError("the teacher does not start with a text transformer", path=ref.location,
                           fix="pass a sentence-transformers folder built on a Hugging Face transformer")
    return st


def _truncated_model(auto_model, vocab_size: int, layers: int | None, embeddings: np.ndarray):
    """A fresh model of the teacher's architecture, with ``layers`` layers and the new input embeddings."""
    from transformers import AutoModel

    config = copy.deepcopy(auto_model.config)
    total = int(config.num_hidden_layers)
    if layers is not None and not 1 <= layers <= total:
        raise ClirkitError(f"layers={layers}, but the teacher has {total}", fix=f"pass 1 .. {total}")
    config.num_hidden_layers = layers or total
    config.vocab_size = vocab_size
    model = AutoModel.from_config(config)
    teacher_sd = auto_model.state_dict()
    emb_key = next(k for k, v in model.state_dict().items() if v.data_ptr() == model.get_input_embeddings()
                   .weight.data_ptr())
    new_sd = {}
    for key, value in model.state_dict().items():
        if key == emb_key:
            new_sd[key] = torch.from_numpy(embeddings)
        elif key in teacher_sd and teacher_sd[key].shape == value.shape:
            new_sd[key] = teacher_sd[key].detach().clone()
        else:  # a bug, not a user error: the layers are the teacher's by construction
            raise RuntimeError(f"no teacher weight for {key}")
    model.load_state_dict(new_sd)
    return model


def build_transfer_student(teacher_folder: str | Path, foreign_texts: list[str], english_texts: list[str],
                           vocab_size: int = 12000, layers: int | None = None, top_n: int = 5,
                           out_dir: str | Path = "transfer-student", seed: int = 0, *,
                           cache: Path | None = None) -> tuple[Path, dict]:
    """A sentence-transformers student with its own foreign vocabulary, initialised from the teacher.

    See the module docstring for the method (WECHSEL, Minixhofer et al. NAACL 2022; FOCUS,
    Dobler & de Melo EMNLP 2023; Dice coefficients of sentence co-occurrence, Dice 1945).

    Args:
        teacher_folder: the teacher (a sentence-transformers folder, a distill run or ``minilm``).
        foreign_texts: the foreign side of the training bitext (the WordPiece training text too).
        english_texts: the aligned English side.
        vocab_size: the student's vocabulary size, special tokens included.
        layers: keep only the teacher's first ``layers`` transformer layers (None: all).
        top_n: teacher tokens averaged for a student token (by Dice).
        out_dir: the folder written (replaced if it exists).
        seed: seeds torch before the model is built (every weight is then overwritten from the teacher).
        cache: where the trained tokenizer is cached (default ``$CLIRKIT_CACHE``).

    Returns:
        The folder, and stats: ``vocab_size``, counts and ``*_fraction`` of rows set by
        ``special``/``exact``/``cooccurrence``/``fallback`` (mean teacher embedding), ``layers``,
        ``pairs``, ``mean_top1_dice`` (also written to ``transfer.json`` in the folder).

    Raises:
        ClirkitError: no or unequal texts, ``top_n < 1``, ``layers`` out of range, a teacher
            that is not a text transformer.
    """
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer
    from transformers import PreTrainedTokenizerFast

    from clirkit.rundir import cache_root
    from clirkit.seeding import set_seed

    if not foreign_texts or len(foreign_texts) != len(english_texts):
        raise ClirkitError(f"need aligned texts: {len(foreign_texts)} foreign, {len(english_texts)} English",
                           fix="pass both sides of the training bitext")
    if top_n < 1:
        raise ClirkitError(f"top_n={top_n} must be >= 1", fix="pass a positive integer")
    set_seed(seed, torch_global=True)
    teacher = _teacher_model(teacher_folder)
    word = teacher[0]
    t_tok = word.tokenizer
    specials = {}
    for role, name in SPECIAL_ROLES.items():
        tid = getattr(t_tok, f"{role}_id", None)
        if tid is None:
            raise ClirkitError(f"the teacher's tokenizer has no {role}", fix="use a BERT-style teacher")
        specials[name] = int(tid)
    max_len = int(word.max_seq_length)
    tok = _student_tokenizer(foreign_texts, vocab_size, max_len, Path(cache) if cache else cache_root())
    s_ids = [e.ids for e in tok.encode_batch(foreign_texts, add_special_tokens=False)]
    t_ids = t_tok(english_texts, add_special_tokens=False, truncation=False)["input_ids"]
    t_special = set(t_tok.all_special_ids)
    t_ids_clean = [[i for i in x if i not in t_special] for x in t_ids]
    teacher_emb = word.auto_model.get_input_embeddings().weight.detach().float().numpy()
    emb, stats = transfer_embeddings(teacher_emb, t_tok.get_vocab(), specials, tok.get_vocab(with_added_tokens=True),
                                     s_ids, t_ids_clean, top_n)
    model = _truncated_model(word.auto_model, len(emb), layers, emb)
    stats.update(layers=int(model.config.num_hidden_layers), pairs=len(foreign_texts), seed=seed,
                 teacher=str(teacher_folder))

    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_len,
                                     **{role: name for role, name in SPECIAL_ROLES.items()})
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as raw:
        model.save_pretrained(raw, safe_serialization=True)
        hf_tok.save_pretrained(raw)
        student_word = Transformer(raw, max_seq_length=max_len)
        st = SentenceTransformer(modules=[student_word, *list(teacher)[1:]], device="cpu")
        if out.exists():
            shutil.rmtree(out)
        st.save(str(out), safe_serialization=True, create_model_card=False)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return out, stats


def cached_transfer_student(teacher, foreign_texts: list[str], english_texts: list[str], vocab_size: int,
                            layers: int | None, top_n: int, root: Path) -> Path:
    """The folder of :func:`build_transfer_student` for these inputs, built once under ``root/transfer/``.

    The key hashes the teacher's weights fingerprint, the options, the tokenizers version (it
    trains the vocabulary) and both sides of the texts. A folder is built under a temporary name
    and renamed into place, so the cache never holds a partial student; inside
    :func:`clirkit.rundir.fresh_run` nothing stored is reused.

    Args:
        teacher: the loaded teacher (:class:`clirkit.models.Encoder`: ``folder`` and ``fingerprint``).
        foreign_texts, english_texts, vocab_size, layers, top_n: as for :func:`build_transfer_student`.
        root: the cache root (:func:`clirkit.rundir.cache_root`).
    """
    import tokenizers

    meta = [CACHE_FORMAT, "transfer", teacher.fingerprint, vocab_size, layers, top_n, len(foreign_texts),
            tokenizers.__version__]
    folder = root / "transfer" / content_key(meta, [*foreign_texts, *english_texts])
    if (folder / STATS_FILE).is_file():  # inside a reproduction the cache root is a new, empty folder
        log.info("transfer student: %s (cached)", folder)
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        # seed 0: every weight is copied or computed from the teacher, so the seed changes nothing
        build_transfer_student(teacher.folder, foreign_texts, english_texts, vocab_size, layers, top_n, tmp,
                               seed=0, cache=root)
        with contextlib.suppress(OSError):  # OSError: another job finished the same entry first
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("transfer student: %s (built)", folder)
    return folder


@STUDENTS.register("transfer")
class TransferStudent(TransformerStudent):
    """The teacher's transformer reading the foreign language with its own vocabulary, then fine-tuned.

    Built by :func:`build_transfer_student` from the run's training pairs (options
    ``vocab_size``, ``student_layers``, ``transfer_top_n``); its saved folders carry the
    initialisation stats in ``transfer.json``, so a resumed run records them too.
    """

    def __init__(self, model, stats: dict[str, Any] | None = None) -> None:
        super().__init__(model)
        self.stats = dict(stats or {})

    @classmethod
    def prepare(cls, cfg: DistillConfig, teacher, device: str) -> None:
        """Fail before any work on a teacher without a text transformer or too few layers."""
        from sentence_transformers.sentence_transformer.modules import Transformer

        first = teacher.model[0]
        if not isinstance(first, Transformer) or first.tokenizer is None:
            raise ClirkitError(f"teacher {cfg.teacher!r} does not start with a text transformer, so it cannot "
                               f"give a transfer student its layers", fix="use --student static or copy")
        total = int(first.auto_model.config.num_hidden_layers)
        if cfg.student_layers is not None and cfg.student_layers > total:
            raise ClirkitError(f"--student-layers {cfg.student_layers}, but teacher {cfg.teacher!r} has {total}",
                               fix=f"pass 1 .. {total}, or leave it out for all")
        return None

    @classmethod
    def build(cls, cfg: DistillConfig, teacher, prepared: Any, bitext: Bitext, root: Path, device: str
              ) -> TransferStudent:
        """:func:`build_transfer_student` on the training pairs of ``bitext`` (cached), loaded for training.

        The vocabulary and the initial embeddings are statistics of the bitext, cheap to gather, so
        they use ``transfer_pairs`` training pairs (default: all of them), not only the
        ``max_pairs`` the student is then trained on; dev and test pairs are never read."""
        from clirkit.distill.ddp import all_gather, dist_env

        # Rank 0 of a torchrun job builds (transformers' save_pretrained writes nothing on the
        # other ranks of a process group); the others wait in the collective for its folder.
        env = dist_env()
        built = None
        if env.main:
            english, foreign = bitext.training_pairs(cfg.transfer_pairs)
            built = cached_transfer_student(teacher, foreign, english, cfg.vocab_size, cfg.student_layers,
                                            cfg.transfer_top_n, root)
        folder = Path(all_gather(env, str(built) if built else None)[0])
        student = cls.load(folder, cfg, device)
        st = student.stats
        log.info("transfer student: %d tokens (%.1f%% copied, %.1f%% by co-occurrence, mean top-1 Dice %.3f, "
                 "%.1f%% mean row), %d layers", st["vocab_size"], 100 * st["exact_fraction"],
                 100 * st["cooccurrence_fraction"], st["mean_top1_dice"], 100 * st["fallback_fraction"],
                 st["layers"])
        return student

    @classmethod
    def load(cls, path: Path, cfg: DistillConfig, device: str) -> TransferStudent:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device=device)
        st.max_seq_length = cfg.max_length
        stats_file = Path(path) / STATS_FILE
        return cls(st, json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.is_file() else None)

    def save(self, path: Path) -> None:
        super().save(path)
        (Path(path) / STATS_FILE).write_text(json.dumps(self.stats, indent=2), encoding="utf-8")

    def record(self, run) -> dict[str, Any]:
        """``student.vocab_size``, ``student.layers`` and ``student.transfer`` (how the embeddings were set)."""
        # counts and fractions of rows set by special/exact/cooccurrence/fallback, mean_top1_dice, top_n, pairs
        transfer = {k: v for k, v in self.stats.items() if k not in ("teacher", "seed", "vocab_size", "layers")}
        return {"vocab_size": self.vocab_size, "layers": int(self.model[0].auto_model.config.num_hidden_layers),
                "transfer": transfer}
