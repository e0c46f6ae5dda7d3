"""Usernames: what is allowed, how a name is compared, and how a name becomes a broker-safe token.

Rules (``normalize_username``), chosen so that one name cannot pass for another on screen:

- The name is NFKC-normalised: fullwidth ``ａｌｉｃｅ``, ligatures and other compatibility forms become their
  plain letters, so they *are* the plain name rather than a look-alike of it.
- 1 to 64 characters; Unicode letters and digits, plus ``. _ - @ + * #``. No white space, no control or format
  characters (zero-width spaces and joiners, bidi controls), and none of Unicode's default-ignorable code points,
  which include letters that draw nothing (U+3164 HANGUL FILLER, U+115F, U+1160, U+FFA0).
- One script per name (Unicode's "highly restrictive" level, approximated from character names): Latin, Cyrillic,
  Greek, Arabic… each alone; Latin may be combined only with Han/Hiragana/Katakana, Han/Hangul or Han/Bopomofo.
  ``pаypal`` with a Cyrillic ``а`` is refused.
- Names stay case-sensitive as typed, but no two users may share a *skeleton* (``username_skeletons``): the name
  with whole-script look-alikes mapped to Latin (Cyrillic ``асе`` → ``ace``, Greek ``ο`` → ``o``), ``I``/``1``/
  ``|`` → ``l``, ``0`` → ``o``, ``rn`` → ``m``, ``vv`` → ``w``, case-folded (before or after the mapping). So
  ``Alice``, ``ALICE``, ``aIice``, ``a1ice`` and an all-Cyrillic ``аӏісе`` cannot be added next to ``alice`` (the
  user directory enforces it).

``.``, ``*`` and ``#`` are allowed in names on purpose: they are exactly the characters that would act as separators
or wildcards in a RabbitMQ topic routing key, so Warren never puts a raw name into a routing key or queue name.
``user_token`` maps every name to a string of ``[A-Za-z0-9-]`` and ``_xx_`` escapes: injective (``_`` itself is
always escaped, so two names can never share a token), readable in the management UI for plain names, and free of
``%`` (which the AMQP client refuses in queue names).
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidUsername

MAX_USERNAME_LENGTH = 64
#: Longest input looked at: NFKC may shorten a name (decomposed Hangul, combining marks), never by more than this.
_MAX_RAW_LENGTH = 4 * MAX_USERNAME_LENGTH
_PUNCTUATION_ALLOWED = frozenset("._-@+*#")
_TOKEN_PLAIN = re.compile(r"[A-Za-z0-9-]")

#: Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters a renderer may draw as
#: nothing. Several are letters (``isalnum()`` is true for U+3164), so the letter rule alone does not catch them.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip

_HAN = "CJK"
#: Scripts that may share a name with Latin and with each other (UTS #39 "highly restrictive").
_COMBINABLE = (
    frozenset({_HAN, "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"}),
    frozenset({_HAN, "HANGUL"}),
    frozenset({_HAN, "BOPOMOFO"}),
)

#: Look-alikes of Latin letters in other scripts, and within Latin, for ``username_skeletons``: a small hand-made
#: subset of Unicode's confusables.txt covering the letters that are drawn identically in common fonts.
_CONFUSABLE = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "ӏ": "l",
        "м": "m", "о": "o", "р": "p", "ԛ": "q", "г": "r", "ѕ": "s", "т": "t", "ц": "u", "ѵ": "v", "ԝ": "w",
        "х": "x", "у": "y", "ь": "b", "ё": "e", "ї": "i", "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H",
        "І": "I", "Ј": "J", "К": "K", "М": "M", "О": "O", "Р": "P", "Ѕ": "S", "Т": "T", "Х": "X", "У": "Y",
        "Ү": "Y", "Ԝ": "W", "Ԛ": "Q",
        # Greek
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "γ": "y", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K",
        "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
        # Within Latin and digits
        "I": "l", "1": "l", "|": "l", "0": "o", "ı": "i",
    }
)  # fmt: skip
_CONFUSABLE_SEQUENCES = (("rn", "m"), ("vv", "w"))


def _invisible(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES) or unicodedata.category(char) in (
        "Cc",
        "Cf",
        "Co",
        "Cs",
        "Cn",
        "Zs",
        "Zl",
        "Zp",
    )


def _script(char: str) -> str | None:
    """The script of a letter, from the first word of its Unicode name; None for digits and punctuation."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "UNKNOWN")
    if name.startswith(("HALFWIDTH ", "FULLWIDTH ")):  # NFKC has folded these already; kept for safety
        name = name.split(" ", 1)[1]
    return name.split(" ", 1)[0]


def _scripts_may_mix(scripts: set[str]) -> bool:
    others = scripts - {"LATIN"}
    if len(scripts) <= 1:
        return True
    return any(others <= group for group in _COMBINABLE)


def normalize_username(raw: str) -> str:
    """Return the canonical form of ``raw`` or raise ``InvalidUsername`` saying which rule it breaks."""
    if len(raw) > _MAX_RAW_LENGTH:  # before any per-character work: a sign-in form can carry a megabyte
        raise InvalidUsername(f"a username has at most {MAX_USERNAME_LENGTH} characters")
    for char in raw:
        if _invisible(char):
            raise InvalidUsername(
                f"U+{ord(char):04X} is invisible or a control character and is not allowed in a username"
            )
    name = unicodedata.normalize("NFKC", raw)
    if not name:
        raise InvalidUsername("a username cannot be empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise InvalidUsername(f"a username has at most {MAX_USERNAME_LENGTH} characters")
    scripts: set[str] = set()
    for char in name:
        if _invisible(char):
            raise InvalidUsername(
                f"U+{ord(char):04X} is invisible or a control character and is not allowed in a username"
            )
        if not (char.isalnum() or char in _PUNCTUATION_ALLOWED):
            raise InvalidUsername(f"{char!r} is not allowed in a username: use letters, digits and . _ - @ + * #")
        script = _script(char)
        if script is not None:
            scripts.add(script)
    if not _scripts_may_mix(scripts):
        raise InvalidUsername(
            f"a username uses letters of one script only (found {', '.join(sorted(s.title() for s in scripts))}): "
            "mixed scripts can imitate other names"
        )
    return name


def is_valid_username(raw: str) -> bool:
    try:
        return normalize_username(raw) == raw
    except InvalidUsername:
        return False


def _skeleton(text: str) -> str:
    skeleton = text.translate(_CONFUSABLE)
    for sequence, replacement in _CONFUSABLE_SEQUENCES:
        skeleton = skeleton.replace(sequence, replacement)
    return skeleton.casefold()


def username_skeletons(name: str) -> frozenset[str]:
    """What ``name`` looks like; two names sharing a skeleton could be mistaken for each other on screen.

    Two, because look-alikes depend on case: ``I`` looks like ``l`` (``aIice`` ~ ``alice``), and ``ALICE`` is
    ``alice`` in capitals. One skeleton maps look-alikes as written, the other after case folding."""
    name = unicodedata.normalize("NFKC", name)
    return frozenset({_skeleton(name), _skeleton(name.casefold())})


def looks_alike(a: str, b: str) -> bool:
    return bool(username_skeletons(a) & username_skeletons(b))


def user_token(username: str) -> str:
    """An injective, wildcard-free encoding of a username for routing keys and queue names."""
    parts: list[str] = []
    for char in username:
        if _TOKEN_PLAIN.fullmatch(char):
            parts.append(char)
        else:
            parts.append(f"_{ord(char):x}_")
    return "".join(parts)
