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
