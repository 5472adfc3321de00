"""Perturbation specs: the registry, the common parameters, and ``"name:key=value"`` parsing.

Specs such as ``"char-swap:rate=0.2,min_len=4"`` are parsed by :func:`parse_spec` into a
:class:`PerturbSpec`, validated against the registered function's signature; nothing is ever
``eval``-ed.
"""

from __future__ import annotations

import inspect
import math
import random
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import regex

from clirkit.errors import ClirkitError
from clirkit.registry import Registry

Perturbation = Callable[..., str]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def count_for_rate(rate: float, n: int) -> int:
    """``rate * n`` rounded half up; the epsilon absorbs float error such as 0.1 * 5."""
    return min(n, math.floor(rate * n + 0.5 + 1e-9))


def check_common(rate: float, min_len: int) -> None:
    """Reject a ``rate`` outside [0, 1] or a negative ``min_len`` (ClirkitError)."""
    if not 0.0 <= rate <= 1.0:
        raise ClirkitError(f"perturbation rate={rate!r} is outside [0, 1]",
                           fix="give a fraction such as rate=0.2")
    if min_len < 0:
        raise ClirkitError(f"perturbation min_len={min_len!r} is negative",
                           fix="give a number of grapheme clusters such as min_len=4")


# --------------------------------------------------------------------------- lexicons


@lru_cache(maxsize=16)
def _load_lexicon_cached(path: str, mtime_ns: int, size: int) -> Mapping[str, str]:
    # Imported on first use: clirkit.lexicon pulls in scipy (about 0.8 s), which only
    # code-switch specs need. The import runs one way; clirkit.lexicon never imports perturb.
    from clirkit.lexicon import load_lexicon

    return load_lexicon(path)


def resolve_lexicon(lexicon: Mapping[str, str] | str | Path) -> Mapping[str, str]:
    """Return ``lexicon`` itself, or the lexicon loaded from that path (cached per file version).

    Raises:
        ClirkitError: the path does not exist or the file is malformed.
    """
    if isinstance(lexicon, Mapping):
        return lexicon
    path = Path(lexicon)
    try:
        stat = path.stat()
    except OSError:
        index = Path(f"{lexicon}.index")  # a FreeDict basename
        if not index.exists():
            raise ClirkitError(f"lexicon {str(lexicon)!r} does not exist",
                               fix="give a TSV or FreeDict .index/.dict(.dz) path") from None
        stat = index.stat()
    return _load_lexicon_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


_INT = regex.compile(r"[+-]?\d+")
_TRUE, _FALSE = frozenset({"true", "yes", "on"}), frozenset({"false", "no", "off"})


def _convert(raw: str, hint: Any) -> Any:
    """Parse a spec value by the parameter's annotation; raises ValueError when it does not fit."""
    if hint is bool:
        low = raw.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if hint is int:
        if _INT.fullmatch(raw.strip()):
            return int(raw)
        raise ValueError("expected an integer")
    if hint is float:
        return float(raw)
    return raw  # str, or a path for a Mapping parameter


def _check_type(value: Any, hint: Any) -> Any:
    """Check a Python value against the annotation; ints widen to float, bools never count."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, float, str):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ValueError(f"expected {hint.__name__}, got {type(value).__name__}")
    if isinstance(value, (Mapping, str, Path)):
        return value
    raise ValueError(f"expected a mapping or a path, got {type(value).__name__}")


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return f"<mapping of {len(value)} entries>"
    return str(value)


@cache
def _signature(name: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    fn = PERTURBATIONS.get(name)
    params = dict(list(inspect.signature(fn).parameters.items())[2:])  # drop text, rng
    return params, typing.get_type_hints(fn)


def accepted_params(name: str) -> dict[str, Any]:
    """Parameter names of perturbation ``name`` with their defaults (``inspect.Parameter.empty``
    for required ones)."""
    params, _ = _signature(name)
    return {k: p.default for k, p in params.items()}


@dataclass(frozen=True)
class PerturbSpec:
    """A validated perturbation name and its parameters.

    ``str(spec)`` is the canonical spec string (parameters sorted by name, booleans as
    ``true``/``false``), and ``parse_spec(str(spec)) == spec`` unless a parameter holds an
    in-memory mapping, which has no spec-string form.

    Attributes:
        name: a registered perturbation name.
        params: the parameters given explicitly; defaults come from the function signature.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _validate(self.name, dict(self.params), str(self)))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        body = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(self.params.items()))
        return f"{self.name}:{body}"

    @property
    def fn(self) -> Perturbation:
        """The registered perturbation function."""
        return PERTURBATIONS.get(self.name)

    def with_defaults(self) -> PerturbSpec:
        """The same spec with every defaulted parameter written out (for config.json)."""
        full = {k: v for k, v in accepted_params(self.name).items()
                if v is not inspect.Parameter.empty}
        return PerturbSpec(self.name, {**full, **self.params})

    def apply(self, text: str, rng: random.Random) -> str:
        """Perturb ``text`` with ``rng``."""
        return self.fn(text, rng, **self.params)


def _validate(name: str, params: dict[str, Any], spec_text: str) -> dict[str, Any]:
    accepted, hints = _signature(name)  # unknown name -> the registry's error
    listing = ", ".join(accepted)
    for key in params:
        if key not in accepted:
            raise ClirkitError(f"perturbation spec {spec_text!r}: unknown parameter {key!r}",
                               fix=f"{name} accepts: {listing}")
    missing = [k for k, p in accepted.items()
               if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ClirkitError(f"perturbation spec {spec_text!r}: missing {', '.join(missing)}",
                           fix=f"give e.g. {name}:{missing[0]}=...")
    out = {}
    for key, value in params.items():
        try:
            out[key] = (_convert(value, hints.get(key)) if isinstance(value, str)
                        else _check_type(value, hints.get(key)))
        except ValueError as exc:
            raise ClirkitError(f"perturbation spec {spec_text!r}: bad value {key}={value!r} "
                               f"({exc})", fix=f"{name} accepts: {listing}") from None
    try:
        check_common(out.get("rate", 0.0), out.get("min_len", 0))
    except ClirkitError as exc:
        raise ClirkitError(f"perturbation spec {spec_text!r}: {exc.message}", fix=exc.fix) from None
    if "lexicon" in out:
        resolve_lexicon(out["lexicon"])  # fail at parse time, not in the middle of an attack
    return out


def parse_spec(text: str) -> PerturbSpec:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` into a :class:`PerturbSpec`.

    Values are converted by the parameter's annotation (int, float, bool as true/false/yes/no,
    str); a ``lexicon`` value is a file path. Values may not contain commas.

    Args:
        text: the spec string, e.g. ``"char-swap:rate=0.2,min_len=4"``.

    Raises:
        ClirkitError: unknown perturbation (listing the known ones), unknown or repeated
            parameter (listing the accepted ones), a value of the wrong type, ``rate`` outside
            [0, 1].
    """
    name, _, body = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise ClirkitError(f"empty perturbation spec {text!r}",
                           fix=f"use e.g. char-swap:rate=0.2; known: {', '.join(PERTURBATIONS)}")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ClirkitError(f"perturbation spec {text!r}: {item!r} is not key=value",
                               fix="write parameters as key=value separated by commas")
        if key in params:
            raise ClirkitError(f"perturbation spec {text!r}: {key!r} is given twice",
                               fix="give each parameter once")
        params[key] = value.strip()
    return PerturbSpec(name, params)


# --------------------------------------------------------------------------- labels


def _shown(key: str, value: Any, path_parts: int) -> str:
    if key == "lexicon" and isinstance(value, (str, Path)):
        return str(Path(*Path(value).parts[-path_parts:])) if Path(value).parts else str(value)
    return _format_value(value)


def spec_label(spec: PerturbSpec, path_parts: int = 1) -> str:
    """The spec without its rate (rates are their own column), a lexicon path by its last
    ``path_parts`` components (its file name by default)."""
    params = {k: _shown(k, v, path_parts) for k, v in spec.params.items() if k != "rate"}
    if not params:
        return spec.name
    return f"{spec.name}:" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def spec_identity(spec: PerturbSpec) -> tuple:
    """What a spec perturbs with, its rate aside: name and parameters, a lexicon path resolved (one
    file named two ways is one lexicon), an in-memory lexicon by object."""
    def ident(k: str, v: Any) -> Any:
        if k == "lexicon":
            return ("path", str(Path(v).resolve())) if isinstance(v, (str, Path)) else ("mapping", id(v))
        return _format_value(v)

    return spec.name, tuple(sorted((k, ident(k, v)) for k, v in spec.params.items() if k != "rate"))


def spec_labels(specs: list[PerturbSpec]) -> list[str]:
    """One :func:`spec_label` per spec, distinct for specs that perturb differently (rates aside),
    so result tables never merge their rows.

    Two ``code-switch`` specs with lexicons ``a/lex.tsv`` and ``b/lex.tsv`` would both print
    ``lexicon=lex.tsv``: clashing labels show more of their lexicon paths, and labels that still
    clash (in-memory lexicons) are numbered ``#1``, ``#2`` in order. Specs differing only by
    rate keep one label (the rate column tells them apart).
    """
    ids = [spec_identity(s) for s in specs]

    def clashing(labels: list[str]) -> list[int]:
        owners: dict[str, set] = {}
        for label, ident in zip(labels, ids):
            owners.setdefault(label, set()).add(ident)
        return [i for i, label in enumerate(labels) if len(owners[label]) > 1]

    labels = [spec_label(s) for s in specs]
    depth = max((len(Path(v).parts) for s in specs for k, v in s.params.items()
                 if k == "lexicon" and isinstance(v, (str, Path))), default=1)
    for parts in range(2, depth + 1):
        clash = clashing(labels)
        if not clash:
            break
        for i in clash:
            labels[i] = spec_label(specs[i], parts)
    base = list(labels)
    for i in clashing(base):
        owners = list(dict.fromkeys(ident for label, ident in zip(base, ids) if label == base[i]))
        labels[i] = f"{base[i]}#{owners.index(ids[i]) + 1}"
    return labels


def as_spec(spec: PerturbSpec | str) -> PerturbSpec:
    return spec if isinstance(spec, PerturbSpec) else parse_spec(spec)


