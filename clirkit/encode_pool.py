"""Encoding across several devices or CPU worker processes (``--devices cuda:0,cuda:1`` / ``cpu,cpu``).

Built on sentence-transformers' multi-process pool (``SentenceTransformer.start_multi_process_pool``
and ``encode(..., pool=...)``; sentence-transformers docs, "Multi-Process / Multi-GPU Encoding"):
each worker process holds the model on its device and encodes whole chunks of the inputs; the
parent puts the chunks back in order. The workers run the model's own ``_inference``, so the
reduced-precision context (:func:`clirkit.device.autocast`) is entered there by
:class:`AutocastSentenceTransformer`, the class pooled models are loaded as.

This module imports sentence-transformers at import time; :mod:`clirkit.models` imports it
only when a pool is asked for (the spawned workers import it to unpickle the model).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

from sentence_transformers import SentenceTransformer

from clirkit.device import autocast


class AutocastSentenceTransformer(SentenceTransformer):
    """A ``SentenceTransformer`` whose batched inference (in this process or in a pool worker)
    runs under :func:`clirkit.device.autocast` of ``clirkit_precision`` (``fp32``: unchanged)."""

    clirkit_precision: str = "fp32"

    def _inference(self, inputs: list, *, device: Any = None, **kwargs: Any) -> Any:
        if self.clirkit_precision == "fp32":
            return super()._inference(inputs, device=device, **kwargs)
        with autocast(self._resolve_inference_device(device), self.clirkit_precision):
            return super()._inference(inputs, device=device, **kwargs)


class EncodePool:
    """The worker processes of one model, started on ``devices`` and stopped by :meth:`close`
    (or on leaving the ``with`` block, or at interpreter exit, whichever comes first).

    Args:
        model: the model; sentence-transformers moves it to the CPU and shares its weights with
            the workers (each worker then moves its copy to its device).
        devices: one worker per entry, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.
    """

    def __init__(self, model: SentenceTransformer, devices: list[str]) -> None:
        self.model = model
        self.devices = list(devices)
        # start_multi_process_pool stops the workers it started itself if one fails to start
        self._pool: dict[str, Any] | None = model.start_multi_process_pool(target_devices=self.devices)
        # an exception anywhere, Ctrl-C or a forgotten close(): the workers never outlive us
        # (a finalizer runs at garbage collection or at interpreter exit, and only once)
        self._finalizer = weakref.finalize(self, _stop, self._pool)

    @property
    def alive(self) -> bool:
        return self._pool is not None

    def chunk_size(self, n: int, batch_size: int) -> int:
        """Texts per chunk sent to a worker: whole batches, about four chunks per worker so a
        slow device does not hold the others up."""
        per_worker = math.ceil(n / (len(self.devices) * 4))
        return max(1, math.ceil(per_worker / batch_size)) * batch_size

    def encode(self, texts: list[str], batch_size: int, **kwargs: Any) -> Any:
        """``SentenceTransformer.encode`` of ``texts`` spread over the workers (same keywords)."""
        if self._pool is None:
            raise RuntimeError("the encoding pool is closed")
        return self.model.encode(texts, batch_size=batch_size, pool=self._pool, show_progress_bar=False,
                                 chunk_size=self.chunk_size(len(texts), batch_size), **kwargs)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._pool is not None:
            self._pool = None
            self._finalizer()

    def __enter__(self) -> EncodePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _stop(pool: dict[str, Any]) -> None:
    SentenceTransformer.stop_multi_process_pool(pool)
