"""Canonical on-disk formats (:mod:`clirkit.data.formats`) and one module per data source."""
