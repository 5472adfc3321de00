"""clirkit: cross-lingual IR experiment runner (OPTICAL distillation, indexing, evaluation, attacks)."""

__version__ = "0.1.0"
