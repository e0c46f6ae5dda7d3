"""Usernames: what is allowed, and how a name becomes a broker-safe token.

Allowed: 1 to 64 characters after NFC normalisation; Unicode letters and digits, plus ``. _ - @ + * #``. No
white space, no control characters, no ``/``. Names are case-sensitive.

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
_PUNCTUATION_ALLOWED = frozenset("._-@+*#")
_TOKEN_PLAIN = re.compile(r"[A-Za-z0-9-]")


def normalize_username(raw: str) -> str:
    """Return the canonical form of ``raw`` or raise ``InvalidUsername`` saying which rule it breaks."""
    name = unicodedata.normalize("NFC", raw)
    if not name:
        raise InvalidUsername("a username cannot be empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise InvalidUsername(f"a username has at most {MAX_USERNAME_LENGTH} characters")
    for char in name:
        if not (char.isalnum() or char in _PUNCTUATION_ALLOWED):
            raise InvalidUsername(
                f"{char!r} is not allowed in a username: use letters, digits and . _ - @ + * #"
            )
    return name


def is_valid_username(raw: str) -> bool:
    try:
        return normalize_username(raw) == raw
    except InvalidUsername:
        return False


def user_token(username: str) -> str:
    """An injective, wildcard-free encoding of a username for routing keys and queue names."""
    parts: list[str] = []
    for char in username:
        if _TOKEN_PLAIN.fullmatch(char):
            parts.append(char)
        else:
            parts.append(f"_{ord(char):x}_")
    return "".join(parts)
