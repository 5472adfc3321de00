import json

import numpy as np
import pytest

from clirkit.errors import ClirkitError
from clirkit.models import fingerprint, load_encoder, load_pair, resolve


def test_resolve_kinds(tiny_model, tmp_path):
    assert resolve("minilm").kind == "alias"
    assert resolve(str(tiny_model)).kind == "path"
    assert resolve("org/some-model").kind == "hub"
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"teacher": "minilm", "side": "query"}))
    ref = resolve(str(run))
    assert ref.kind == "run" and ref.location.endswith("checkpoint")
    with pytest.raises(ClirkitError, match="not a model folder"):
        resolve(str(tmp_path))


def test_uncached_hub_model_fails_fast_offline():
    with pytest.raises(ClirkitError, match="CLIRKIT_ONLINE=1"):
        load_encoder("clirkit-test/definitely-not-cached")


def test_fingerprint_changes_with_weights(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert fingerprint(copy) == fingerprint(tiny_model)
    weights = next(copy.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_model)


def test_encoder_outputs(tiny_model):
    enc = load_encoder(str(tiny_model))
    emb = enc.encode(["hello world", "a cat"])
    assert emb.shape == (2, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    toks = enc.encode_tokens(["hello world", "a cat"])
    assert [t.shape for t in toks] == [(2, 32), (2, 32)]  # [CLS]/[SEP]/padding removed


def test_distill_run_pairs_student_with_teacher(tiny_model, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "checkpoint")
    (run / "config.json").write_text(json.dumps({"teacher": str(tiny_model), "side": "document"}))
    pair = load_pair(str(run))
    assert pair.doc.name == str(run) and pair.query.name == str(tiny_model)


@pytest.mark.slow
def test_bundled_minilm_loads_offline():
    enc = load_encoder("minilm")
    a, b, c = enc.encode(["A man is eating food.", "A man eats a meal.", "The stock market crashed."])
    assert enc.dim == 384
    assert a @ b > a @ c + 0.3


def test_encode_both_matches_separate_passes(tiny_model):
    enc = load_encoder(str(tiny_model))
    texts = ["a much longer sentence about cats and dogs", "hi", "the bank raised rates"]
    sent, toks = enc.encode_both(texts, batch_size=2)
    np.testing.assert_allclose(sent, enc.encode(texts), atol=1e-5)
    for a, b in zip(toks, enc.encode_tokens(texts)):
        np.testing.assert_allclose(a, b, atol=1e-5)


TEXTS = [f"sentence number {i} " + "word " * (i % 13) for i in range(37)] + ["", "a"]


@pytest.mark.slow
def test_two_cpu_workers_match_one_process(tiny_model):
    from clirkit.models import Encoder

    one = Encoder(resolve(str(tiny_model)), "cpu")
    with Encoder(resolve(str(tiny_model)), "cpu", devices=["cpu", "cpu"]) as two:
        pooled = two.encode(TEXTS, batch_size=4)
        pooled_tokens = two.encode_tokens(TEXTS, batch_size=4)
        both_sent, both_tokens = two.encode_both(TEXTS, batch_size=4)
        workers = list(two._pool._pool["processes"])
        assert len(workers) == 2 and all(p.is_alive() for p in workers)
    assert two._pool is None  # leaving the block stopped the workers
    single = one.encode(TEXTS, batch_size=4)
    assert pooled.shape == single.shape == (len(TEXTS), 32) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, single, atol=1e-6)
    np.testing.assert_allclose(both_sent, single, atol=1e-6)
    single_tokens = one.encode_tokens(TEXTS, batch_size=4)
    assert [t.shape for t in pooled_tokens] == [t.shape for t in single_tokens] == [t.shape for t in both_tokens]
    for a, b, c in zip(pooled_tokens, single_tokens, both_tokens):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(c, b, atol=1e-6)


def test_devices_naming_a_missing_gpu_fails_before_loading(tiny_model):
    with pytest.raises(ClirkitError, match="cuda:1"):
        load_encoder(str(tiny_model), "cpu", devices=["cpu", "cuda:1"])
    with pytest.raises(ClirkitError, match="unknown device"):
        load_encoder(str(tiny_model), "cpu", devices=["gpu0"])
