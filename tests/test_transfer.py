"""Vocabulary transfer (clirkit.distill.transfer): Dice by hand, embedding initialisation, the saved student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clirkit.distill.transfer import build_transfer_student, top_n_per_row, transfer_embeddings
from clirkit.errors import ClirkitError
from clirkit.lexicon import dice_scores

# Made-up foreign words, each the translation of one English word; "the" pads every English
# sentence, so raw co-occurrence counts (unlike Dice) would pick it for every foreign word.
WORDS = {"kwazi": "cat", "mbolo": "dog", "tsepi": "river", "vuuli": "house", "zogra": "bread"}


def _pairs(n: int = 40) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    foreign, english = [], []
    names = sorted(WORDS)
    for _ in range(n):
        picked = [names[i] for i in rng.choice(len(names), size=int(rng.integers(2, 4)), replace=False)]
        foreign.append(" ".join(picked) + " .")
        english.append("the " + " ".join(WORDS[w] for w in picked) + " .")
    return foreign, english


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    foreign, english = _pairs()
    out = tmp_path_factory.mktemp("transfer") / "student"
    path, stats = build_transfer_student(tiny_model, foreign, english, vocab_size=120, layers=None, top_n=1,
                                         out_dir=out, seed=0, cache=tmp_path_factory.mktemp("cache"))
    teacher = SentenceTransformer(str(tiny_model), device="cpu")
    student = SentenceTransformer(str(path), device="cpu")
    return path, stats, teacher, student


def _emb(st) -> np.ndarray:
    return st[0].auto_model.get_input_embeddings().weight.detach().numpy()


def test_dice_scores_by_hand():
    # sentence pairs: f = {0, 1}, {0}, {1, 2}; e = {0}, {0, 1}, {1}
    f_ids, f_off = np.array([0, 1, 0, 1, 2]), np.array([0, 2, 3, 5])
    e_ids, e_off = np.array([0, 0, 1, 1]), np.array([0, 1, 3, 4])
    rows, cols, dice = dice_scores(f_ids, f_off, 3, e_ids, e_off, 2)
    got = {(int(r), int(c)): float(v) for r, c, v in zip(rows, cols, dice)}
    # c(f) = 2, 2, 1; c(e) = 2, 2; dice = 2 c(f, e) / (c(f) + c(e))
    assert got == pytest.approx({(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.5, (1, 1): 0.5, (2, 1): 2 / 3})


def test_top_n_per_row_keeps_the_highest_and_breaks_ties_by_column():
    rows = np.array([0, 0, 0, 1, 1])
    cols = np.array([0, 1, 2, 0, 1])
    vals = np.array([0.2, 0.9, 0.9, 0.1, 0.3])
    r, c, v = top_n_per_row(rows, cols, vals, 2)
    assert list(zip(r.tolist(), c.tolist())) == [(0, 1), (0, 2), (1, 1), (1, 0)]
    r, c, _ = top_n_per_row(rows, cols, vals, 1)
    assert c.tolist() == [1, 1]


def test_transfer_embeddings_dice_weighted_mean_and_fallback():
    teacher = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]], dtype=np.float32)
    student_vocab = {"a": 0, "b": 1, "c": 2, "never": 3}
    s_ids = [[0, 1], [0], [1, 2]]
    t_ids = [[0], [0, 1], [1]]
    emb, stats = transfer_embeddings(teacher, {"x": 0, "y": 1, "z": 2}, {}, student_vocab, s_ids, t_ids, top_n=2)
    # row 0: dice 1.0 with e0, 0.5 with e1; row 2 co-occurs with e1 only
    np.testing.assert_allclose(emb[0], (1.0 * teacher[0] + 0.5 * teacher[1]) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(emb[1], 0.5 * teacher[0] + 0.5 * teacher[1], rtol=1e-6)
    np.testing.assert_allclose(emb[2], teacher[1], rtol=1e-6)
    np.testing.assert_allclose(emb[3], teacher.mean(0), rtol=1e-6)  # never seen: the mean row
    assert (stats["cooccurrence"], stats["fallback"], stats["exact"]) == (3, 1, 0)
    assert stats["fallback_fraction"] == 0.25


def test_a_word_always_with_one_english_word_gets_its_embedding(built, tiny_model):
    _, stats, teacher, student = built
    s_vocab, t_vocab = student[0].tokenizer.get_vocab(), teacher[0].tokenizer.get_vocab()
    s_emb, t_emb = _emb(student), _emb(teacher)
    for foreign, english in WORDS.items():
        assert foreign in s_vocab and foreign not in t_vocab and english in t_vocab
        np.testing.assert_array_equal(s_emb[s_vocab[foreign]], t_emb[t_vocab[english]])
        assert not np.allclose(s_emb[s_vocab[foreign]], t_emb[t_vocab["the"]])
    assert stats["cooccurrence"] >= len(WORDS)


def test_exact_matches_and_special_tokens_copy_the_teachers_rows(built):
    _, stats, teacher, student = built
    s_tok, t_tok = student[0].tokenizer, teacher[0].tokenizer
    s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
    s_emb, t_emb = _emb(student), _emb(teacher)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    shared = [w for w in s_vocab if w in t_vocab and w not in specials]
    assert "." in shared and stats["exact"] == len(shared)
    for w in shared:
        np.testing.assert_array_equal(s_emb[s_vocab[w]], t_emb[t_vocab[w]])
    for w in specials:
        np.testing.assert_array_equal(s_emb[s_vocab[w]], t_emb[getattr(t_tok, w.strip("[]").lower() + "_token_id")])
    assert stats["special"] == 5
    assert sorted(s_tok.all_special_tokens) == sorted(specials)


def test_saved_student_loads_tokenizes_with_its_own_vocabulary_and_encodes(built, tiny_model):
    path, stats, teacher, student = built
    tok = student[0].tokenizer
    assert len(tok) == stats["vocab_size"] == _emb(student).shape[0] <= 120
    ids = tok("kwazi mbolo")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "kwazi", "mbolo", "[SEP]"]
    assert list(path.glob("*.safetensors")) and (path / "transfer.json").is_file()
    assert [type(m).__name__ for m in student] == [type(m).__name__ for m in teacher]
    out = student.encode(["kwazi tsepi .", "zogra"], convert_to_numpy=True)
    assert out.shape == (2, teacher.get_embedding_dimension())
    # all layers kept, identical to the teacher's
    assert student[0].auto_model.config.num_hidden_layers == teacher[0].auto_model.config.num_hidden_layers == 2
    t_sd, s_sd = teacher[0].auto_model.state_dict(), student[0].auto_model.state_dict()
    for k, v in s_sd.items():
        if "word_embeddings" not in k:
            torch.testing.assert_close(v, t_sd[k])


def test_layers_1_keeps_the_first_layer(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    foreign, english = _pairs(20)
    path, stats = build_transfer_student(tiny_model, foreign, english, vocab_size=100, layers=1, top_n=5,
                                         out_dir=tmp_path / "one", cache=tmp_path / "cache")
    student = SentenceTransformer(str(path), device="cpu")
    teacher = SentenceTransformer(str(tiny_model), device="cpu")
    model = student[0].auto_model
    assert stats["layers"] == model.config.num_hidden_layers == len(model.encoder.layer) == 1
    torch.testing.assert_close(model.encoder.layer[0].state_dict(),
                               teacher[0].auto_model.encoder.layer[0].state_dict())
    with pytest.raises(ClirkitError, match="layers=3"):
        build_transfer_student(tiny_model, foreign, english, vocab_size=100, layers=3, out_dir=tmp_path / "bad",
                               cache=tmp_path / "cache")


@pytest.fixture
def distill_env(tmp_path_factory, monkeypatch):
    """A tiny bitext (tests.test_distill's), one intra-op thread, and a cache shared by this module's runs."""
    from tests.test_distill import write_bitext

    root = tmp_path_factory.getbasetemp()
    data = root / "bitext-en-xx"
    if not data.exists():
        write_bitext(data)
    monkeypatch.setenv("CLIRKIT_CACHE", str(root / "transfer-cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield data, root / "transfer-cache"
    torch.set_num_threads(before)


def transfer_args(data: Path, teacher: Path, *extra) -> list:
    return ["--bitext", data, "--teacher", teacher, "--student", "transfer", "--student-layers", 1,
            "--vocab-size", 150, "--batch-size", 32, *extra]


def test_distill_student_transfer_records_its_stats_and_keeps_its_vocabulary(distill_env, tiny_model, runs_dir):
    """`distill --student transfer`: built from the training pairs, trained, its vocabulary in the checkpoint."""
    import json

    from sentence_transformers import SentenceTransformer

    from tests.test_distill import FOREIGN, distill, training

    data, cache = distill_env
    r, run = distill(runs_dir, *transfer_args(data, tiny_model, "--loss", "mse", "--epochs", 1))
    assert r.exit_code == 0, r.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["student"], config["student_layers"], config["transfer_top_n"]) == ("transfer", 1, 5)
    assert config["lr"] == 1e-4  # the transfer student's own default
    student = json.loads((run / "manifest.json").read_text())["student"]
    assert student["student"] == "transfer" and student["layers"] == 1
    stats = student["transfer"]
    assert stats["pairs"] == 200 and stats["special"] == 5 and stats["cooccurrence"] > 0
    fractions = [stats[f"{k}_fraction"] for k in ("special", "exact", "cooccurrence", "fallback")]
    assert sum(fractions) == pytest.approx(1.0) and 0 < stats["mean_top1_dice"] <= 1
    assert student["vocab_size"] == 5 + stats["exact"] + stats["cooccurrence"] + stats["fallback"] <= 150

    trained = SentenceTransformer(str(run / "checkpoint"), device="cpu")
    teacher = SentenceTransformer(str(tiny_model), device="cpu")
    assert len(trained[0].tokenizer) == student["vocab_size"] != len(teacher[0].tokenizer)
    assert trained[0].auto_model.config.num_hidden_layers == 1
    word = FOREIGN["house"]  # "esuoho": one token of the student's vocabulary, several of the teacher's
    assert trained[0].tokenizer.tokenize(word) == [word] and len(teacher[0].tokenizer.tokenize(word)) > 1
    assert json.loads((run / "checkpoint" / "transfer.json").read_text())["layers"] == 1
    # the initialised student is cached once, keyed by teacher, texts and options (not by the loss)
    r, run2 = distill(runs_dir, *transfer_args(data, tiny_model, "--loss", "ot+mse", "--epochs", 1,
                                               "--scoring", "maxsim"))
    assert r.exit_code == 0, r.stderr
    assert len(list((cache / "transfer").iterdir())) == 1
    rows = training(run2).dropna(subset=["dev_RR@10"])
    assert rows["dev_RR@10"].between(0, 1).all() and len(rows) == 2
    # max_pairs limits the distillation, not the statistics the student is built from (all 200 training
    # pairs by default, transfer_pairs of them if given)
    r, run3 = distill(runs_dir, *transfer_args(data, tiny_model, "--loss", "mse", "--epochs", 1, "--max-pairs", 50))
    assert r.exit_code == 0, r.stderr
    assert json.loads((run3 / "manifest.json").read_text())["student"]["transfer"]["pairs"] == 200
    r, run4 = distill(runs_dir, *transfer_args(data, tiny_model, "--loss", "mse", "--epochs", 1, "--max-pairs", 50,
                                               "--transfer-pairs", 120))
    assert r.exit_code == 0, r.stderr
    assert json.loads((run4 / "manifest.json").read_text())["student"]["transfer"]["pairs"] == 120


def test_transfer_student_resumes_bit_identically(distill_env, tiny_model, runs_dir, monkeypatch):
    import json

    from tests.test_distill import check_resume_is_bit_identical

    data, _ = distill_env
    args = transfer_args(data, tiny_model, "--loss", "ot+mse", "--epochs", 2, "--save-every", 3, "--eval-every", 5)
    resumed = check_resume_is_bit_identical(args, runs_dir, monkeypatch)
    student = json.loads((resumed / "manifest.json").read_text())["student"]
    assert student["layers"] == 1 and student["transfer"]["pairs"] == 200  # stats travel with the saved model


def test_transfer_options_fail_before_any_work(distill_env, tiny_model, runs_dir):
    from tests.test_distill import distill, one_line_error

    data, _ = distill_env
    r, _ = distill(runs_dir, "--bitext", data, "--teacher", tiny_model, "--student", "transfer",
                   "--student-layers", 3)
    assert r.exit_code == 2 and "--student-layers 3, but teacher" in one_line_error(r)
    r, _ = distill(runs_dir, "--bitext", data, "--teacher", tiny_model, "--student-layers", 1)
    assert r.exit_code == 2 and "student_layers applies to the transfer student" in one_line_error(r)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.slow
def test_transfer_student_under_torchrun(distill_env, tiny_model, tmp_path):
    """Two processes build the same student at once: one cache entry, no temporary folder left."""
    import json
    import os
    import subprocess
    import sys

    data, cache = distill_env
    torchrun = Path(sys.executable).parent / "torchrun"
    runs = tmp_path / "runs"
    env = {**os.environ, "CLIRKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "clirkit", "--runs-dir", str(runs),
           "distill", *map(str, transfer_args(data, tiny_model, "--loss", "mse", "--epochs", 1))]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = runs.iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["student"]["layers"] == 1
    assert [f.name.startswith(".") for f in (tmp_path / "cache" / "transfer").iterdir()] == [False]
    assert (run / "checkpoint" / "transfer.json").is_file()
