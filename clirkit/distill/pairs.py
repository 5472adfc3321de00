"""The training data: English/foreign sentence pairs of a prepared bitext, and their on-the-fly perturbation.

The English side goes to the frozen teacher, the foreign side to the student (Reimers &
Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
EMNLP 2020, arXiv:2004.09813).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from clirkit.config import DistillConfig
from clirkit.data.formats import iter_bitext, read_card
from clirkit.errors import ClirkitError

log = logging.getLogger("clirkit")


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

    def training_pairs(self, limit: int | None) -> tuple[list[str], list[str]]:
        """The first ``limit`` (all: None) pairs of the training table, which may be more than the
        ``max_pairs`` distillation reads (``train_en``/``train_fx``); never dev or test pairs."""
        src, _, tgt = self.pair.partition("-")
        return read_pairs(self.files["bitext_train"], not (tgt == "en" and src != "en"), limit)


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


def read_pairs(path: Path, english_is_src: bool, limit: int | None = None) -> tuple[list[str], list[str]]:
    """The first ``limit`` (all: None) pairs of a bitext table as (English side, foreign side)."""
    en: list[str] = []
    fx: list[str] = []
    for _, s, t in iter_bitext(path):
        if limit is not None and len(en) >= limit:
            break
        en.append(s if english_is_src else t)
        fx.append(t if english_is_src else s)
    return en, fx


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
        return read_pairs(path, english_is_src, limit)

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


def parse_augment(cfg: DistillConfig):
    """The perturbation spec of ``--augment`` (None without it); a bad spec is a ClirkitError."""
    if not cfg.augment:
        return None
    from clirkit.perturb import parse_spec

    return parse_spec(cfg.augment)


def augmented(spec, texts: list[str], rows, seed: int, epoch: int) -> list[str]:
    """``texts[r]`` for ``r`` in ``rows``, perturbed by ``spec``, each (epoch, row) by its own seeded
    generator, so a resumed run sees the same noise (robust distillation: the student learns to
    map noisy text to the clean teacher)."""
    from clirkit.perturb import text_rng

    return [spec.apply(texts[r], text_rng(seed, epoch * len(texts) + int(r))) for r in rows]
