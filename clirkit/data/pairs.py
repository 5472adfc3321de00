"""Language codes and language pairs, shared by every data source that names a pair (``en-sw``).

Codes are ISO 639-1 (two letters) or ISO 639-3 (three letters; the built-in table covers the
639-1 languages' 639-3/639-2B forms and individual languages often met in bitext, and the optional
``pycountry`` package supplies the full ISO 639-3 table). :func:`canonical` maps a tag to a
comparable form so ``eng``, ``en-US`` and ``en`` match.
"""

from __future__ import annotations

import re

from clirkit.errors import ClirkitError

#: ISO 639-1 codes with their ISO 639-3 (and 639-2/B where different) equivalents.
_ISO639_1 = (
    "aa aar|ab abk|ae ave|af afr|ak aka|am amh|an arg|ar ara|as asm|av ava|ay aym|az aze|ba bak|"
    "be bel|bg bul|bi bis|bm bam|bn ben|bo bod tib|br bre|bs bos|ca cat|ce che|ch cha|co cos|cr cre|"
    "cs ces cze|cu chu|cv chv|cy cym wel|da dan|de deu ger|dv div|dz dzo|ee ewe|el ell gre|en eng|"
    "eo epo|es spa|et est|eu eus baq|fa fas per|ff ful|fi fin|fj fij|fo fao|fr fra fre|fy fry|"
    "ga gle|gd gla|gl glg|gn grn|gu guj|gv glv|ha hau|he heb|hi hin|ho hmo|hr hrv|ht hat|hu hun|"
    "hy hye arm|hz her|ia ina|id ind|ie ile|ig ibo|ii iii|ik ipk|io ido|is isl ice|it ita|iu iku|"
    "ja jpn|jv jav|ka kat geo|kg kon|ki kik|kj kua|kk kaz|kl kal|km khm|kn kan|ko kor|kr kau|"
    "ks kas|ku kur|kv kom|kw cor|ky kir|la lat|lb ltz|lg lug|li lim|ln lin|lo lao|lt lit|lu lub|"
    "lv lav|mg mlg|mh mah|mi mri mao|mk mkd mac|ml mal|mn mon|mr mar|ms msa may|mt mlt|my mya bur|"
    "na nau|nb nob|nd nde|ne nep|ng ndo|nl nld dut|nn nno|no nor|nr nbl|nv nav|ny nya|oc oci|"
    "oj oji|om orm|or ori|os oss|pa pan|pi pli|pl pol|ps pus|pt por|qu que|rm roh|rn run|"
    "ro ron rum|ru rus|rw kin|sa san|sc srd|sd snd|se sme|sg sag|si sin|sk slk slo|sl slv|sm smo|"
    "sn sna|so som|sq sqi alb|sr srp|ss ssw|st sot|su sun|sv swe|sw swa|ta tam|te tel|tg tgk|"
    "th tha|ti tir|tk tuk|tl tgl|tn tsn|to ton|tr tur|ts tso|tt tat|tw twi|ty tah|ug uig|uk ukr|"
    "ur urd|uz uzb|ve ven|vi vie|vo vol|wa wln|wo wol|xh xho|yi yid|yo yor|za zha|zh zho chi|zu zul"
)
#: ISO 639-3 individual languages often met in bitext, mapped to a 639-1 macrolanguage when one exists.
_ISO639_3_EXTRA = {
    "swh": "sw", "swc": None, "arb": "ar", "ary": None, "arz": None, "apc": None, "cmn": "zh", "yue": None,
    "wuu": None, "pes": "fa", "prs": None, "zsm": "ms", "ekk": "et", "lvs": "lv", "npi": "ne", "khk": "mn",
    "uzn": "uz", "azj": "az", "plt": "mg", "gaz": "om", "quy": None, "ckb": None, "kmr": None, "fil": None,
    "ceb": None, "hil": None, "war": None, "ilo": None, "pam": None, "bcl": None, "pag": None, "tpi": None,
    "kri": None, "luo": None, "kam": None, "mos": None, "nso": None, "tum": None, "bem": None, "lua": None,
    "kbp": None, "fon": None, "dyu": None, "ewo": None, "hne": None, "mai": None, "bho": None, "mag": None,
    "awa": None, "sat": None, "mni": None, "gom": None, "doi": None, "brx": None, "scn": None, "vec": None,
    "lij": None, "lmo": None, "fur": None, "szl": None, "ast": None, "ltg": None, "hsb": None, "dsb": None,
    "crh": None, "sah": None, "tyv": None, "bak": "ba", "cjk": None, "kab": None, "tzm": None, "zgh": None,
    "taq": None, "shn": None, "ace": None, "ban": None, "bjn": None, "bug": None, "min": None, "mad": None,
}
ISO639_1: dict[str, tuple[str, ...]] = {}
_TO_1: dict[str, str] = {}
for _entry in _ISO639_1.split("|"):
    _one, *_threes = _entry.split()
    ISO639_1[_one] = tuple(_threes)
    for _t in _threes:
        _TO_1[_t] = _one
for _t, _one in _ISO639_3_EXTRA.items():
    if _one is not None:
        _TO_1[_t] = _one


def _known_3(code: str) -> bool:
    if code in _TO_1 or code in _ISO639_3_EXTRA:
        return True
    try:  # the full ISO 639-3 table, when the optional pycountry package is installed
        import pycountry
    except ImportError:
        return False
    return pycountry.languages.get(alpha_3=code) is not None


def check_language_code(code: str) -> str:
    """Validate an ISO 639-1 (two letters) or ISO 639-3 (three letters) code; return it lower-cased."""
    c = code.strip().lower()
    if (len(c) == 2 and c in ISO639_1) or (len(c) == 3 and c.isalpha() and _known_3(c)):
        return c
    hint = ("ISO 639-1 (e.g. en, sw, tl) or ISO 639-3 (e.g. eng, swh, fil); the built-in 639-3 list is "
            "partial: pip install pycountry for the full table") if len(c) == 3 else \
        f"ISO 639-1 codes are: {', '.join(sorted(ISO639_1))}"
    raise ClirkitError(f"unknown language code {code!r}", fix=hint)


def canonical(code: str) -> str:
    """A comparable form of a language tag: primary subtag, lower-cased, 639-3 mapped to 639-1 when possible."""
    primary = re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]
    return _TO_1.get(primary, primary)


def parse_pair(pair: str, *, allow_same: bool = False) -> tuple[str, str]:
    """Split ``"en-sw"`` into validated, lower-cased ``("en", "sw")``.

    Args:
        pair: ``<src>-<tgt>`` with ISO 639-1 or ISO 639-3 codes.
        allow_same: accept one language twice (``en-en``, a monolingual upper bound).

    Raises:
        ClirkitError: not two codes joined by ``-``, an unknown code, or (unless ``allow_same``)
            the same language on both sides (also ``en-eng``).
    """
    parts = pair.strip().split("-")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ClirkitError(f"language pair {pair!r} is not <src>-<tgt>",
                           fix="write the pair as two ISO 639-1/639-3 codes joined by '-', like en-sw")
    src, tgt = (check_language_code(p) for p in parts)
    if not allow_same and canonical(src) == canonical(tgt):
        raise ClirkitError(f"language pair {pair!r} names one language twice", fix="use two languages, e.g. en-sw")
    return src, tgt
