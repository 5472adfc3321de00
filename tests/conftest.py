"""Shared offline fixtures: a tiny random BERT sentence encoder and a 5-document BEIR dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-d BERT with mean pooling, saved as a sentence-transformers folder.

    It reuses the bundled MiniLM's WordPiece vocabulary so real text tokenises normally;
    weights are random but seeded, so its embeddings are deterministic.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from clirkit.models import resolve

    torch.manual_seed(0)
    minilm = Path(resolve("minilm").location)
    tok = BertTokenizerFast.from_pretrained(str(minilm))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    raw = tmp_path_factory.mktemp("tiny-bert-raw")
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=64)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    out = tmp_path_factory.mktemp("tiny-bert")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return out


DOCS = [
    ("d1", "The cat sat on the mat and purred."),
    ("d2", "Stock markets fell sharply on Monday."),
    ("d3", "A kitten sleeps on a warm rug."),
    ("d4", "The central bank raised interest rates."),
    ("d5", "Rain is expected over the mountains tomorrow."),
]
QUERIES = [("q1", "cat on a mat"), ("q2", "interest rates and markets"), ("q3", "weather forecast rain")]
QRELS = [("q1", "d1", 2), ("q1", "d3", 1), ("q2", "d4", 2), ("q2", "d2", 1), ("q3", "d5", 1)]


def write_beir(root: Path, docs=DOCS, queries=QUERIES, qrels=QRELS, card: dict | None = None) -> Path:
    """Write a BEIR folder (optionally with a clirkit card) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, t in docs:
            f.write(json.dumps({"_id": i, "title": "", "text": t, "lang": "en"}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, t in queries:
            f.write(json.dumps({"_id": i, "text": t, "lang": "en"}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in qrels:
            f.write(f"{q}\t{d}\t{s}\n")
    if card is not None:
        (root / "dataset.json").write_text(json.dumps(card), encoding="utf-8")
    return root


@pytest.fixture
def beir5(tmp_path) -> Path:
    """The 5-document BEIR fixture with a card, as `clirkit prepare` would leave it."""
    return write_beir(tmp_path / "beir5", card={"name": "beir5", "languages": {"query": "en", "document": "en"}})


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"
