"""`clirkit run` on a tiny grid: systems x datasets x scorings, seeds, significance, report."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from tests.conftest import write_beir

runner = CliRunner()


def _experiment(tmp_path, tiny_model, beir5, extra=""):
    path = tmp_path / "exp.toml"
    path.write_text(f"""
name = "tiny"
description = "two copies of one model: identical results, p = 1"
seeds = [0, 1]
baseline = "zero-shot"

[[systems]]
name = "zero-shot"
model = "{tiny_model}"
seeded = false

[[systems]]
name = "same-model"
model = "{tiny_model}"

[eval]
datasets = ["{beir5}"]
scoring = ["dense", "maxsim"]
measures = ["nDCG@10", "RR@10"]
{extra}
""", encoding="utf-8")
    return path


def test_run_grid_writes_report(tmp_path, tiny_model, beir5, runs_dir):
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(_experiment(tmp_path, tiny_model, beir5))])
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    agg = pd.read_csv(run / "metrics" / "aggregate.csv")
    assert len(agg) == 4  # 1 dataset x 2 scorings x 2 systems
    same = agg[agg.system == "same-model"].iloc[0]
    assert same["seeds"] == 2 and same["nDCG@10_sd"] == 0.0
    zs = agg[(agg.system == "zero-shot") & (agg.scoring == same["scoring"])].iloc[0]
    assert zs["seeds"] == 1 and zs["nDCG@10"] == pytest.approx(same["nDCG@10"])
    sig = pd.read_csv(run / "metrics" / "significance.csv")
    assert set(sig.system) == {"same-model"} and (sig.p == 1.0).all()
    children = json.loads((run / "children.json").read_text())
    assert len(children["eval"]) == 2 * 3  # 2 scorings x (1 + 2 seeded) runs
    report = (run / "report.md").read_text()
    assert report.startswith("# tiny") and "same-model" in report
    runs_table = report.split("## Runs")[1]
    assert all(f"`{c['run']}`" in runs_table for c in children["eval"])
    assert runs_table.count("| eval ") == len(children["eval"])


def test_rerun_reuses_completed_steps_unless_told_not_to(tmp_path, tiny_model, beir5, runs_dir):
    exp = _experiment(tmp_path, tiny_model, beir5)

    def run(*extra):
        r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp), *extra])
        assert r.exit_code == 0, r.stderr
        path = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
        return [c["run"] for c in json.loads((path / "children.json").read_text())["eval"]]

    first = run()
    evals = sorted(p.name for p in runs_dir.iterdir() if "-eval-" in p.name)
    assert run() == first  # every eval reused: same directories, none added
    assert sorted(p.name for p in runs_dir.iterdir() if "-eval-" in p.name) == evals
    fresh = run("reuse=false")
    assert not set(fresh) & set(first) and len(fresh) == len(first)


def test_override_and_bad_experiment(tmp_path, tiny_model, beir5, runs_dir):
    exp = _experiment(tmp_path, tiny_model, beir5)
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp), "baseline='nobody'"])
    assert r.exit_code == 2 and "baseline 'nobody' is not a system name" in r.stderr
    bad = _experiment(tmp_path, tiny_model, beir5, extra="[typo]\nx = 1\n")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(bad)])
    assert r.exit_code == 2 and "invalid typo" in r.stderr and "exp.toml" in r.stderr
    for weights, says in [("[1.0]", "fuse has 1 weights for 2 systems"), ("[1.0, -2.0]", "fusion weights must be")]:
        fused = _experiment(tmp_path, tiny_model, beir5, extra=f'[[systems]]\nname = "f"\nfuse = {{ systems = '
                                                              f'["zero-shot", "same-model"], weights = {weights} }}\n')
        r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(fused)])
        assert r.exit_code == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def prepare_grid(src, out, model) -> str:
    """A grid that prepares the BEIR folder ``src`` into ``out`` and evaluates ``model`` on it."""
    return f"""
name = "p"
[[prepare]]
source = "beir"
folder = "{src}"
out = "{out}"
licence = "CC0"
[[systems]]
name = "zero-shot"
model = "{model}"
[eval]
datasets = ["{out}"]
"""


def test_prepare_entries_run_first(tmp_path, tiny_model, runs_dir):
    src = write_beir(tmp_path / "src")
    out = tmp_path / "prepared"
    exp = tmp_path / "p.toml"
    body = prepare_grid(src, out, tiny_model)
    exp.write_text(body.replace('licence = "CC0"', 'licnce = "CC0"'), encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 2 and "licnce" in r.stderr and not out.exists()
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # validated before any work
    exp.write_text(body, encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "dataset.json").read_text())["licence"] == "CC0"
    again = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])  # reuses the prepared dataset
    assert again.exit_code == 0, again.stderr


def test_prepare_reuses_a_folder_only_if_it_was_prepared_alike(tmp_path, tiny_model, runs_dir):
    src = write_beir(tmp_path / "src")
    out = tmp_path / "prepared"
    r = runner.invoke(app, ["prepare", "beir", str(src), "--out", str(out), "--licence", "CC0"])
    assert r.exit_code == 0, r.stderr
    card = json.loads((out / "dataset.json").read_text())
    assert card["prepared_with"] == {"folder": str(src), "query_lang": "", "doc_lang": "", "licence": "CC0"}
    exp = tmp_path / "p.toml"
    body = prepare_grid(src, out, tiny_model)
    exp.write_text(body, encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])  # the command line's folder, alike
    assert r.exit_code == 0, r.stderr
    before = sorted(runs_dir.iterdir())
    exp.write_text(body.replace('licence = "CC0"', 'licence = "CC-BY-4.0"\ndoc_lang = "en"'), encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    line = " ".join(r.stderr.split())
    assert f"{out}: the dataset here was prepared differently" in line
    assert "doc_lang='' where the [[prepare]] entry asks doc_lang='en'" in line
    assert "licence='CC0' where the [[prepare]] entry asks licence='CC-BY-4.0'" in line
    assert f"give the entry another out, or remove {out}" in line
    assert sorted(runs_dir.iterdir()) == before  # refused before any work
    assert json.loads((out / "dataset.json").read_text()) == card
    del card["prepared_with"]  # a folder prepared before cards recorded how: reused, with a warning
    (out / "dataset.json").write_text(json.dumps(card), encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 0, r.stderr
    assert "does not record how it was prepared" in " ".join(r.stderr.split())


def test_full_grid_distill_eval_attack_report(tmp_path, tiny_model, beir5, runs_dir, monkeypatch):
    """The demo's path on tiny assets: a distilled student (ot+mse with augmentation) and the
    teacher, evaluated, attacked randomly and greedily, and reported."""
    from tests.test_distill import write_bitext

    monkeypatch.setenv("CLIRKIT_CACHE", str(tmp_path / "cache"))
    bitext = write_bitext(tmp_path / "bitext")
    exp = tmp_path / "grid.toml"
    exp.write_text(f"""
name = "grid"
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
[[systems]]
name = "student"
[systems.distill]
bitext = "{bitext}"
teacher = "{tiny_model}"
student = "static"
loss = "ot+mse"
epochs = 1
vocab_size = 300
batch_size = 32
augment = "char-swap:rate=0.1"
iters = 20
anneal_iters = 5
[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10", "RR@10"]
[attack]
rates = [0.1, 0.3]
seeds = 2
sample = 3
greedy = {{ sample = 2, max_edits = 2, max_queries = 20 }}
""", encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    rob = pd.read_csv(run / "metrics" / "robustness.csv")
    assert set(rob["system"]) == {"zero-shot", "student"} and set(rob["rate"]) == {0.1, 0.3}
    children = json.loads((run / "children.json").read_text())
    # one training seed: the report's rows (recomputed from per_query.csv) are the attack's own, to the last bit
    own = next(c["run"] for c in children["attack"] if c["system"] == "student" and c["search"] == "random")
    pd.testing.assert_frame_equal(rob[rob.system == "student"].drop(columns=["scoring", "training_seeds"])
                                  .reset_index(drop=True),
                                  pd.read_csv(runs_dir / own / "metrics" / "robustness.csv").assign(system="student"))
    greedy = pd.read_csv(run / "metrics" / "greedy.csv")
    assert set(greedy["system"]) == {"zero-shot", "student"}
    assert (run / "plots" / "nDCG@10.png").is_file()
    assert [c["system"] for c in children["distill"]] == ["student"]
    assert "## Greedy adversarial attack" in (run / "report.md").read_text()


def test_every_seed_attacks_each_seeds_model_with_the_same_queries(tmp_path, beir5):
    """``every_seed``: one attack per training seed of each system, waiting for that seed's model
    and evaluations, all with the grid's first seed (the same sampled queries and perturbations);
    without it only the first seed's model is attacked."""
    from clirkit.config import build
    from clirkit.experiment import ExperimentConfig, grid_steps
    from clirkit.launch import Call

    def grid(every_seed):
        return build(ExperimentConfig, "test", name="g", seeds=[3, 4], runs_dir=tmp_path / "runs", systems=[
            {"name": "zero-shot", "model": "minilm", "seeded": False},
            {"name": "student", "distill": {"bitext": str(beir5), "student": "static"}}],
            eval={"datasets": [beir5]}, attack={"sample": 2, "every_seed": every_seed})

    tasks, steps = grid_steps(grid(True))
    attacks = {t.key: t for t in tasks if t.key.startswith("attack")}
    assert set(attacks) == {"attack zero-shot seed 3 dense random", "attack student seed 3 dense random",
                            "attack student seed 4 dense random"}
    task = attacks["attack student seed 4 dense random"]
    assert set(task.after) == {"distill student seed 4", f"eval student seed 4 {beir5} dense"}
    call = task.plan({"distill student seed 4": "runs/model-4"})
    assert isinstance(call, Call) and call.args[0] == "attack"
    config = call.args[1]
    assert config.model == ["runs/model-4"] and config.seed == 3 and config.sample == 2
    assert steps[task.key].entry == {"system": "student", "seed": 4, "scoring": "dense", "run": None,
                                     "search": "random"}
    tasks, _ = grid_steps(grid(False))
    assert [t.key for t in tasks if t.key.startswith("attack")] == ["attack zero-shot seed 3 dense random",
                                                                    "attack student seed 3 dense random"]
    # an existing model repeated for every seed (seeded = true) is one model: attacked once
    cfg = build(ExperimentConfig, "test", name="g", seeds=[3, 4], runs_dir=tmp_path / "runs", systems=[
        {"name": "zero-shot", "model": "minilm"}], eval={"datasets": [beir5]}, attack={"every_seed": True})
    tasks, _ = grid_steps(cfg)
    assert [t.key for t in tasks if t.key.startswith("attack")] == ["attack zero-shot seed 3 dense random"]


@pytest.mark.slow
def test_grid_with_bm25_dense_and_rrf_fused_system(tmp_path, tiny_model, beir5, runs_dir):
    import ir_measures

    from clirkit.data.formats import load_dataset
    from clirkit.fuse import read_run
    from clirkit.retrieval.fusion import fuse_runs

    path = tmp_path / "lexical.toml"
    path.write_text(f"""
name = "lexical"
seeds = [0]
baseline = "dense"

[[systems]]
name = "bm25"
model = "bm25"
bm25 = {{ k1 = 0.9, b = 0.4 }}
seeded = false

[[systems]]
name = "dense"
model = "{tiny_model}"
seeded = false

[[systems]]
name = "rrf-bm25+dense"
fuse = {{ systems = ["bm25", "dense"], method = "rrf", rrf_k = 10 }}

[eval]
datasets = ["{beir5}"]
scoring = ["dense"]
measures = ["nDCG@10", "RR@10"]

[attack]
perturb = ["char-swap"]
rates = [0.5]
seeds = 1
greedy = {{ max_edits = 1 }}
""", encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(path)])
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    agg = pd.read_csv(run / "metrics" / "aggregate.csv").set_index("system")
    assert set(agg.index) == {"bm25", "dense", "rrf-bm25+dense"}
    children = json.loads((run / "children.json").read_text())
    by_system = {c["system"]: c["run"] for c in children["eval"]}
    assert json.loads((runs_dir / by_system["bm25"] / "config.json").read_text())["bm25_k1"] == 0.9
    fused = fuse_runs([read_run(runs_dir / by_system[s] / "run.trec") for s in ("bm25", "dense")], "rrf",
                      params={"k": 10})
    ds = load_dataset(beir5)
    want = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], ds.qrels, fused)
    assert agg.loc["rrf-bm25+dense", "nDCG@10"] == pytest.approx(next(iter(want.values())))
    # every system is attacked at random; the fused one is not attacked greedily (a logged note)
    attacks = {(c["system"], c["search"]) for c in children["attack"]}
    assert attacks == {("bm25", "random"), ("dense", "random"), ("rrf-bm25+dense", "random"),
                       ("bm25", "greedy"), ("dense", "greedy")}
    assert "rrf-bm25+dense" in (run / "report.md").read_text().split("## Robustness")[1]


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "experiments").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe, tmp_path, monkeypatch):
    """Every recipe in experiments/ is a valid grid: its systems, distill tables, prepare entries
    and comparisons pass the checks `clirkit run` makes before any work."""
    from clirkit.experiment import load_experiment

    monkeypatch.chdir(tmp_path)  # nothing prepared here: the recipes' data/ paths do not exist yet
    cfg = load_experiment(recipe, [])
    assert cfg.systems and cfg.eval.datasets
    names = {s.name for s in cfg.systems}
    assert {n for pair in cfg.compare for n in pair} <= names
