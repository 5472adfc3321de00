"""Resolve the torch device and the numeric precision once, and describe them for the manifest.

``--device auto|cpu|cuda|cuda:N|mps`` and ``--precision fp32|bf16|fp16`` are validated here
before any run directory exists: a device torch cannot see, or a precision the device cannot
run, is a one-line :class:`~clirkit.errors.ClirkitError`. The encoders and the training loop
then run their forward passes under :func:`autocast` and, for fp16 training, step through
:func:`grad_scaler` (mixed precision, Micikevicius et al. 2018, "Mixed Precision Training",
arXiv 1710.03740; torch.amp).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clirkit.errors import ClirkitError

if TYPE_CHECKING:
    import torch

DEVICE_SPEC = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("fp32", "bf16", "fp16")


def check_device_spec(spec: str) -> str:
    """Check the syntax of a device string (no torch needed) and return it normalised.

    Raises:
        ClirkitError: ``spec`` is not one of auto, cpu, cuda, cuda:N, mps.
    """
    norm = str(spec).strip().lower()
    if not DEVICE_SPEC.fullmatch(norm):
        raise ClirkitError(f"unknown device {spec!r}", fix=f"use {DEVICE_CHOICES}")
    return norm


def auto_device() -> str:
    """The best device torch sees: ``cuda``, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cuda_seen() -> str:
    """What torch sees, for error messages: 'torch sees 2 CUDA device(s) [cuda:0 NAME, cuda:1 NAME]'."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return "torch sees no CUDA device"
    names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(n))
    return f"torch sees {n} CUDA device(s) [{names}]"


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device for ``spec`` (``auto``: CUDA, else MPS, else CPU), checked to exist.

    Args:
        spec: auto, cpu, cuda, cuda:N or mps (or a ``torch.device``).

    Raises:
        ClirkitError: unknown spelling, or a device this machine does not have (the message
            says what torch sees).
    """
    import torch

    norm = check_device_spec(str(spec))
    if norm == "auto":
        norm = auto_device()
    if norm.startswith("cuda"):
        index = int(norm.partition(":")[2] or 0)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ClirkitError(f"device {norm!r} is not available: {_cuda_seen()}",
                               fix="pass --device cpu (or auto), or a device torch lists")
    elif norm == "mps" and not _mps_available():
        raise ClirkitError("device 'mps' is not available: torch sees no MPS device",
                           fix="pass --device cpu (or auto)")
    return torch.device(norm)


@dataclass(frozen=True)
class Precision:
    """A numeric precision for forward passes.

    Attributes:
        name: fp32, bf16 or fp16.
    """

    name: str

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def mixed(self) -> bool:
        """Whether forward passes run under autocast (everything but fp32)."""
        return self.name != "fp32"

    def __str__(self) -> str:
        return self.name


def resolve_precision(precision: str | Precision, device: torch.device) -> Precision:
    """Check that ``device`` can run ``precision`` and return it.

    fp16 runs on CUDA only (training then needs a gradient scaler: :func:`grad_scaler`); bf16
    runs on CUDA devices with native bf16 support (not emulated: see :func:`_cuda_bf16_native`)
    and on CPUs (torch's CPU autocast computes in bf16); fp32 runs everywhere.

    Raises:
        ClirkitError: an unknown precision, or one the device cannot run.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise ClirkitError(f"unknown precision {str(precision)!r}", fix=f"use {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise ClirkitError(f"precision fp16 needs a CUDA device, not {str(device)!r}",
                           fix="use --precision bf16 (CPU and recent GPUs) or fp32")
    if name == "bf16":
        if device.type == "cuda":
            if not _cuda_bf16_native(device):
                import torch

                raise ClirkitError(f"precision bf16 is not supported natively by {str(device)!r} "
                                   f"({torch.cuda.get_device_name(device)}): torch would emulate it, slowly",
                                   fix="use --precision fp16 or fp32")
        elif device.type != "cpu":
            raise ClirkitError(f"precision bf16 runs on CUDA or CPU, not {str(device)!r}", fix="use fp32")
    return Precision(name)


def _cuda_bf16_native(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 itself (compute capability 8.0+, Ampere on).

    ``torch.cuda.is_bf16_supported()`` also says yes where it can merely create bf16 tensors
    (Volta, Turing): there bf16 is emulated with fp32 arithmetic and conversions, slowly, and
    some kernels (cuDNN's) have no bf16 version, so only native support counts
    (``including_emulation=False``, torch >= 2.4).
    """
    import torch

    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_runtime(device: str | torch.device, precision: str | Precision = "fp32"
                    ) -> tuple[torch.device, Precision]:
    """:func:`resolve_device` then :func:`resolve_precision`: what a run computes on, checked once up front."""
    dev = resolve_device(device)
    return dev, resolve_precision(precision, dev)


def autocast(device: torch.device, precision: Precision | str) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``precision`` on ``device``: ``torch.autocast`` in its dtype,
    a no-op for fp32 (so fp32 results are bit-identical to code without it)."""
    import torch

    precision = precision if isinstance(precision, Precision) else Precision(str(precision))
    if not precision.mixed:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def grad_scaler(device: torch.device, precision: Precision | str):
    """A ``torch.amp.GradScaler`` that is enabled only for fp16 on CUDA (bf16 has fp32's range
    and needs no loss scaling); disabled, its ``scale``/``step``/``update`` are plain passes."""
    import torch

    enabled = str(precision) == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                    return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, None when there is none (never fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


@functools.cache
def _describe(device: str) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    info: dict[str, Any] = {"type": dev.type, "index": dev.index, "name": None, "cuda_version": None,
                            "driver_version": None}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(index=index, name=torch.cuda.get_device_name(index), cuda_version=torch.version.cuda,
                    driver_version=_nvidia_driver(), capability=f"{props.major}.{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1))
    elif dev.type == "mps":
        info.update(name=f"Apple {platform.machine()} (MPS)")
    else:
        info.update(name=_cpu_name())
    return info


def device_info(device: str | torch.device, precision: Precision | str | None = None) -> dict[str, Any]:
    """What the manifest records about the device a run computed on.

    Returns:
        ``type``, ``index``, ``name`` (the GPU's name, or the CPU model from /proc/cpuinfo), the
        CUDA runtime and NVIDIA driver versions where present (None otherwise), CUDA capability
        and memory, and ``precision`` when given.
    """
    info = dict(_describe(str(device)))
    if precision is not None:
        info["precision"] = str(precision)
    return info

