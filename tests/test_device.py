"""Device and precision are resolved once, checked before anything is written, and recorded.

This machine has no GPU: the CUDA checks below exercise the real "not available" path."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.config import EvalConfig, IndexConfig
from clirkit.device import autocast, device_info, grad_scaler, resolve_device, resolve_precision, resolve_runtime
from clirkit.errors import ClirkitError

runner = CliRunner()
CPU = torch.device("cpu")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _cpu_model_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no model name in /proc/cpuinfo")


def test_auto_resolves_to_cpu_here(monkeypatch):
    assert not torch.cuda.is_available()  # the premise of this file
    assert resolve_device("auto") == CPU
    monkeypatch.delenv("CLIRKIT_DEVICE", raising=False)
    assert IndexConfig(dataset="d").device == "cpu"  # auto, written out resolved
    monkeypatch.setenv("CLIRKIT_DEVICE", "cuda:3")
    assert IndexConfig(dataset="d").device == "cuda:3"  # the environment's default, checked only at run time
    assert IndexConfig(dataset="d", device="mps").device == "mps"  # an explicit value beats the environment


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_absent_cuda_is_one_clear_error(spec):
    with pytest.raises(ClirkitError) as e:
        resolve_device(spec)
    assert e.value.one_line().startswith(f"device {spec!r} is not available: torch sees no CUDA device")


@pytest.mark.parametrize("where", ["global", "command"])
def test_cli_device_cuda_exits_2_and_writes_nothing(tiny_model, beir5, runs_dir, where):
    args = (["--device", "cuda", "index"] if where == "global" else ["index", "--device", "cuda"])
    r = invoke("--runs-dir", runs_dir, *args, "--model", tiny_model, "--dataset", beir5)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "device 'cuda' is not available: torch sees no CUDA device" in lines[0]
    assert "Traceback" not in r.stderr
    assert not runs_dir.exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--precision", "fp8"], "invalid precision"),
    (["--precision", "fp16"], "precision fp16 needs a CUDA device, not 'cpu'"),
])
def test_bad_device_or_precision_exits_2(tiny_model, beir5, runs_dir, args, message):
    r = invoke("--runs-dir", runs_dir, "eval", "--model", tiny_model, "--dataset", beir5, *args)
    assert r.exit_code == 2, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not runs_dir.exists()


def test_precision_rules_on_cpu():
    assert resolve_precision("fp32", CPU).dtype == torch.float32
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16
    with pytest.raises(ClirkitError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ClirkitError, match="unknown precision 'half'"):
        resolve_precision("half", CPU)
    with pytest.raises(ClirkitError, match="device 'mps' is not available"):
        resolve_runtime("mps", "fp32")


def test_autocast_and_scaler_on_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    _, bf16 = resolve_runtime("cpu", "bf16")
    with autocast(CPU, bf16):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(CPU, resolve_precision("fp32", CPU)):
        assert (a @ b).dtype == torch.float32
    assert not grad_scaler(CPU, bf16).is_enabled()  # loss scaling is for fp16 on CUDA only


def test_device_info_names_the_cpu():
    info = device_info(CPU, "bf16")
    assert info["type"] == "cpu" and info["precision"] == "bf16"
    assert info["name"] == _cpu_model_name()
    assert info["cuda_version"] is None and info["driver_version"] is None


def test_bf16_run_records_precision_and_cpu_in_manifest(tiny_model, beir5, runs_dir):
    r = invoke("--runs-dir", runs_dir, "--precision", "bf16", "eval", "--model", tiny_model, "--dataset", beir5,
               "--measures", "nDCG@10")
    assert r.exit_code == 0, r.stderr
    run = runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"]["type"] == "cpu" and manifest["device"]["precision"] == "bf16"
    assert manifest["device"]["name"] == _cpu_model_name()
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cpu" and config["precision"] == "bf16"


def test_bf16_encoding_is_close_to_fp32(tiny_model):
    from clirkit.models import load_encoder

    texts = ["the cat sat on the mat", "interest rates rose again", "rain over the mountains tomorrow"]
    fp32, bf16 = load_encoder(str(tiny_model)), load_encoder(str(tiny_model), "cpu", "bf16")
    assert bf16.precision.name == "bf16" and fp32.precision.name == "fp32"
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)  # normalised in float32
    diff = np.abs(a - b).max()
    assert 0 < diff < 1e-2  # autocast really ran in bf16, and stayed close
    for x, y in zip(fp32.encode_tokens(texts), bf16.encode_tokens(texts)):
        assert y.dtype == np.float32 and x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=2e-2)
    sent, toks = bf16.encode_both(texts)
    np.testing.assert_allclose(sent, a, atol=1e-2)
    assert all(t.dtype == np.float32 for t in toks)


def test_eval_config_accepts_device_spellings():
    assert EvalConfig(device="CUDA:0").device == "cuda:0"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        EvalConfig(device="tpu")


def test_bf16_on_a_gpu_that_only_emulates_it_is_an_error(monkeypatch):
    """bf16 on a Volta/Turing GPU is emulated, slowly: an error naming fp16/fp32. There is no GPU
    here, so torch.cuda answers as it does on such a card (capability 7.x, CUDA >= 11): bf16 is
    "supported" only when emulation counts. This checks the error path, not that bf16 runs."""
    import contextlib
    import inspect

    def is_bf16_supported(including_emulation: bool = True):
        return including_emulation

    # the stand-in has the installed torch's signature: the argument clirkit passes exists
    assert inspect.signature(is_bf16_supported) == inspect.signature(torch.cuda.is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    with pytest.raises(ClirkitError) as e:
        resolve_precision("bf16", torch.device("cuda:0"))
    assert e.value.one_line() == ("precision bf16 is not supported natively by 'cuda:0' (Tesla V100-SXM2-32GB): "
                                  "torch would emulate it, slowly -- use --precision fp16 or fp32")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_a_real_gpu_follows_its_compute_capability():
    gpu = torch.device("cuda:0")
    if torch.cuda.get_device_capability(gpu)[0] >= 8:
        assert resolve_precision("bf16", gpu).name == "bf16"
    else:
        with pytest.raises(ClirkitError, match="not supported natively"):
            resolve_precision("bf16", gpu)
