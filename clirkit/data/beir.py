"""Import any BEIR-layout dataset (Thakur et al., NeurIPS 2021 Datasets & Benchmarks).

Reads ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/*.tsv`` as
``beir.datasets.data_loader.GenericDataLoader`` expects them, validates every line and id,
and writes the canonical copy with a dataset card (adding ``lang`` where missing).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from clirkit.config import Config
from clirkit.data.formats import QRELS_HEADER, DatasetWriter, iter_jsonl, iter_tsv
from clirkit.errors import ClirkitError


class BeirConfig(Config):
    """Options of ``clirkit prepare beir``."""

    folder: Path = Field(..., description="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    out: Path | None = Field(None, description="output folder (default data/<source folder name>)")
    query_lang: str = Field("", description="language of the queries when records have no 'lang'")
    doc_lang: str = Field("", description="language of the documents when records have no 'lang'")
    licence: str = Field("unknown", description="the dataset's licence, recorded in the card")


def prepare_beir(cfg: BeirConfig) -> Path:
    """Validate a BEIR folder and write its canonical copy; return the new folder."""
    src = cfg.folder
    if not src.is_dir():
        raise ClirkitError("BEIR folder not found", path=src, fix="pass a folder holding corpus.jsonl")
    qrel_files = sorted((src / "qrels").glob("*.tsv"))
    if not qrel_files:
        raise ClirkitError("no qrels/<split>.tsv files", path=src / "qrels", fix="BEIR datasets keep qrels in qrels/")
    out = cfg.out or Path("data") / src.name
    with DatasetWriter(out, out.name, prepared_with=cfg) as w:
        doc_ids: set[str] = set()
        for n, rec in iter_jsonl(src / "corpus.jsonl", ("_id",)):
            if rec["_id"] in doc_ids:
                raise ClirkitError(f"duplicate document id {rec['_id']!r}", path=src / "corpus.jsonl", line=n)
            doc_ids.add(rec["_id"])
            w.add_doc(rec["_id"], str(rec.get("text") or ""), str(rec.get("lang") or cfg.doc_lang),
                      title=str(rec.get("title") or ""))
        if not doc_ids:
            raise ClirkitError("the corpus is empty", path=src / "corpus.jsonl", fix="add documents")
        query_ids: set[str] = set()
        for n, rec in iter_jsonl(src / "queries.jsonl", ("_id", "text")):
            if rec["_id"] in query_ids:
                raise ClirkitError(f"duplicate query id {rec['_id']!r}", path=src / "queries.jsonl", line=n)
            query_ids.add(rec["_id"])
            w.add_query(rec["_id"], rec["text"], str(rec.get("lang") or cfg.query_lang))
        for qf in qrel_files:
            for n, (qid, did, score) in iter_tsv(qf, header=QRELS_HEADER):
                if qid not in query_ids:
                    raise ClirkitError(f"qrels name unknown query id {qid!r}", path=qf, line=n,
                                       fix="every query-id must be in queries.jsonl")
                if did not in doc_ids:
                    raise ClirkitError(f"qrels name unknown document id {did!r}", path=qf, line=n,
                                       fix="every corpus-id must be in corpus.jsonl")
                try:
                    w.add_qrel(qf.stem, qid, did, int(score))
                except ValueError:
                    raise ClirkitError(f"score {score!r} is not an integer", path=qf, line=n) from None
        w.finish(source=f"BEIR folder {src}", licence=cfg.licence, kind="clir",
                 languages={"query": cfg.query_lang, "document": cfg.doc_lang})
    return out
