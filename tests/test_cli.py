"""The CLI contract: one experiment directory per computing command, its path as stdout's last
line, user errors as one line with exit code 2, and aggregate tables that ir_measures
reproduces independently from run.trec and the qrels."""

import json

import ir_measures
import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import PRESENTATION_OPTIONS, app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_version():
    from clirkit import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"clirkit {__version__}"


def test_eval_end_to_end_matches_ir_measures(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5,
               "--measures", "nDCG@10,RR@10,R@100,AP")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    assert run.is_dir()
    for f in ("config.json", "manifest.json", "status.json", "log.txt", "run.trec", "metrics/per_query.csv",
              "metrics/aggregate.csv", "metrics/aggregate.md", "index/index.faiss", "index/embeddings.npy"):
        assert (run / f).is_file(), f
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    agg = pd.read_csv(run / "metrics" / "aggregate.csv").iloc[0]
    qrels = list(ir_measures.read_trec_qrels(_trec_qrels(beir5)))
    trec_run = list(ir_measures.read_trec_run(str(run / "run.trec")))
    measures = [ir_measures.parse_measure(m) for m in ("nDCG@10", "RR@10", "R@100", "AP")]
    expected = ir_measures.calc_aggregate(measures, qrels, trec_run)
    for m in measures:
        assert agg[str(m)] == pytest.approx(expected[m], abs=1e-6)
    manifest = json.loads((run / "manifest.json").read_text())
    assert any(k.endswith("corpus.jsonl") for k in manifest["inputs"]["dataset"])
    assert any(k.endswith("model.safetensors") for k in manifest["inputs"]["doc_model"])


def _trec_qrels(beir):
    lines = (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    path = beir / "qrels.trec"
    path.write_text("".join(f"{q} 0 {d} {s}\n" for q, d, s in (line.split("\t") for line in lines)))
    return str(path)


def test_index_is_reused_by_fingerprint(tiny_model, beir5, runs_dir):
    first = invoke("--runs-dir", runs_dir, "index", "--model", tiny_model, "--dataset", beir5)
    assert first.exit_code == 0, first.stderr
    second = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5)
    assert second.exit_code == 0, second.stderr
    run1 = runs_dir / first.stdout.strip().split("/")[-1]
    run2 = runs_dir / second.stdout.strip().splitlines()[-1].split("/")[-1]
    m2 = json.loads((run2 / "manifest.json").read_text())
    assert m2["index"]["reused_from"] == str(run1)
    assert (run2 / "index" / "embeddings.npy").read_bytes() == (run1 / "index" / "embeddings.npy").read_bytes()


def test_maxsim_scoring_runs(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5, "--scoring", "maxsim")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    assert (run / "index" / "tokens.npy").is_file()
    rows = [line.split() for line in (run / "run.trec").read_text().splitlines()]
    assert len(rows) == 3 * 5
    for qid in ("q1", "q2", "q3"):  # every document ranked once per query, 1..5 by falling score
        mine = [r for r in rows if r[0] == qid]
        assert sorted(r[2] for r in mine) == ["d1", "d2", "d3", "d4", "d5"]
        assert [int(r[3]) for r in mine] == [1, 2, 3, 4, 5]
        scores = [float(r[4]) for r in mine]
        assert scores == sorted(scores, reverse=True)
    config = json.loads((run / "config.json").read_text())
    assert config["scoring"] == "maxsim" and config["maxsim_mode"] == "auto" and config["rerank_k"] == 100


@pytest.mark.parametrize("args, message", [
    (["--measures", "nDCG@x"], "unknown measure 'nDCG@x'"),
    (["--model", "/nonexistent/model"], "model not found"),
    (["--model", "someone/not-cached-model"], "not in the local Hugging Face cache"),
])
def test_user_errors_are_one_line_exit_2(tiny_model, beir5, runs_dir, args, message):
    base = ["--runs-dir", runs_dir, "eval", "--dataset", beir5]
    if "--model" not in args:
        base += ["--model", tiny_model]
    r = invoke(*base, *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_bad_dataset_names_file_and_line(tiny_model, beir5, runs_dir):
    with open(beir5 / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write('{"_id": 5}\n')
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5)
    assert r.exit_code == 2
    assert "corpus.jsonl:6: missing or non-string field '_id'" in r.stderr


def test_prepare_beir_imports_and_validates(beir5, tmp_path):
    out = tmp_path / "imported"
    r = invoke("prepare", "beir", beir5, "--out", out, "--licence", "CC0")
    assert r.exit_code == 0, r.stderr
    card = json.loads((out / "dataset.json").read_text())
    assert card["counts"]["documents"] == 5 and card["licence"] == "CC0"
    again = invoke("prepare", "beir", beir5, "--out", out)
    assert again.exit_code == 2 and "already exists" in again.stderr


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_eval_xglue_benchmark(tiny_model, runs_dir):
    r = invoke("--runs-dir", runs_dir, "eval", "--benchmark", "xglue", "--task", "qam", "--model", tiny_model,
               "--data-dir", FIXTURES / "xglue")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    table = pd.read_csv(run / "metrics" / "xglue_qam.csv").set_index("lang")
    assert list(table.index) == ["de", "en", "fr", "avg"]
    assert table.loc["avg", "accuracy"] == pytest.approx(table.loc[["de", "en", "fr"], "accuracy"].mean())
    assert table["threshold"].nunique() == 1  # fixed on English dev, applied to every language


def test_eval_xglue_missing_data_is_one_line(tiny_model, runs_dir, tmp_path):
    r = invoke("--runs-dir", runs_dir, "eval", "--benchmark", "xglue", "--model", tiny_model,
               "--data-dir", tmp_path / "nowhere")
    assert r.exit_code == 2 and "XGLUE data missing" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# --------------------------------------------------------------------------- options generated from the configs


def _commands():
    import typer.main

    from clirkit.config import AttackConfig, DistillConfig, EvalConfig, IndexConfig
    from clirkit.data.beir import BeirConfig
    from clirkit.data.bible import BibleConfig
    from clirkit.data.bitext import BitextConfig
    from clirkit.data.mmarco import MMarcoConfig
    from clirkit.data.wikiclir import WikiClirConfig

    root = typer.main.get_command(app)
    prepare = root.commands["prepare"]
    return [(root.commands[n], cls, n) for n, cls in [("index", IndexConfig), ("eval", EvalConfig),
                                                      ("attack", AttackConfig), ("perturb", AttackConfig),
                                                      ("distill", DistillConfig)]] + [
        (prepare.commands[n], cls, f"prepare {n}") for n, cls in [
            ("bible", BibleConfig), ("beir", BeirConfig), ("bitext", BitextConfig), ("mmarco", MMarcoConfig),
            ("wikiclir", WikiClirConfig)]]


def test_every_config_field_is_an_option_with_its_description():
    for command, cls, name in _commands():
        params = {p.name: p for p in command.params}
        missing = set(cls.model_fields) - set(params)
        assert not missing, f"{name}: fields without an option: {sorted(missing)}"
        assert set(params) - PRESENTATION_OPTIONS == set(cls.model_fields), f"{name}: options without a field"
        for field_name, field in cls.model_fields.items():
            p = params[field_name]
            assert p.help.startswith(field.description), (name, field_name)
            if p.param_type_name == "option":
                assert f"--{field_name.replace('_', '-')}" in p.opts, (name, field_name, p.opts)


def test_shared_retrieval_options_are_on_eval_and_attack():
    names = {n: {p.name for p in c.params} for c, _, n in _commands()}
    shared = {"scoring", "maxsim_mode", "rerank_k", "top_k", "measures", "device", "precision"}
    assert shared <= names["eval"] and shared <= names["attack"]
    assert {"scoring", "factory", "batch_size", "device", "precision"} <= names["index"]


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace the run functions by recorders: what the command line builds, nothing computed."""
    import importlib

    seen = {}
    for target in ("clirkit.index:run_index", "clirkit.evaluate:run_eval", "clirkit.attack:run_attack",
                   "clirkit.distill:run_distill"):
        module, _, name = target.partition(":")

        def record(cfg, _name=name):
            seen[_name] = cfg
            return tmp_path

        monkeypatch.setattr(importlib.import_module(module), name, record)
    return seen


def test_attack_spellings_build_the_expected_config(captured, tmp_path):
    r = invoke("--seed", 7, "--device", "cpu", "attack", "--rate", "0.1,0.2", "--rates", "0.3", "--seeds", 3,
               "--model", "a,b", "--model", "c", "--perturb", "char-swap:rate=0.2,min_len=4", "--perturb", "word-drop",
               "--measures", "nDCG@10,RR@10 AP", "--maxsim-mode", "rerank", "--rerank-k", 50, "--scoring", "maxsim",
               "--lang", "de,fr", "--query-translation", "none,lexicon")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path)
    cfg = captured["run_attack"]
    assert cfg.rates == [0.1, 0.2, 0.3] and cfg.seeds == 3 and cfg.seed == 7
    assert cfg.model == ["a", "b", "c"]
    assert cfg.perturb == ["char-swap:rate=0.2,min_len=4", "word-drop"]  # a spec keeps its commas
    assert cfg.measures == ["nDCG@10", "RR@10", "AP"]
    assert (cfg.maxsim_mode, cfg.rerank_k, cfg.scoring) == ("rerank", 50, "maxsim")
    assert cfg.langs == ["de", "fr"] and cfg.query_translation == ["none", "lexicon"]
    assert cfg.split == "test" and cfg.device == "cpu" and cfg.precision == "fp32"


def test_attack_defaults_and_perturb_alias(captured):
    r = invoke("perturb")
    assert r.exit_code == 0, r.stderr
    cfg = captured["run_attack"]
    assert cfg.perturb == ["char-swap"] and cfg.model == [] and cfg.rates == [] and cfg.seeds == 3
    assert cfg.measures == ["nDCG@10", "RR@10", "R@100", "AP"] and cfg.top_k == 1000


def test_eval_spellings_build_the_expected_config(captured, tmp_path):
    r = invoke("eval", "--benchmark", "xglue", "--task", "wpr", "--lang", "de", "--maxsim-mode", "exhaustive",
               "--rerank-k", 7, "--top-k", 20, "--measures", "P(rel=2,judged_only=True)@5,nDCG@10")
    assert r.exit_code == 0, r.stderr
    cfg = captured["run_eval"]
    assert (cfg.benchmark, cfg.task, cfg.langs, cfg.split) == ("xglue", "wpr", ["de"], "dev")  # XGLUE labels dev
    assert cfg.model == "minilm" and cfg.query_model is None  # the default pair
    assert (cfg.maxsim_mode, cfg.rerank_k, cfg.top_k) == ("exhaustive", 7, 20)
    assert cfg.measures == ["P(rel=2,judged_only=True)@5", "nDCG@10"]  # commas inside parameters kept
    r = invoke("eval", "--dataset", tmp_path, "--query-model", "q", "--doc-model", "d", "--split", "dev",
               "--runs-dir", tmp_path / "elsewhere", "--seed", 2)
    assert r.exit_code == 0, r.stderr
    cfg = captured["run_eval"]
    assert (cfg.model, cfg.query_model, cfg.doc_model, cfg.split) == (None, "q", "d", "dev")
    assert cfg.runs_dir == tmp_path / "elsewhere" and cfg.seed == 2  # per-command run options


def test_command_options_override_global_ones(captured, tmp_path):
    r = invoke("--seed", 1, "--precision", "fp32", "index", "--dataset", tmp_path, "--seed", 4, "--precision", "bf16")
    assert r.exit_code == 0, r.stderr
    cfg = captured["run_index"]
    assert (cfg.seed, cfg.precision, cfg.device, cfg.model) == (4, "bf16", "cpu", "minilm")


def test_distill_options_reach_the_config(captured):
    r = invoke("distill", "--pair", "en-tl", "--loss", "ot+mse", "--student", "copy", "--project", "--eps", "0.05",
               "--cost-scale", "0.5", "--mse-weight", 192, "--ot-grad-plan")
    assert r.exit_code == 0, r.stderr
    cfg = captured["run_distill"]
    assert (cfg.pair, cfg.loss, cfg.student, cfg.project, cfg.ot_grad_plan) == ("en-tl", "ot+mse", "copy", True, True)
    assert (cfg.eps, cfg.cost_scale, cfg.mse_weight, cfg.lr) == (0.05, 0.5, 192.0, 2e-5)  # lr: a copy's default
    assert cfg.epochs == 3 and cfg.ot_weight is None  # untouched options keep the config's defaults


def test_bad_option_value_is_one_line_exit_2(captured, runs_dir):
    r = invoke("--runs-dir", runs_dir, "attack", "--rate", "0.1,2")
    assert r.exit_code == 2 and "rate 2.0 is outside [0, 1]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "run_attack" not in captured


def test_error_messages_keep_square_brackets(capsys):
    """A user error naming a TOML table or an indexed field prints the brackets, not rich markup.

    ``clirkit.progress.fail`` is the one printer of user errors (the commands and ``runs``)."""
    from clirkit.errors import ClirkitError
    from clirkit.progress import fail

    exit_ = fail(ClirkitError("unknown key in [slurm] table", fix="see [bold]x[1][/bold]"))
    assert exit_.exit_code == 2
    assert "unknown key in [slurm] table -- see [bold]x[1][/bold]" in capsys.readouterr().err
