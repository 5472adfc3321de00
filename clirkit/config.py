"""Typed configurations (pydantic, ``extra="forbid"``), TOML files and ``key=value`` overrides.

Every command builds one of these from its options; the experiment directory stores it fully
resolved (every default written out) in ``config.json``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clirkit.errors import ClirkitError


class Config(BaseModel):
    """Base of every configuration: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults included, as JSON-compatible values."""
        return self.model_dump(mode="json")


def build(cls: type[Config], _origin: str = "options", **values: Any) -> Config:
    """Validate ``values`` into ``cls``, turning pydantic's errors into one ClirkitError line.

    ``_origin`` names where the values came from (a TOML file, or the command's options).
    """
    try:
        return cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(config)"
        raise ClirkitError(f"invalid {loc}: {err['msg']}", path=_origin if _origin != "options" else None,
                           fix=f"check {loc!r} ({len(e.errors())} problem(s) in {_origin})") from None


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, quoted strings, arrays); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (a copy is returned)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClirkitError(f"override {item!r} is not key=value", fix="write overrides as key=value, e.g. seed=1")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ClirkitError(f"override {item!r}: {p!r} is not a table", fix="check the key path")
        node[parts[-1]] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ClirkitError("config file not found", path=path, fix="check the path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ClirkitError(f"invalid TOML ({e})", path=path) from None


# --------------------------------------------------------------------------- command configs

Scoring = Literal["dense", "maxsim"]
DEFAULT_MEASURES = ["nDCG@10", "RR@10", "R@100", "AP"]


class CommandConfig(Config):
    """Options every computing command shares (the CLI's global options)."""

    runs_dir: Path = Field(Path("experiments/runs"), description="where experiment directories are written")
    seed: int = Field(0, ge=0, description="random seed (0 is a seed)")
    device: str = Field("cpu", description="torch device")


class IndexConfig(CommandConfig):
    """``clirkit index``: encode a corpus and build a FAISS index."""

    model: str = Field("minilm", description="document encoder: path, hub id, distill run, or 'minilm'")
    dataset: Path = Field(..., description="prepared dataset folder")
    factory: str = Field("Flat", description="FAISS index factory string (inner product on normalised vectors)")
    batch_size: int = Field(64, ge=1, description="encoding batch size")
    scoring: Scoring = Field("dense", description="maxsim also stores token embeddings for late interaction")


class EvalConfig(IndexConfig):
    """``clirkit eval``: search a prepared dataset and score the run with ir_measures."""

    model: str | None = Field(None, description="sets both encoders (a distill run: student + its teacher)")
    query_model: str | None = Field(None, description="query encoder (overrides --model)")
    doc_model: str | None = Field(None, description="document encoder (overrides --model)")
    split: str = Field("test", description="qrels split")
    top_k: int = Field(1000, ge=1, description="documents retrieved per query")
    measures: list[str] = Field(default_factory=lambda: list(DEFAULT_MEASURES), description="ir_measures strings")
    maxsim_mode: Literal["auto", "exhaustive", "rerank"] = Field(
        "auto", description="maxsim over the whole corpus, or re-ranking the dense top rerank_k (auto: by size)")
    rerank_k: int = Field(100, ge=1, description="dense candidates re-ranked by maxsim")
    query_translation: str | None = Field(None, description="lexicon[:PATH]: translate queries word by word first")
