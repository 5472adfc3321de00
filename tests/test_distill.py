"""``clirkit distill`` end to end on a tiny synthetic bitext with the tiny 32-d BERT teacher.

The bitext pairs English sentences over 20 common words with a made-up "language" whose
words are the English ones reversed plus "o" (cat -> taco), in the same order, so a static
student can learn it in a few steps.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from clirkit.cli import app

runner = CliRunner()
WORDS = "cat dog house river king water bread light night day tree stone fire wind sea bird fish horse sword city"
FOREIGN = {w: "".join(reversed(w)) + "o" for w in WORDS.split()}


def write_bitext(root: Path, n_train: int = 200, n_dev: int = 50, pair: str = "en-xx") -> Path:
    rng = random.Random(0)
    words = WORDS.split()
    (root / "bitext").mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(root / "bitext" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("id\tsrc\ttgt\n")
            for i in range(n):
                ws = rng.sample(words, rng.randint(3, 7))
                f.write(f"{split}{i}\tthe {' '.join(ws)}\t{' '.join(FOREIGN[w] for w in ws)}\n")
    (root / "dataset.json").write_text(json.dumps({"name": root.name, "pair": pair, "kind": "bitext"}))
    return root


@pytest.fixture(scope="session")
def bitext(tmp_path_factory) -> Path:
    return write_bitext(tmp_path_factory.mktemp("data") / "bitext-en-xx")


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory) -> Path:
    """A 48-d BERT: a student whose width differs from the 32-d teacher's."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from clirkit.models import resolve

    torch.manual_seed(1)
    tok = BertTokenizerFast.from_pretrained(resolve("minilm").location)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    raw = tmp_path_factory.mktemp("wide-raw")
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=64)
    out = tmp_path_factory.mktemp("wide")
    SentenceTransformer(modules=[word, models.Pooling(48, pooling_mode="mean")], device="cpu").save(str(out))
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these problems are tiny, and on a shared, oversubscribed CPU torch's
    thread pool makes small elementwise ops (Sinkhorn's log-sum-exp) 10x slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def shared_cache(tmp_path_factory, monkeypatch):
    """One teacher-output cache for the whole session: each test would otherwise re-encode the bitext."""
    root = tmp_path_factory.getbasetemp() / "clirkit-cache"
    monkeypatch.setenv("CLIRKIT_CACHE", str(root))
    return root


def distill(runs_dir: Path, *args) -> tuple[object, Path | None]:
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "distill", *map(str, args)], catch_exceptions=False)
    path = Path(r.stdout.strip().splitlines()[-1]) if r.exit_code == 0 else None
    return r, path


def small(bitext: Path, teacher: Path, *extra) -> list:
    return ["--bitext", bitext, "--teacher", teacher, "--vocab-size", 300, "--batch-size", 32, *extra]


def training(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics" / "training.csv")


@pytest.mark.parametrize("loss", ["mse", "ot"])
def test_static_student_lowers_dev_loss(loss, bitext, tiny_model, runs_dir):
    r, run = distill(runs_dir, *small(bitext, tiny_model, "--loss", loss, "--epochs", 4, "--lr", 0.05))
    assert r.exit_code == 0, r.stderr
    df = training(run)
    dev = df.dropna(subset=["dev_loss"])
    assert dev["step"].iloc[0] == 0 and dev["step"].iloc[-1] == df["step"].max() == 28  # 4 epochs x 7 steps
    assert dev["dev_loss"].iloc[-1] < 0.8 * dev["dev_loss"].iloc[0]
    assert {"loss", "lr", "pairs_per_s", "dev_RR@10", "dev_R@1"} <= set(df.columns)
    for f in ("config.json", "manifest.json", "log.txt", "checkpoint/model.safetensors", "last/state.pt",
              "last/model/model.safetensors", "tokenizer/tokenizer.json", "plots/training.png"):
        assert (run / f).is_file(), f
    config = json.loads((run / "config.json").read_text())
    assert config["teacher"] == str(tiny_model) and config["side"] == "query" and config["lr"] == 0.05
    manifest = json.loads((run / "manifest.json").read_text())
    if loss == "ot":  # OT parameters left at the loss's defaults are written out resolved
        assert config["eps"] is None and manifest["loss"]["params"]["eps"] > 0
        assert manifest["loss"]["backend"] == "clirkit.ot.sinkhorn_log"
    assert any(k.endswith("train.tsv") for k in manifest["inputs"]["bitext_train"])
    assert any(k.endswith("model.safetensors") for k in manifest["inputs"]["teacher"])
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    # the checkpoint the trainer kept is the one `runs` and reproduce report as best: one BEST_BY
    from clirkit.config import BEST_BY, dev_column
    from clirkit.runs import run_results

    best = run_results(run).query("condition == 'best'").set_index("measure")["value"]
    assert best.index.tolist() == [dev_column(BEST_BY), "step"]
    kept = manifest["training"]
    assert best["step"] == kept["best_step"] and best[dev_column(BEST_BY)] == kept[f"best_{dev_column(BEST_BY)}"]


def test_checkpoint_loads_and_pairs_with_teacher(bitext, tiny_model, runs_dir):
    from sentence_transformers import SentenceTransformer

    from clirkit.models import load_pair

    r, run = distill(runs_dir, *small(bitext, tiny_model, "--loss", "mse", "--epochs", 1, "--max-length", 4))
    assert r.exit_code == 0, r.stderr
    st = SentenceTransformer(str(run / "checkpoint"), device="cpu")
    emb = st.encode(["taco god", "thgin"], convert_to_numpy=True)
    assert emb.shape == (2, 32)
    pair = load_pair(str(run))
    assert pair.query.name == str(run) and pair.doc.name == str(tiny_model)
    # maxsim: a static student's token vectors are its table rows, one per (truncated) token
    tokens = pair.query.encode_tokens(["taco god", "dniwo dribo hsifo taco god nevero"])
    assert [t.shape[1] for t in tokens] == [32, 32] and len(tokens[1]) == 4
    np.testing.assert_allclose(np.linalg.norm(tokens[0], axis=1), 1.0, rtol=1e-5)
    manifest = json.loads((run / "manifest.json").read_text())
    assert 0 < manifest["student"]["foreign_truncated"] < 1


def test_static_training_forward_is_what_the_saved_model_encodes(tiny_model, tmp_path):
    """Embedding rows, masked mean and (like a normalising teacher) L2 norm: the same vectors after saving."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    from clirkit.config import DistillConfig
    from clirkit.distill.pairs import Bitext
    from clirkit.distill.students import build_student
    from clirkit.models import load_encoder

    SentenceTransformer(modules=[*SentenceTransformer(str(tiny_model), device="cpu"), Normalize()],
                        device="cpu").save(str(tmp_path / "teacher"))
    teacher = load_encoder(str(tmp_path / "teacher"))
    texts = [" ".join(FOREIGN[w] for w in ws.split()) for ws in ("cat dog", "king water bread light night day")]
    cfg = DistillConfig(student="static", vocab_size=300, max_length=5)
    train = Bitext(tmp_path, "en-xx", ["unused"] * 20, texts * 10, [], [])
    student = build_student(cfg, teacher, None, train, tmp_path / "cache", "cpu")
    with torch.no_grad():
        _, mask, sent = student(student.tokenize([*texts, ""]))
    assert mask.sum(1).tolist() == [2, 5, 0]  # truncated at max_length; an empty text has no tokens
    np.testing.assert_allclose(sent[:2].norm(dim=1).numpy(), 1.0, rtol=1e-6)
    student.save(tmp_path / "checkpoint")
    saved = SentenceTransformer(str(tmp_path / "checkpoint"), device="cpu")
    torch.testing.assert_close(saved.encode([*texts, ""], convert_to_tensor=True), sent, atol=1e-6, rtol=1e-5)


def test_resume_is_bit_identical(bitext, tiny_model, runs_dir, monkeypatch):
    args = small(bitext, tiny_model, "--loss", "ot+mse", "--epochs", 2, "--save-every", 3, "--eval-every", 5)
    check_resume_is_bit_identical(args, runs_dir, monkeypatch)


def check_resume_is_bit_identical(args: list, runs_dir: Path, monkeypatch, kill_at: int = 6) -> Path:
    """A run killed right after saving its state at step ``kill_at``, then resumed, ends with the
    same weights and training curve as an uninterrupted run; returns the resumed run."""
    from clirkit.distill import checkpoint

    r, straight = distill(runs_dir / "a", *args)
    assert r.exit_code == 0, r.stderr

    real_save = checkpoint.save_state

    def save_then_die(run_path, student, state):
        real_save(run_path, student, state)
        if state["step"] == kill_at:  # killed (SIGTERM) mid-epoch, right after the state was saved
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint, "save_state", save_then_die)
    r, _ = distill(runs_dir / "b", *args)
    assert r.exit_code != 0
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    (killed,) = (runs_dir / "b").iterdir()
    assert json.loads((killed / "status.json").read_text())["status"] == "failed"

    r, resumed = distill(runs_dir / "c", "--resume", killed)
    assert r.exit_code == 0, r.stderr
    assert json.loads((resumed / "manifest.json").read_text())["resumed_from"] == str(killed)
    a = load_file(straight / "last" / "model" / "model.safetensors")
    c = load_file(resumed / "last" / "model" / "model.safetensors")
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    a_rows, c_rows = training(straight), training(resumed)
    assert a_rows["step"].tolist() == c_rows["step"].tolist()
    np.testing.assert_array_equal(a_rows["loss"].to_numpy(), c_rows["loss"].to_numpy())
    return resumed


def test_bf16_on_cpu_trains_a_copy_student(bitext, tiny_model, runs_dir, shared_cache):
    """--precision bf16: forward passes and loss under CPU autocast, finite losses, the device and
    precision in the manifest, and teacher outputs cached apart from fp32's (the key holds the precision)."""
    args = small(bitext, tiny_model, "--student", "copy", "--loss", "ot+mse", "--epochs", 1, "--max-pairs", 32,
                 "--dev-pairs", 16)
    r, fp32 = distill(runs_dir / "fp32", *args)
    assert r.exit_code == 0, r.stderr
    r, bf16 = distill(runs_dir / "bf16", *args, "--precision", "bf16")
    assert r.exit_code == 0, r.stderr
    device = json.loads((bf16 / "manifest.json").read_text())["device"]
    assert device["type"] == "cpu" and device["precision"] == "bf16"
    assert json.loads((fp32 / "manifest.json").read_text())["device"]["precision"] == "fp32"
    a, b = training(fp32), training(bf16)
    assert np.isfinite(b["loss"].dropna()).all() and len(b["loss"].dropna()) == 1
    assert not np.allclose(a["loss"].dropna(), b["loss"].dropna(), rtol=1e-6, atol=0)  # bf16 rounding shows
    meta = [json.loads((Path(json.loads((run / "manifest.json").read_text())["teacher_cache"]["train"])
                        / "meta.json").read_text()) for run in (fp32, bf16)]
    assert "precision" not in meta[0] and meta[1]["precision"] == "bf16"
    state = torch.load(bf16 / "last" / "state.pt", weights_only=True)
    assert state["scaler"] == {}  # no loss scaling for bf16 (a disabled scaler has no state)


def dig(record: dict, dotted: str):
    for key in dotted.split("."):
        record = record[key]
    return record


def parameters(model: Path) -> int:
    from sentence_transformers import SentenceTransformer

    return sum(p.numel() for p in SentenceTransformer(str(model), device="cpu").parameters())


@pytest.mark.parametrize("extra, expect", [
    (["--loss", "ot+mse", "--cost", "sqeuclidean", "--token-weights", "idf", "--scoring", "maxsim",
      "--ot-weight", 0.5, "--eps", 0.1, "--iters", 20, "--anneal-from", 2.0, "--anneal-iters", 10],
     {"config.token_weights": "idf", "config.scoring": "maxsim", "loss.name": "ot+mse",
      "loss.params.cost": "sqeuclidean", "loss.params.ot_weight": 0.5, "loss.params.mse_weight": 1.0,
      "loss.params.eps": 0.1, "loss.params.iters": 20, "loss.params.anneal_from": 2.0,
      "loss.params.anneal_iters": 10, "loss.params.grad_plan": False, "student.student": "static",
      "student.kind": "static", "pairs": {"train": 64, "dev": 50}}),
    (["--loss", "ot", "--student", "copy", "--side", "document", "--ot-grad-plan", "--token-weights", "idf"],
     {"config.side": "document", "config.token_weights": "idf", "loss.name": "ot", "loss.params.cost": "cosine",
      "loss.params.grad_plan": True, "student.student": "copy", "student.kind": "transformer",
      "student.parameters": "TEACHER"}),
    (["--loss", "mse", "--student", "copy", "--scoring", "maxsim", "--max-pairs", 48, "--dev-pairs", 16],
     {"config.scoring": "maxsim", "config.max_pairs": 48, "loss": {"name": "mse", "params": {}, "backend": None},
      "pairs": {"train": 48, "dev": 16}, "student.kind": "transformer", "student.parameters": "TEACHER"}),
    (["--loss", "mse", "--student", "WIDE", "--project"],
     {"config.project": True, "student.student": "WIDE", "student.kind": "transformer",
      "student.parameters": "WIDE+PROJECTION"}),
    (["--loss", "zero-shot", "--side", "document"],
     {"config.side": "document", "loss": {"name": "zero-shot"}, "pairs": {"train": 64, "dev": 50}}),
], ids=["static-ot+mse", "copy-ot-document", "copy-mse-maxsim", "model-projected", "zero-shot"])
def test_options_through_cli(extra, expect, bitext, tiny_model, wide_model, runs_dir):
    from clirkit.models import load_pair

    extra = [str(wide_model) if x == "WIDE" else x for x in extra]
    r, run = distill(runs_dir, *small(bitext, tiny_model, "--epochs", 1, "--max-pairs", 64, *extra))
    assert r.exit_code == 0, r.stderr
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    # the values the options set, as recorded (placeholders: values known only once the fixtures exist)
    known = {"WIDE": str(wide_model), "TEACHER": parameters(tiny_model),
             "WIDE+PROJECTION": parameters(wide_model) + 48 * 32 + 32}
    record = {"config": config, **manifest}
    for key, want in expect.items():
        want = known.get(want, want) if isinstance(want, str) else want
        assert dig(record, key) == want, key
    pair = load_pair(str(run))
    student, teacher = (pair.query, pair.doc) if config["side"] == "query" else (pair.doc, pair.query)
    assert student.name == str(run) and teacher.name == str(tiny_model)
    assert student.encode(["taco god"]).shape == (1, 32)
    df = training(run)
    assert "dev_RR@10" in df.columns
    if config["loss"] == "zero-shot":
        assert student.fingerprint == teacher.fingerprint  # the teacher's own files: indexes are shared
        assert "student" not in manifest and "training" not in manifest
    else:
        steps = math.ceil(manifest["pairs"]["train"] / 32)
        assert df["step"].max() == steps == manifest["training"]["steps"]
    if config["student"] == "static" and config["loss"] != "zero-shot":  # the trained vocabulary, recorded and saved
        vocab = json.loads((run / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
        assert manifest["student"]["vocab_size"] == len(vocab) <= 300
    if "--project" in extra:  # the MODEL student's files are an input of the run
        assert all(Path(f).is_relative_to(wide_model) for f in manifest["inputs"]["student"])
        assert manifest["inputs"]["student"]


def one_line_error(r) -> str:
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(bitext, tiny_model, wide_model, runs_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here
    line = one_line_error(distill(runs_dir, "--pair", "en-tl", "--teacher", tiny_model)[0])
    assert "clirkit prepare bible --pair en-tl" in line
    line = one_line_error(distill(runs_dir, "--pair", "en-zz", "--teacher", tiny_model)[0])
    assert "clirkit prepare bitext --pair en-zz" in line
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--loss", "kl"))[0])
    assert "unknown loss 'kl'" in line and all(n in line for n in ("mse", "ot+mse", "zero-shot"))
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--student", "nosuch"))[0])
    assert "unknown student 'nosuch'" in line and "copy, static" in line
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--student", wide_model))[0])
    assert "48-d" in line and "32-d" in line and "--project" in line
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--pair", "en-tl"))[0])
    assert "the bitext is en-xx, not en-tl" in line
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # nothing was started


def test_pair_finds_prepared_bitext_under_data(bitext, tiny_model, runs_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(bitext, tmp_path / "data" / "bitext-en-xx")
    monkeypatch.chdir(tmp_path)
    r, run = distill(runs_dir, "--pair", "en-xx", "--teacher", tiny_model, "--loss", "zero-shot", "--dev-pairs", 0)
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["bitext"] == str(Path("data") / "bitext-en-xx") and manifest["pair"] == "en-xx"


@pytest.mark.slow
def test_torchrun_two_processes(bitext, tiny_model, tmp_path, shared_cache):
    torchrun = Path(sys.executable).parent / "torchrun"
    runs = tmp_path / "runs"
    env = {**os.environ, "CLIRKIT_CACHE": str(shared_cache), "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "clirkit", "--runs-dir", str(runs),
           "distill", *map(str, small(bitext, tiny_model, "--loss", "ot+mse", "--epochs", 2))]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = runs.iterdir()  # only rank 0 made a run directory
    paths = {line for line in p.stdout.splitlines() if line.strip()}
    assert paths == {str(run)}  # every rank printed the same path
    assert json.loads((run / "manifest.json").read_text())["world_size"] == 2
    df = training(run)
    assert df["step"].max() == 14  # 200 pairs, 16 per process per step, 2 epochs
    assert (run / "checkpoint" / "model.safetensors").is_file()


def test_augment_perturbs_the_foreign_side_deterministically(bitext, tiny_model, runs_dir):
    from safetensors.torch import load_file

    def weights(run):
        # the last model, not the best one: on this tiny task the best dev score may be the untrained student's
        return load_file(next((run / "last" / "model").rglob("*.safetensors")))

    _, plain = distill(runs_dir, *small(bitext, tiny_model, "--loss", "mse", "--epochs", "1"))
    r1, noisy = distill(runs_dir, *small(bitext, tiny_model, "--loss", "mse", "--epochs", "1",
                                         "--augment", "char-swap:rate=0.5"))
    _, again = distill(runs_dir, *small(bitext, tiny_model, "--loss", "mse", "--epochs", "1",
                                        "--augment", "char-swap:rate=0.5"))
    assert r1.exit_code == 0, r1.stderr
    w_plain, w_noisy, w_again = weights(plain), weights(noisy), weights(again)
    assert any(not torch.equal(w_plain[k], w_noisy[k]) for k in w_plain)  # the noise reached training
    assert all(torch.equal(w_noisy[k], w_again[k]) for k in w_noisy)  # and is seeded
    bad, _ = distill(runs_dir, *small(bitext, tiny_model, "--augment", "char-swap:rate=2"))
    assert bad.exit_code == 2 and "rate" in bad.stderr


def test_wordpiece_vocabulary_is_deterministic(tmp_path):
    """The trainer numbers ``##`` pieces in hash-map order (tokenizers#1794): plain training on these
    texts gives a different tokenizer.json almost every time, even within one process."""
    from clirkit.distill.students import wordpiece_tokenizer

    rng = random.Random(0)
    texts = [" ".join("".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(8))
             for _ in range(100)]
    files = []
    for i in range(5):
        tok = wordpiece_tokenizer(texts, 150, 16, tmp_path / str(i))
        (path,) = (tmp_path / str(i) / "tokenizers").iterdir()  # no temporary file left beside it
        files.append(path.read_bytes())
    assert all(f == files[0] for f in files)
    spec = json.loads(files[0])
    assert [t["content"] for t in spec["added_tokens"]] == ["[PAD]", "[UNK]"]
    assert {f"##{c}" for c in "abcdefgh"} <= set(spec["model"]["vocab"]) and tok.get_vocab_size() == 150
    assert tok.encode("abc").tokens[0] != "[UNK]"


def as_torchrun_rank0(monkeypatch, world: int = 2) -> None:
    """This process as rank 0 of a ``world``-process torchrun job on one node. No rendezvous
    address is set: a job that got as far as joining the process group would fail there."""
    for key, value in {"RANK": 0, "WORLD_SIZE": world, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": world}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)


def test_torchrun_jobs_that_cannot_run_fail_before_writing(bitext, tiny_model, runs_dir, monkeypatch):
    as_torchrun_rank0(monkeypatch)
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--loss", "zero-shot"))[0])
    assert "--loss zero-shot trains nothing, so it cannot run under torchrun (2 processes)" in line
    line = one_line_error(distill(runs_dir, *small(bitext, tiny_model, "--loss", "mse", "--batch-size", 33))[0])
    assert "--batch-size 33 is not divisible by the 2 processes -- use a multiple of 2" in line
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # nothing was started


def test_torchrun_needs_a_gpu_per_process_on_cuda(monkeypatch):
    """The check itself (this machine has no GPU: the CLI stops earlier, at 'cuda is not available')."""
    from clirkit.distill.ddp import DistEnv, check_job, dist_env
    from clirkit.errors import ClirkitError

    as_torchrun_rank0(monkeypatch, world=4)
    env = dist_env()
    assert env.local_world == 4 and env.world == 4
    with pytest.raises(ClirkitError, match=r"torchrun starts 4 processes on this node but torch sees 2 CUDA device"):
        check_job(env, torch.device("cuda"), trains=True, batch_size=64, visible_gpus=2)
    two_nodes = DistEnv(rank=2, world=4, local_rank=0, local_world=2)  # 2 nodes x 2 processes
    check_job(two_nodes, torch.device("cuda"), trains=True, batch_size=64, visible_gpus=2)
    check_job(env, torch.device("cpu"), trains=True, batch_size=64)  # CPU processes need no GPU
    check_job(DistEnv(), torch.device("cuda"), trains=False, batch_size=33, visible_gpus=1)  # no torchrun: all fine


def test_resume_this_job_cannot_continue_fails_before_writing(bitext, tiny_model, runs_dir, tmp_path, monkeypatch):
    import shutil

    r, run = distill(runs_dir / "a", *small(bitext, tiny_model, "--loss", "mse", "--epochs", 1, "--max-pairs", 32))
    assert r.exit_code == 0, r.stderr

    def variant(name: str, config: dict | None = None, **state_values) -> Path:
        """A copy of ``run`` whose config.json and last/state.pt have these values."""
        copy = tmp_path / name
        shutil.copytree(run, copy)
        state = torch.load(copy / "last" / "state.pt", weights_only=True)
        torch.save({**state, **state_values}, copy / "last" / "state.pt")
        if config:
            cfg = json.loads((copy / "config.json").read_text())
            (copy / "config.json").write_text(json.dumps({**cfg, **config}))
        return copy

    line = one_line_error(distill(runs_dir / "b", "--resume", variant("two", world=2))[0])
    assert "the run was trained by 2 process(es), this job has 1 -- resume under torchrun with 2 processes" in line
    # an fp16 run (CUDA only) resumed here: a resume keeps the precision, so --precision is no way out
    fp16 = variant("fp16", {"precision": "fp16"}, scaler=torch.amp.GradScaler("cpu").state_dict())
    line = one_line_error(distill(runs_dir / "b", "--resume", fp16)[0])
    assert "trained in fp16 with a gradient scaler, which needs a CUDA device, not 'cpu'" in line
    assert "--device cuda" in line and "--precision" not in line
    as_torchrun_rank0(monkeypatch)
    line = one_line_error(distill(runs_dir / "b", "--resume", run)[0])
    assert "the run was trained by 1 process(es), this job has 2 -- resume without torchrun" in line
    assert not (runs_dir / "b").exists()


def test_rng_state_restores_the_cpu_stream_and_keeps_cuda_for_cuda():
    """A resumed run draws what the uninterrupted one would; a CUDA generator state (a run
    trained on a GPU) is kept in the state but only set on CUDA, so such a run resumes on CPU."""
    from clirkit.distill.checkpoint import restore_rng, rng_state
    from clirkit.distill.ddp import DistEnv

    cpu = torch.device("cpu")
    state = rng_state(DistEnv(), cpu)
    assert state["cuda_rng"] is None  # no CUDA generator touched on CPU
    ahead = torch.rand(5)
    restore_rng(state, DistEnv(), cpu)
    assert torch.equal(torch.rand(5), ahead)
    from_gpu = {**state, "cuda_rng": [torch.zeros(16, dtype=torch.uint8)]}
    restore_rng(from_gpu, DistEnv(), cpu)
    assert torch.equal(torch.rand(5), ahead) and not torch.cuda.is_initialized()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_state_restores_the_cuda_stream():
    from clirkit.distill.checkpoint import restore_rng, rng_state
    from clirkit.distill.ddp import DistEnv

    gpu = torch.device("cuda", torch.cuda.current_device())
    state = rng_state(DistEnv(), gpu)
    assert state["cuda_rng"][0].dtype == torch.uint8
    x = torch.ones(1000, device=gpu)
    ahead = torch.nn.functional.dropout(x, 0.5)  # dropout on the GPU draws from the GPU's generator
    restore_rng(state, DistEnv(), gpu)
    assert torch.equal(torch.nn.functional.dropout(x, 0.5), ahead)


@pytest.mark.parametrize("fused", [True, False])
def test_a_step_the_scaler_skips_does_not_advance_the_schedule(fused):
    """fp16's gradient scaler skips the optimizer step on overflowed gradients; the learning-rate
    schedule must then stay put. A real (CPU) GradScaler and the trainer's step function."""
    from clirkit.distill.trainer import optimizer_stepped, scaled_step

    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([w], lr=0.1, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: (step + 1) / 10)  # warmup: every step counts
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    assert scaler.is_enabled()

    lr = scaled_step((w * float("inf")).sum(), opt, sched, scaler, [w], 1.0)  # overflow: step skipped
    assert lr == pytest.approx(0.01)
    assert torch.equal(w.detach(), torch.ones(4))  # the optimizer did not move
    assert scaler.get_scale() == 2.0**15  # the scaler backed off
    assert sched.last_epoch == 0 and sched.get_last_lr()[0] == pytest.approx(0.01)  # nor did the schedule

    lr = scaled_step((w * w).sum(), opt, sched, scaler, [w], 1.0)  # a good step
    assert lr == pytest.approx(0.01) and not torch.equal(w.detach(), torch.ones(4))
    assert sched.last_epoch == 1 and sched.get_last_lr()[0] == pytest.approx(0.02)

    assert optimizer_stepped(1.0, 1.0) and optimizer_stepped(2.0**15, 2.0**16)  # disabled scaler; growth
    assert not optimizer_stepped(2.0**16, 2.0**15)
