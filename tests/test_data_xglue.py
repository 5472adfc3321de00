"""XGLUE WPR/QAM/QADSM: official-format readers and model-independent scoring checked by hand."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from clirkit.data.xglue import (
    XGlueConfig,
    best_threshold,
    evaluate_xglue,
    load_xglue,
    prediction_path,
    run_xglue,
    score_wpr,
    score_xglue_predictions,
    wpr_ndcg,
    wpr_ndcg_at_10,
    write_xglue_predictions,
)
from clirkit.errors import ClirkitError

FIX = Path(__file__).parent / "fixtures" / "xglue"


def cosine_encoder(doc_cos: dict[str, float]):
    """A fake encoder: every text not in ``doc_cos`` maps to e1, doc text d to (c, sqrt(1 - c^2)), so cos = c."""

    def encode(texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            c = doc_cos.get(t)
            rows.append([1.0, 0.0] if c is None else [c, math.sqrt(1 - c * c)])
        return np.asarray(rows)

    return encode


# WPR en dev (tests/fixtures/xglue/WPR/xglue.wpr.en.dev), doc text = title + " " + snippet
WPR_EN = {
    "Cheap Flights to Anywhere Compare cheap flights and find deals.": 0.2,    # label 4
    "Flight status Check the status of your flight.": 0.9,                     # label 1
    "Hotel deals Book hotels at low prices.": 0.5,                             # label 0
    "The Python Tutorial This tutorial introduces Python.": 0.7,               # label 3
    "Python snakes Pythons are large snakes.": 0.1,                            # label 0
    "Single row group Only one candidate here.": 0.4,                          # label 2 (group of 1: skipped)
    "Cheap flights again A later, separate group with the same query.": 0.3,   # label 2
    "Airline news News about airlines.": 0.6,                                  # label 0
}


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_wpr_groups_follow_the_official_script():
    d = load_xglue("WPR", "en", "dev", FIX)
    # a new group starts whenever the query differs from the previous row's, so the second
    # "cheap flights" run is its own group, as in xglue_evaluate.py
    assert d.groups == [0, 0, 0, 1, 1, 2, 3, 3]
    assert d.labels == [4, 1, 0, 3, 0, 2, 2, 0]
    assert d.group_queries() == ["cheap flights", "python tutorial", "lonely query", "cheap flights"]
    assert d.docs[0] == "Cheap Flights to Anywhere Compare cheap flights and find deals."
    assert d.lines == list(range(1, 9))


def test_wpr_ndcg_by_hand():
    d = load_xglue("wpr", "en", "dev", FIX)
    res = score_wpr(d, cosine_encoder(WPR_EN))
    # group 0: ranked by cosine -> labels [1, 0, 4]; ideal [4, 1, 0]; linear gain, log2(rank + 1)
    g0 = dcg([1, 0, 4]) / dcg([4, 1, 0])
    g1 = dcg([3, 0]) / dcg([3, 0])          # = 1
    g3 = dcg([0, 2]) / dcg([2, 0])
    expected = (g0 + g1 + g3) / 3            # the single-row group is skipped
    assert res["nDCG_xglue"] == pytest.approx(expected, abs=1e-12)
    assert res["queries"] == 3 and res["rows"] == 8
    # no ties and groups shorter than 10: trec_eval's nDCG@10 agrees with the official no-cutoff value
    assert res["nDCG@10"] == pytest.approx(expected, abs=1e-9)


def test_wpr_ndcg_averages_ties_like_sklearn():
    # tied scores: sklearn (and so xglue_evaluate.py) averages the gains over the tied ranks
    value, n = wpr_ndcg([1, 0], [0.5, 0.5], [0, 0])
    assert n == 1 and value == pytest.approx(0.5 * (1 + 1 / math.log2(3)))
    assert math.isnan(wpr_ndcg([1], [0.3], [0])[0])


def test_wpr_ndcg_at_10_cuts_off():
    labels = [0] * 10 + [3]
    scores = [1.0 - i / 100 for i in range(11)]     # the only relevant row ranks 11th
    assert wpr_ndcg_at_10(labels, scores, [0] * 11) == 0.0
    assert wpr_ndcg(labels, scores, [0] * 11)[0] == pytest.approx(3 / math.log2(12) / 3)


def test_wpr_unlabelled_test_file_loads_but_cannot_be_scored():
    d = load_xglue("wpr", "de", "test", FIX)
    assert d.labels is None and d.groups == [0, 0, 1]
    with pytest.raises(ClirkitError, match="has no labels, so it cannot be scored"):
        score_wpr(d, cosine_encoder({}))


def test_bom_crlf_and_trailing_tabs():
    d = load_xglue("wpr", "de", "dev", FIX)
    assert d.queries[0] == "günstige flüge" and d.labels == [3, 1, 0, 4, 0]


def test_dev_row_without_label_names_file_and_line():
    path = FIX / "broken/WPR/xglue.wpr.en.dev"
    with pytest.raises(ClirkitError, match=rf"{path}:2: row without a label"):
        load_xglue("wpr", "en", "dev", FIX / "broken")


def test_bad_label_names_file_and_line():
    with pytest.raises(ClirkitError, match=r"xglue.qam.en.dev:1: label '7' is not 0 or 1"):
        load_xglue("qam", "en", "dev", FIX / "broken")


QAM = {
    # en dev: labels 1 0 1 0 1 1
    "Nairobi is the capital of Kenya.": 0.8, "Kenya has many national parks.": 0.3,
    "Kilimanjaro is 5,895 metres tall.": 0.7, "Tanzania borders Kenya.": 0.4,
    "Hamlet was written by William Shakespeare.": 0.9, "Denmark is in Europe.": 0.35,
    # de dev: labels 1 0 1 0
    "Nairobi ist die Hauptstadt Kenias.": 0.6, "Kenia hat viele Nationalparks.": 0.31,
    "Hamlet wurde von William Shakespeare geschrieben.": 0.5, '"Dänemark" liegt in Europa.': 0.33,
    # fr dev: labels 1 0
    "Nairobi est la capitale du Kenya.": 0.9, "Le Kenya a de nombreux parcs.": 0.2,
}


def test_threshold_fixed_on_english_dev_and_transferred():
    df = run_xglue("qam", None, FIX, cosine_encoder(QAM))
    # en sorted: .30(0) .35(1) .40(0) .70(1) .80(1) .90(1); cuts after .30 and after .40 both give 5/6;
    # the lower one wins: threshold halfway between .30 and .35
    assert list(df.index) == ["de", "en", "fr", "avg"]
    assert df.loc["en", "threshold"] == pytest.approx(0.325)
    assert df.loc["en", "accuracy"] == pytest.approx(5 / 6)
    assert df.loc["de", "threshold"] == pytest.approx(0.325)  # the English threshold, unchanged
    assert df.loc["de", "accuracy"] == pytest.approx(3 / 4)   # .33 >= .325 is a false positive
    assert df.loc["fr", "accuracy"] == pytest.approx(1.0)
    assert df.loc["avg", "accuracy"] == pytest.approx((5 / 6 + 3 / 4 + 1) / 3)
    assert df.loc["avg", "rows"] == 12


def test_best_threshold_edges():
    assert best_threshold([0.1, 0.2], [1, 1]) == (0.1, 1.0)          # everything positive
    thr, acc = best_threshold([0.1, 0.2], [0, 0])
    assert acc == 1.0 and thr > 0.2                                   # everything negative
    assert best_threshold([0.5, 0.5, 0.5], [1, 0, 1])[1] == pytest.approx(2 / 3)  # cannot split a tie


def test_qadsm_good_bad_labels_and_languages():
    d = load_xglue("qadsm", "en", "dev", FIX)
    assert d.labels == [1, 0, 1, 0]
    assert d.docs[0] == "Buy Running Shoes Free shipping on all running shoes."
    cos = {d.docs[0]: 0.9, d.docs[1]: 0.1, d.docs[2]: 0.8, d.docs[3]: 0.2,
           "Laufschuhe kaufen Kostenloser Versand.": 0.7, "Autoversicherung Vergleichen Sie Angebote.": 0.05}
    df = run_xglue("QADSM", ["de"], FIX, cosine_encoder(cos))
    assert list(df.index) == ["de", "avg"] and df.loc["de", "accuracy"] == 1.0


def test_wpr_table_via_config():
    cos = dict(WPR_EN)
    cos.update({
        "Günstige Flüge weltweit Vergleichen Sie günstige Flüge.": 0.9,    # label 3
        "Flugstatus Prüfen Sie den Status Ihres Fluges.": 0.5,             # label 1
        "Hotelangebote Hotels günstig buchen.": 0.1,                       # label 0
        "Das Python-Tutorial Dieses Tutorial führt in Python ein.": 0.8,   # label 4
        "Pythons Pythons sind große Schlangen.": 0.2,                      # label 0
    })
    df = evaluate_xglue(XGlueConfig(task="WPR", langs=["en", "de"], data_dir=FIX), cosine_encoder(cos))
    assert df.loc["de", "nDCG_xglue"] == pytest.approx(1.0) and df.loc["de", "queries"] == 2
    assert df.loc["avg", "nDCG_xglue"] == pytest.approx((df.loc["en", "nDCG_xglue"] + 1.0) / 2)
    assert "nDCG@10" in df.columns


def test_missing_data_says_where_xglue_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIRKIT_XGLUE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ClirkitError) as e:
        run_xglue("wpr", ["en"], None, cosine_encoder({}))
    msg = str(e.value)
    assert "nowhere" in msg and "microsoft.github.io/XGLUE" in msg and "WPR/xglue.wpr.<lang>.dev" in msg


def test_env_dir_and_flat_layout(tmp_path, monkeypatch):
    shutil.copy(FIX / "QAM/xglue.qam.fr.dev", tmp_path)
    monkeypatch.setenv("CLIRKIT_XGLUE_DIR", str(tmp_path))
    assert load_xglue("qam", "fr").labels == [1, 0]


def test_unknown_task_and_language():
    with pytest.raises(ClirkitError, match="unknown XGLUE task 'ner'"):
        load_xglue("ner", "en", "dev", FIX)
    with pytest.raises(ClirkitError, match="XGLUE QAM has no language 'sw'.*de, en, fr"):
        load_xglue("qam", "sw", "dev", FIX)


def test_perturbed_group_queries_for_attacks():
    d = load_xglue("wpr", "en", "dev", FIX)
    p = d.with_group_queries(["chaep flights", "pyhton tutorial", "lonely query", "cheap flihgts"])
    assert p.queries[:3] == ["chaep flights"] * 3 and p.queries[-1] == "cheap flihgts"
    assert p.docs == d.docs and p.labels == d.labels and d.queries[0] == "cheap flights"
    with pytest.raises(ValueError):
        d.with_group_queries(["only one"])


def test_official_prediction_files_score_what_clirkit_reports(tmp_path):
    """Files written as XGLUE's evaluation/README.md specifies, scored as xglue_evaluate.py scores them."""
    pred = tmp_path / "predictions"
    wpr = run_xglue("wpr", ["en"], FIX, cosine_encoder(WPR_EN), predictions_dir=pred)
    qam = run_xglue("qam", None, FIX, cosine_encoder(QAM), predictions_dir=pred)
    d = load_xglue("qadsm", "en", "dev", FIX)
    cos = {d.docs[0]: 0.9, d.docs[1]: 0.1, d.docs[2]: 0.2, d.docs[3]: 0.8,  # en: best cut .85, 3 of 4 right
           "Laufschuhe kaufen Kostenloser Versand.": 0.7, "Autoversicherung Vergleichen Sie Angebote.": 0.05}
    qadsm = run_xglue("qadsm", ["en", "de"], FIX, cosine_encoder(cos), predictions_dir=pred)

    assert sorted(str(p.relative_to(pred)) for p in pred.rglob("*") if p.is_file()) == [
        "QADSM/de.prediction", "QADSM/en.prediction", "QAM/de.prediction", "QAM/en.prediction",
        "QAM/fr.prediction", "WPR/en.prediction"]
    wpr_lines = (pred / "WPR/en.prediction").read_text().splitlines()
    assert [float(x) for x in wpr_lines] == pytest.approx([0.2, 0.9, 0.5, 0.7, 0.1, 0.4, 0.3, 0.6])
    assert (pred / "QAM/de.prediction").read_text() == "1\n0\n1\n1\n"  # .33 >= .325: the false positive
    assert set((pred / "QADSM/en.prediction").read_text().split()) == {"Good", "Bad"}

    official = score_xglue_predictions("wpr", FIX / "WPR/xglue.wpr.en.dev", pred / "WPR/en.prediction")
    assert official == pytest.approx(wpr.loc["en", "nDCG_xglue"], abs=1e-12) and official < 1
    for lang in ("de", "en", "fr"):
        got = score_xglue_predictions("QAM", FIX / f"QAM/xglue.qam.{lang}.dev", pred / f"QAM/{lang}.prediction")
        assert got == pytest.approx(qam.loc[lang, "accuracy"], abs=1e-12)
    for lang, want in (("en", 0.75), ("de", 1.0)):
        got = score_xglue_predictions("qadsm", FIX / f"QADSM/xglue.qadsm.{lang}.dev", pred / f"QADSM/{lang}.prediction")
        assert got == pytest.approx(qadsm.loc[lang, "accuracy"]) == pytest.approx(want)


def test_prediction_files_need_one_line_per_row(tmp_path):
    path = write_xglue_predictions("qam", "fr", [1], prediction_path(tmp_path, "qam", "fr"))
    assert path == tmp_path / "QAM" / "fr.prediction" and path.read_text() == "1\n"
    with pytest.raises(ClirkitError, match="1 predictions for 2 rows"):
        score_xglue_predictions("qam", FIX / "QAM/xglue.qam.fr.dev", path)
    with pytest.raises(ClirkitError, match="XGLUE QADSM has no language 'es'"):
        write_xglue_predictions("qadsm", "es", [1], tmp_path / "x")
    with pytest.raises(ValueError, match="0/1"):
        write_xglue_predictions("qam", "en", [0.7], tmp_path / "y")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "x").exists()
