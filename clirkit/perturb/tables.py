"""Lookup tables of the keyboard and homoglyph perturbations: QWERTY neighbours, confusables."""

from __future__ import annotations

# QWERTY with the usual row stagger (in key widths); neighbours are keys at most one key width
# away on the same or an adjacent row, which gives the familiar a -> q w s z.
_QWERTY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_QWERTY_STAGGER = (0.0, 0.5, 0.75, 1.25)


def _qwerty_neighbours() -> dict[str, tuple[str, ...]]:
    where = {key: (row, col + _QWERTY_STAGGER[row])
             for row, keys in enumerate(_QWERTY_ROWS) for col, key in enumerate(keys)}
    return {key: tuple(other for other, (r2, x2) in where.items()
                       if other != key and abs(r2 - r) <= 1 and abs(x2 - x) <= 1.0)
            for key, (r, x) in where.items()}


QWERTY_NEIGHBOURS: dict[str, tuple[str, ...]] = _qwerty_neighbours()

# Groups of mutually confusable letters, a small subset of Unicode's confusables.txt (UTS #39):
# Latin / Cyrillic / Greek look-alikes, plus the Arabic / Persian yeh and kaf that Persian text
# mixes freely. Each member may be replaced by any other member of its group.
_CONFUSABLE_GROUPS = (
    "a\u0430", "c\u0441", "d\u0501", "e\u0435", "h\u04bb", "i\u0456\u03b9", "j\u0458",
    "o\u043e\u03bf", "p\u0440", "q\u051b", "s\u0455", "u\u03c5", "v\u03bd", "w\u051d",
    "x\u0445", "y\u0443",
    "A\u0410\u0391", "B\u0412\u0392", "C\u0421", "E\u0415\u0395", "H\u041d\u0397",
    "I\u0406\u0399", "J\u0408", "K\u041a\u039a", "M\u041c\u039c", "N\u039d",
    "O\u041e\u039f", "P\u0420\u03a1", "S\u0405", "T\u0422\u03a4", "X\u0425\u03a7",
    "Y\u04ae\u03a5", "Z\u0396",
    "\u064a\u06cc", "\u0643\u06a9",
)
HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    ch: tuple(other for other in group if other != ch)
    for group in _CONFUSABLE_GROUPS for ch in group
}


def keyboard_options(cluster: str) -> tuple[str, ...]:
    neighbours = QWERTY_NEIGHBOURS.get(cluster.lower(), ())
    return tuple(n.upper() for n in neighbours) if cluster.isupper() else neighbours


