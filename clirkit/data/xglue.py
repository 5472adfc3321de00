"""XGLUE's three search-engine tasks (WPR, QAM, QADSM): readers and model-independent scoring.

Reference:
    Liang, Duan, Gong, et al. "XGLUE: A New Benchmark Dataset for Cross-lingual Pre-training,
    Understanding and Generation." EMNLP 2020, arXiv:2004.01401. Data: the Microsoft XGLUE release
    (https://microsoft.github.io/XGLUE/, downloaded after accepting its terms of use; the repository's
    ``Data_Format.txt`` and ``evaluation/xglue_evaluate.py`` define the formats and the scoring).

Files (tab-separated, no header, no quoting), in ``<dir>/<TASK>/`` as in ``xglue_full_dataset/``
or flat in ``<dir>/``::

    WPR/xglue.wpr.<lang>.{dev,test}      query \\t page title \\t page snippet \\t label (0-4)
    QAM/xglue.qam.<lang>.{dev,test}      question \\t passage \\t label (0/1)
    QADSM/xglue.qadsm.<lang>.{dev,test}  query \\t ad title \\t ad description \\t label (Good/Bad; 1/0 accepted)

Test files were first released without the label column; such files load (for attacks) but
cannot be scored. A dev row without a label is an error naming the file and line.

Scoring takes any ``encode(texts) -> np.ndarray`` of L2-normalised rows and uses the cosine:

* WPR, as ``xglue_evaluate.py`` does: consecutive rows with the same query (the raw first field)
  form one group, groups with fewer than 2 rows are skipped, each group is scored with
  ``sklearn.metrics.ndcg_score`` (no cutoff: linear gain, 1/log2(rank+1) discount, tied scores
  averaged) and the groups are averaged -- the very function the official script calls, so the
  numbers match it exactly. nDCG@10 over the same groups comes from ir_measures (pytrec_eval;
  ties broken by trec_eval's docno order). The score of a row is cos(query, title + " " + snippet).
* QAM and QADSM: accuracy of "cosine >= threshold", where the threshold maximises accuracy on
  the English dev set and is then applied unchanged to every language (zero-shot transfer, as
  XGLUE trains on English only). The texts compared are (question, passage) and
  (query, ad title + " " + ad description).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from clirkit.config import Config
from clirkit.data.formats import iter_lines
from clirkit.errors import ClirkitError

if TYPE_CHECKING:
    import pandas as pd

Encode = Callable[[list[str]], np.ndarray]

#: task -> (folder, languages, number of text columns)
TASKS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "wpr": ("WPR", ("de", "en", "es", "fr", "it", "pt", "zh"), 3),
    "qam": ("QAM", ("de", "en", "fr"), 2),
    "qadsm": ("QADSM", ("de", "en", "fr"), 3),
}
_WPR_NAMES = {"perfect": 4, "excellent": 3, "good": 2, "fair": 1, "bad": 0}
_QADSM_NAMES = {"good": 1, "bad": 0}
SOURCE = ("the Microsoft XGLUE release (https://microsoft.github.io/XGLUE/; accept its terms of use there "
          "to get the download link -- its licence/terms are as stated there)")


@dataclass
class XGlueData:
    """One XGLUE file, row-aligned.

    Attributes:
        task, lang, split, path: what was read.
        queries: the query (WPR, QADSM) or question (QAM) of each row.
        docs: the text compared with it: title + " " + snippet (WPR), passage (QAM),
            ad title + " " + ad description (QADSM).
        labels: integer label of each row (WPR 0-4, QAM/QADSM 0/1), or None for an unlabelled test file.
        groups: group index of each row: WPR rows with the same consecutive query share one
            (as in xglue_evaluate.py); QAM/QADSM rows are their own group.
        lines: the 1-based file line of each row.
    """

    task: str
    lang: str
    split: str
    path: Path
    queries: list[str]
    docs: list[str]
    labels: list[int] | None
    groups: list[int]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def n_groups(self) -> int:
        return self.groups[-1] + 1 if self.groups else 0

    def group_queries(self) -> list[str]:
        """One query per group, in group order (what an attack perturbs)."""
        out: list[str] = []
        for g, q in zip(self.groups, self.queries, strict=True):
            if g == len(out):
                out.append(q)
        return out

    def with_group_queries(self, new: Sequence[str]) -> XGlueData:
        """A copy whose every row uses ``new[group]`` as its query (e.g. perturbed queries)."""
        if len(new) != self.n_groups:
            raise ValueError(f"expected {self.n_groups} queries (one per group), got {len(new)}")
        return replace(self, queries=[new[g] for g in self.groups])


class XGlueConfig(Config):
    """Options of an XGLUE evaluation (``clirkit eval xglue``)."""

    task: Literal["wpr", "qam", "qadsm"] = Field(
        "wpr", description="XGLUE task: wpr (web page ranking, nDCG), qam (QA matching, accuracy), "
                           "qadsm (query-ad matching, accuracy).")
    langs: list[str] | None = Field(None, description="Languages to score (default: all of the task's languages).")
    data_dir: Path | None = Field(None, description="XGLUE folder (default $CLIRKIT_XGLUE_DIR, then data/xglue).")
    split: Literal["dev", "test"] = Field("dev", description="Which files to score (test needs the labelled release).")

    @field_validator("task", mode="before")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower() if isinstance(v, str) else v


def _task(task: str) -> tuple[str, str, tuple[str, ...], int]:
    t = task.lower()
    if t not in TASKS:
        raise ClirkitError(f"unknown XGLUE task {task!r}", fix=f"use one of: {', '.join(TASKS)}")
    return (t, *TASKS[t])


def xglue_dir(data_dir: str | Path | None = None) -> Path:
    """The XGLUE folder: ``data_dir``, else ``$CLIRKIT_XGLUE_DIR``, else ``data/xglue``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("CLIRKIT_XGLUE_DIR")
    return Path(env) if env else Path("data/xglue")


def _find(root: Path, folder: str, name: str) -> Path:
    for p in (root / folder / name, root / name, root / "xglue_full_dataset" / folder / name):
        if p.is_file():
            return p
    layout = "WPR/xglue.wpr.<lang>.dev, QAM/xglue.qam.<lang>.dev, QADSM/xglue.qadsm.<lang>.dev (or the same files flat)"
    where = "folder not found" if not root.is_dir() else f"no {folder}/{name}"
    raise ClirkitError(f"XGLUE data missing: {where}", path=root,
                       fix=f"XGLUE comes from {SOURCE}; unpack xglue_full_dataset so this folder holds {layout}, "
                           "or point $CLIRKIT_XGLUE_DIR / --data-dir at it")


def _label(task: str, text: str, path: Path, n: int) -> int:
    t = text.strip()
    names = _WPR_NAMES if task == "wpr" else _QADSM_NAMES if task == "qadsm" else {}
    if t.lower() in names:
        return names[t.lower()]
    allowed = range(5) if task == "wpr" else range(2)
    try:
        v = int(float(t))
        if v in allowed and float(t) == v:
            return v
    except ValueError:
        pass
    want = "0-4" if task == "wpr" else "Good/Bad (or 1/0)" if task == "qadsm" else "0 or 1"
    raise ClirkitError(f"label {t!r} is not {want}", path=path, line=n, fix="check that this is an XGLUE file")


def load_xglue(task: str, lang: str, split: str = "dev", data_dir: str | Path | None = None) -> XGlueData:
    """Read one official XGLUE file (WPR, QAM or QADSM) into row-aligned lists.

    Args:
        task: "wpr", "qam" or "qadsm" (any case).
        lang: ISO 639-1 code among the task's languages.
        split: "dev" or "test" (or "train" for English).
        data_dir: the XGLUE folder (default ``$CLIRKIT_XGLUE_DIR``, then ``data/xglue``).

    Raises:
        ClirkitError: unknown task/language, missing file (saying where XGLUE comes from), wrong
            column count, a labelled file's row without a label, a bad label.
    """
    t, folder, langs, ntext = _task(task)
    lang = lang.lower()
    if lang not in langs:
        raise ClirkitError(f"XGLUE {folder} has no language {lang!r}", fix=f"use one of: {', '.join(langs)}")
    path = _find(xglue_dir(data_dir), folder, f"xglue.{t}.{lang}.{split}")
    queries: list[str] = []
    docs: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    lines: list[int] = []
    labelled: bool | None = True if split in ("dev", "train") else None
    group, last = 0, ""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        while len(cols) > ntext + 1 and not cols[-1].strip():
            cols.pop()  # trailing tabs
        if len(cols) == ntext + 1 and not cols[-1].strip():
            cols.pop()  # an empty label column is a missing label
        if len(cols) not in (ntext, ntext + 1):
            raise ClirkitError(f"expected {ntext + 1} tab-separated columns (or {ntext} in an unlabelled test "
                               f"file), found {len(cols)}", path=path, line=n,
                               fix=f"check that this is an XGLUE {folder} file")
        has_label = len(cols) == ntext + 1
        if labelled is None:
            labelled = has_label
        if has_label != labelled:
            if labelled:
                raise ClirkitError(f"row without a label in a labelled {split} file", path=path, line=n,
                                   fix=f"every {split} row needs its label as the last column")
            raise ClirkitError("row with a label in an unlabelled file", path=path, line=n,
                               fix="the file mixes labelled and unlabelled rows")
        if t == "wpr" and cols[0] != last and last:
            group += 1  # xglue_evaluate.py: a new group starts when the raw query changes
        last = cols[0]
        queries.append(cols[0].strip())
        docs.append(cols[1].strip() if ntext == 2 else f"{cols[1].strip()} {cols[2].strip()}".strip())
        if has_label:
            labels.append(_label(t, cols[-1], path, n))
        groups.append(group if t == "wpr" else len(groups))
        lines.append(n)
    if not queries:
        raise ClirkitError("no rows", path=path, fix="the file is empty")
    return XGlueData(task=t, lang=lang, split=split, path=path, queries=queries, docs=docs,
                     labels=labels if labelled else None, groups=groups, lines=lines)


# --------------------------------------------------------------------------- scoring


def cosine_pairs(encode: Encode, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """cos(a[i], b[i]) for each i, encoding every distinct text once.

    Rows are re-normalised defensively (an encoder that forgets to normalise still gives cosines);
    a zero vector scores 0.
    """
    uniq = list(dict.fromkeys([*a, *b]))
    emb = np.asarray(encode(uniq), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(uniq):
        raise ValueError(f"encode returned shape {emb.shape} for {len(uniq)} texts; expected ({len(uniq)}, dim)")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    idx = {t: i for i, t in enumerate(uniq)}
    ea = emb[[idx[t] for t in a]]
    eb = emb[[idx[t] for t in b]]
    return np.einsum("ij,ij->i", ea, eb)


def _require_labels(data: XGlueData) -> list[int]:
    if data.labels is None:
        raise ClirkitError(f"{data.path.name} has no labels, so it cannot be scored", path=data.path,
                           fix="score the dev split (or a labelled test release); unlabelled files can still be "
                               "loaded with load_xglue for attacks")
    return data.labels


def wpr_ndcg(labels: Sequence[float], scores: Sequence[float], groups: Sequence[int]) -> tuple[float, int]:
    """The official XGLUE WPR nDCG: mean over groups of >= 2 rows of ``sklearn.metrics.ndcg_score``.

    This mirrors ``simple_ndcg`` in XGLUE's ``evaluation/xglue_evaluate.py`` (which calls
    ``sklearn.metrics.ndcg_score(np.asarray([labels]), np.asarray([preds]))`` per group, no cutoff).

    Returns:
        (mean nDCG, number of groups scored); (nan, 0) when no group has 2 rows.
    """
    from sklearn.metrics import ndcg_score

    by_group: dict[int, tuple[list[float], list[float]]] = {}
    for g, y, s in zip(groups, labels, scores, strict=True):
        ys, ss = by_group.setdefault(g, ([], []))
        ys.append(float(y))
        ss.append(float(s))
    values = [ndcg_score(np.asarray([ys]), np.asarray([ss])) for ys, ss in by_group.values() if len(ys) >= 2]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def wpr_ndcg_at_10(labels: Sequence[int], scores: Sequence[float], groups: Sequence[int]) -> float:
    """nDCG@10 over the same groups (>= 2 rows), computed by ir_measures (pytrec_eval)."""
    import ir_measures

    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for i, (g, y, s) in enumerate(zip(groups, labels, scores, strict=True)):
        if sizes[g] < 2:
            continue
        qrels.setdefault(f"g{g}", {})[f"r{i}"] = int(y)
        run.setdefault(f"g{g}", {})[f"r{i}"] = float(s)
    if not qrels:
        return float("nan")
    measure = ir_measures.parse_measure("nDCG@10")
    return float(ir_measures.calc_aggregate([measure], qrels, run)[measure])


def score_wpr(data: XGlueData, scores: Encode | Sequence[float] | np.ndarray) -> dict[str, float]:
    """Score a labelled WPR file: official XGLUE nDCG, nDCG@10, and the number of groups scored.

    ``scores`` is one relevance score per row, or an ``encode`` function that yields them (cosine).
    """
    labels = _require_labels(data)
    if callable(scores):
        scores = cosine_pairs(scores, data.queries, data.docs)
    ndcg, n = wpr_ndcg(labels, scores, data.groups)
    return {"nDCG_xglue": ndcg, "nDCG@10": wpr_ndcg_at_10(labels, scores, data.groups), "queries": n, "rows": len(data)}


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """The cosine threshold maximising the accuracy of "score >= threshold" -> label 1.

    Every cut between two distinct sorted scores is tried (plus "all 1" and "all 0"); the cut is
    placed halfway between the neighbouring scores and, among equally accurate cuts, the lowest wins.

    Returns:
        (threshold, accuracy on these scores).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(s) == 0:
        raise ValueError("no scores")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    zeros_below = np.concatenate([[0], np.cumsum(y == 0)])          # k rows predicted 0
    ones_above = int((y == 1).sum()) - np.concatenate([[0], np.cumsum(y == 1)])
    correct = zeros_below + ones_above
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]  # a cut inside a run of equal scores is not realisable
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if k == 0:
        thr = float(s[0])
    elif k == n:
        thr = float(np.nextafter(s[-1], np.inf))
    else:
        thr = float((s[k - 1] + s[k]) / 2)
    return thr, float(correct[k] / n)


def pair_scores(data: XGlueData, encode: Encode) -> np.ndarray:
    """cos(query/question, doc) for every row of a QAM or QADSM file."""
    return cosine_pairs(encode, data.queries, data.docs)


def accuracy(data: XGlueData, predicted: Encode | Sequence[int] | np.ndarray, threshold: float | None = None) -> float:
    """Accuracy on a labelled QAM/QADSM file of 0/1 ``predicted`` labels, or of "cosine >= threshold"
    when ``predicted`` is an ``encode`` function."""
    labels = np.asarray(_require_labels(data))
    if callable(predicted):
        if threshold is None:
            raise ValueError("an encode function needs a threshold")
        predicted = (pair_scores(data, predicted) >= threshold).astype(int)
    return float((np.asarray(predicted, dtype=np.int64) == labels).mean())


def run_xglue(task: str, langs: Sequence[str] | None, data_dir: str | Path | None, encode: Encode,
              *, split: str = "dev", predictions_dir: str | Path | None = None) -> pd.DataFrame:
    """Score one XGLUE task for several languages with a model-independent ``encode``.

    WPR: official XGLUE nDCG (see :func:`wpr_ndcg`) and nDCG@10 per language. QAM/QADSM: a cosine
    threshold is fixed on the English dev set (maximising accuracy, :func:`best_threshold`) and
    applied to every language's ``split`` file (zero-shot cross-lingual transfer).

    Args:
        task: "wpr", "qam" or "qadsm".
        langs: languages to score (None = all of the task's languages).
        data_dir: XGLUE folder (None = ``$CLIRKIT_XGLUE_DIR``, then ``data/xglue``).
        encode: ``texts -> np.ndarray`` with one L2-normalised row per text.
        split: "dev" (default) or a labelled "test".
        predictions_dir: if given, also write the official prediction files there,
            ``<predictions_dir>/<TASK>/<lang>.prediction`` (see :func:`write_xglue_predictions`).

    Returns:
        A DataFrame indexed by language, with an ``avg`` row (the mean over languages, as the
        official script averages), columns ``nDCG_xglue, nDCG@10, queries, rows`` (WPR) or
        ``accuracy, threshold, rows`` (QAM/QADSM).
    """
    import pandas as pd  # heavy; only scoring needs it

    t, folder, known, _ = _task(task)
    langs = list(known) if langs is None else [x.lower() for x in langs]
    for x in langs:
        if x not in known:
            raise ClirkitError(f"XGLUE {folder} has no language {x!r}", fix=f"use one of: {', '.join(known)}")
    rows: dict[str, dict[str, float]] = {}
    if t == "wpr":
        for x in langs:
            data = load_xglue(t, x, split, data_dir)
            scores = cosine_pairs(encode, data.queries, data.docs)
            if predictions_dir is not None:
                write_xglue_predictions(t, x, scores, prediction_path(predictions_dir, t, x))
            rows[x] = score_wpr(data, scores)
        metrics = ["nDCG_xglue", "nDCG@10"]
    else:
        en_dev = load_xglue(t, "en", "dev", data_dir)
        thr, _ = best_threshold(pair_scores(en_dev, encode), _require_labels(en_dev))
        for x in langs:
            data = en_dev if (x == "en" and split == "dev") else load_xglue(t, x, split, data_dir)
            predicted = (pair_scores(data, encode) >= thr).astype(int)
            if predictions_dir is not None:
                write_xglue_predictions(t, x, predicted, prediction_path(predictions_dir, t, x))
            rows[x] = {"accuracy": accuracy(data, predicted), "threshold": thr, "rows": len(data)}
        metrics = ["accuracy"]
    df = pd.DataFrame.from_dict(rows, orient="index")
    avg = {c: float(df[c].mean()) for c in metrics}
    for c in df.columns:
        if c not in avg:
            avg[c] = float(df[c].iloc[0]) if c == "threshold" else float(df[c].sum())
    df.loc["avg"] = avg
    df.index.name = "lang"
    return df


def evaluate_xglue(cfg: XGlueConfig, encode: Encode) -> pd.DataFrame:
    """:func:`run_xglue` driven by an :class:`XGlueConfig` (what the CLI builds)."""
    return run_xglue(cfg.task, cfg.langs, cfg.data_dir, encode, split=cfg.split)


# --------------------------------------------------------------------------- official prediction files

#: how each task's prediction line spells a 0/1 decision (QADSM's labels are Good/Bad in the release)
_PREDICTION_LABELS = {"qam": ("0", "1"), "qadsm": ("Bad", "Good")}


def prediction_path(root: str | Path, task: str, lang: str) -> Path:
    """``<root>/<TASK>/<lang>.prediction``, where XGLUE's ``xglue_evaluate.py --prediction_dir root`` reads it."""
    t, folder, _, _ = _task(task)
    return Path(root) / folder / f"{lang.lower()}.prediction"


def write_xglue_predictions(task: str, lang: str, values: Sequence[float] | np.ndarray, path: str | Path) -> Path:
    """Write one XGLUE prediction file in the official submission format.

    Format (microsoft/XGLUE ``evaluation/README.md``, "prediction file format", read by
    ``evaluation/xglue_evaluate.py``): a plain-text file ``<TASK>/<lang>.prediction`` (e.g.
    ``WPR/de.prediction``) inside the folder passed as ``--prediction_dir``, with exactly one line per
    row of the input file ``<TASK>/xglue.<task>.<lang>.<split>``, line i answering row i:

    * WPR: the row's relevance score. The script reads it with ``float()`` and ranks each query's
      rows by it for nDCG, so a real-valued score is accepted (the README lists graded labels 0-4 as
      the example; any number that orders the rows works). Written with ``repr`` precision so the
      ranking, ties included, is exactly the one scored here.
    * QAM: the predicted label, ``0`` or ``1``.
    * QADSM: the predicted label, ``Good`` or ``Bad`` (the script compares strings with the labels).

    Args:
        task: "wpr", "qam" or "qadsm".
        lang: the language code (file name).
        values: WPR scores, or QAM/QADSM 0/1 decisions, one per input row.
        path: where to write; :func:`prediction_path` gives the official place under a folder.

    Returns:
        ``path``. The file is written to a temporary name and renamed, so it is complete or absent.
    """
    t, _, langs, _ = _task(task)
    if lang.lower() not in langs:
        raise ClirkitError(f"XGLUE {t.upper()} has no language {lang!r}", fix=f"use one of: {', '.join(langs)}")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected one value per row, got shape {arr.shape}")
    if t == "wpr":
        lines = [repr(float(v)) for v in arr]
    else:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{t} predictions must be 0/1 labels")
        names = _PREDICTION_LABELS[t]
        lines = [names[int(v)] for v in arr]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def score_xglue_predictions(task: str, labels_file: str | Path, prediction_file: str | Path) -> float:
    """Score one prediction file against one XGLUE label file as ``xglue_evaluate.py`` does.

    A re-implementation of the official scorer's reading, grouping and metric (microsoft/XGLUE
    ``evaluation/xglue_evaluate.py``: ``load_data``, ``simple_accuracy``, ``simple_ndcg``), used to
    check that the files :func:`write_xglue_predictions` writes score what clirkit reports:

    * every line of both files is one row; the label is the label file's last tab field, stripped;
      the prediction is the stripped line;
    * WPR: a new group starts whenever the raw first field (the query) differs from the previous
      row's; each group with at least 2 rows scores ``sklearn.metrics.ndcg_score`` (labels as gains,
      the float predictions as ranking scores, no cutoff); the result is the mean over groups;
    * QAM, QADSM: accuracy, the share of rows whose prediction string equals the label string.

    Unlike the official script (which ``zip``s and silently truncates), different row counts are
    a ClirkitError.

    Raises:
        ClirkitError: unknown task, missing file, different numbers of rows.
    """
    from sklearn.metrics import ndcg_score

    t, _, _, _ = _task(task)
    labels_file, prediction_file = Path(labels_file), Path(prediction_file)
    for f in (labels_file, prediction_file):
        if not f.is_file():
            raise ClirkitError("file not found", path=f, fix="check the path")
    rows = labels_file.read_text(encoding="utf-8").splitlines()
    preds = [x.strip() for x in prediction_file.read_text(encoding="utf-8").splitlines()]
    if len(rows) != len(preds):
        raise ClirkitError(f"{len(preds)} predictions for {len(rows)} rows of {labels_file.name}",
                           path=prediction_file, fix="write one prediction line per input row, in order")
    labels = [r.split("\t")[-1].strip() for r in rows]
    if t != "wpr":
        return float(np.mean([p == y for p, y in zip(preds, labels, strict=True)]))
    groups: list[int] = []
    guid, last = 0, ""
    for r in rows:
        query = r.split("\t")[0]
        if query != last and last:
            guid += 1
        last = query
        groups.append(guid)
    by_group: dict[int, tuple[list[float], list[float]]] = {}
    for g, p, y in zip(groups, preds, labels, strict=True):
        ps, ys = by_group.setdefault(g, ([], []))
        ps.append(float(p))
        ys.append(float(y))
    values = [ndcg_score(np.asarray([ys]), np.asarray([ps])) for ps, ys in by_group.values() if len(ys) >= 2]
    return float(np.mean(values))
