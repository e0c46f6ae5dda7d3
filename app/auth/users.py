"""The user directory: names and scrypt password hashes in ``USERS_FILE`` (JSON).

The file is re-read when its modification time changes, so ``python -m app users add`` takes effect on running
nodes without a restart. A file that cannot be read or parsed while the node runs keeps the last good directory
(and is logged), so a half-edited file never signs everybody out; the CLI refuses to write over such a file.
Passwords are never logged or stored in clear; verification takes the same time for an unknown user as for a
wrong password, so the answer does not tell which names exist.

``check_password`` is the expensive part (scrypt, ~45 ms and 16 MiB): a plain function of its (picklable)
arguments, so the server runs it in worker processes (``app.auth.hashing``).

Names follow ``app.core.identity``: ``add`` stores the normalised name and refuses one whose skeleton matches
another user's. Names stored before those rules keep working exactly as written (``resolve`` tries the name as
typed first); ``legacy_names`` lists the ones that break a rule, for ``python -m app users check``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..core.errors import InvalidUsername, WarrenError
from ..core.identity import looks_alike, normalize_username, username_skeletons

log = logging.getLogger(__name__)

# scrypt cost: ~50 ms and 16 MiB per check on this class of machine, OWASP's minimum parameters for scrypt.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_KEY_LENGTH = 32
MIN_PASSWORD_LENGTH = 8
#: How stale this process's view of USERS_FILE may be: a user added by the CLI can sign in within this time.
_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class PasswordRecord:
    salt: bytes
    key: bytes
    #: Bumped by a password change; sessions carry it, so a change ends old sessions on every node.
    generation: int = 0


def _derive(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=_KEY_LENGTH, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)


def check_password(record: PasswordRecord, password: str) -> bool:
    """True when ``password`` matches ``record`` (thread-safe; costs one scrypt)."""
    try:
        _derive(record.salt).verify(password.encode(), record.key)
    except InvalidKey:
        return False
    return True


class PasswordTooShort(ValueError):
    pass


class UsersFileError(WarrenError):
    """``USERS_FILE`` exists but cannot be read as a user directory; the message says what is wrong."""

    reason = "users-file"


def read_users_file(path: Path) -> dict[str, PasswordRecord]:
    """Parse ``path`` (missing: no users) or raise ``UsersFileError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"USERS_FILE={str(path)!r} cannot be read: {exc}") from None
    problem = "expected {\"users\": {NAME: {\"salt\": …, \"key\": …}}}"
    try:
        data = json.loads(text or "{}")
        entries = data.get("users", {}) if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
            raise ValueError(problem)
        return {
            name: PasswordRecord(
                salt=base64.b64decode(entry["salt"], validate=True),
                key=base64.b64decode(entry["key"], validate=True),
                generation=int(entry.get("generation", 0)),
            )
            for name, entry in entries.items()
        }
    except KeyError as exc:
        raise UsersFileError(f"USERS_FILE={str(path)!r} is not a Warren users file: {exc} missing") from None
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise UsersFileError(f"USERS_FILE={str(path)!r} is not a Warren users file: {exc}") from None


class UserDirectory:
    def __init__(self, path: Path, *, recheck_seconds: float = _RECHECK_SECONDS) -> None:
        self.path = path
        self._recheck_seconds = recheck_seconds
        self._records: dict[str, PasswordRecord] = {}
        self._mtime: float | None = None
        self._checked_at = float("-inf")
        #: A fixed record to verify against when the user is unknown, so both answers cost the same.
        self.decoy = PasswordRecord(salt=os.urandom(16), key=os.urandom(_KEY_LENGTH))

    # -- reading --------------------------------------------------------------------------------------------

    def _refresh(self, *, force: bool = False, strict: bool = False) -> None:
        # Every message checks its receiver here: look at the file at most once a second, not per message
        # (except to confirm a miss: a user added a moment ago exists at once).
        now = time.monotonic()
        if not force and now - self._checked_at < self._recheck_seconds:
            return
        self._checked_at = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return
        except OSError as exc:
            if strict:
                raise UsersFileError(f"USERS_FILE={str(self.path)!r} cannot be read: {exc}") from None
            return
        if mtime == self._mtime:
            return
        try:
            records = read_users_file(self.path)
        except UsersFileError as exc:
            if strict:
                raise
            log.error("%s; still using the users read before", exc)
            self._mtime = mtime  # logged once per change of the file, not on every request
            return
        self._records, self._mtime = records, mtime

    def reload(self) -> None:
        """Read the file now; raise ``UsersFileError`` when it cannot be used (the CLI, before it changes it)."""
        self._refresh(force=True, strict=True)

    def exists(self, username: str) -> bool:
        self._refresh()
        if username not in self._records:
            self._refresh(force=True)
        return username in self._records

    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._records)

    def generation(self, username: str) -> int | None:
        self._refresh()
        record = self._records.get(username)
        if record is None:
            self._refresh(force=True)
            record = self._records.get(username)
        return None if record is None else record.generation

    def resolve(self, typed: str) -> str | None:
        """The stored name a sign-in form's ``typed`` name means, or None.

        The name as typed (NFC) when it is stored (names added before the current rules keep working), else its
        normalised form (what ``users add`` would have stored: ``ａｌｉｃｅ`` signs in as ``alice``)."""
        self._refresh(force=True)  # sign-in is rare and costs a scrypt anyway: always the current file
        exact = unicodedata.normalize("NFC", typed)
        if exact in self._records:
            return exact
        try:
            name = normalize_username(typed)
        except InvalidUsername:
            return None
        return name if name in self._records else None

    def record(self, username: str) -> PasswordRecord | None:
        self._refresh()
        return self._records.get(username)

    def verify(self, username: str, password: str) -> bool:
        """Synchronous check (CLI and tests); the server uses ``resolve``, ``record`` and a worker pool."""
        name = self.resolve(username)
        record = None if name is None else self._records.get(name)
        return check_password(record or self.decoy, password) and record is not None

    def legacy_names(self) -> list[tuple[str, str]]:
        """Stored names that break today's rules, each with the rule: they work, but should be renamed."""
        self._refresh(force=True, strict=True)
        problems: list[tuple[str, str]] = []
        by_skeleton: dict[str, str] = {}
        for name in sorted(self._records):
            try:
                if normalize_username(name) != name:
                    problems.append((name, f"not normalised (would be {normalize_username(name)!r})"))
            except InvalidUsername as exc:
                problems.append((name, str(exc)))
            skeletons = username_skeletons(name)
            twin = next((by_skeleton[s] for s in sorted(skeletons) if s in by_skeleton), None)
            if twin is not None:
                problems.append((name, f"looks like {twin!r}"))
            for skeleton in skeletons:
                by_skeleton.setdefault(skeleton, name)
        return problems

    # -- writing (CLI) ----------------------------------------------------------------------------------------

    def add(self, username: str, password: str) -> str:
        """Add a user or change their password; returns the normalised name."""
        self._refresh(force=True, strict=True)
        name = self.resolve(username) or normalize_username(username)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordTooShort(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        if name not in self._records:
            for other in self._records:
                if looks_alike(name, other):
                    raise InvalidUsername(
                        f"{name!r} looks too much like the existing user {other!r}: choose a different name"
                    )
        salt = os.urandom(16)
        key = _derive(salt).derive(password.encode())
        previous = self._records.get(name)
        generation = 0 if previous is None else previous.generation + 1
        self._records[name] = PasswordRecord(salt, key, generation)
        self._write()
        return name

    def remove(self, username: str) -> bool:
        self._refresh(force=True, strict=True)
        name = self.resolve(username)
        if name is None or self._records.pop(name, None) is None:
            return False
        self._write()
        return True

    def bump_generation(self, username: str) -> None:
        self._refresh(force=True, strict=True)
        name = self.resolve(username)
        record = None if name is None else self._records.get(name)
        if name is not None and record is not None:
            self._records[name] = PasswordRecord(record.salt, record.key, record.generation + 1)
            self._write()

    def _write(self) -> None:
        data = {
            "users": {
                name: {
                    "salt": base64.b64encode(r.salt).decode(),
                    "key": base64.b64encode(r.key).decode(),
                    "generation": r.generation,
                    "kdf": f"scrypt-n{_SCRYPT_N}-r{_SCRYPT_R}-p{_SCRYPT_P}",
                }
                for name, r in sorted(self._records.items())
            }
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename: a reader on another node never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, ensure_ascii=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = None
        self._checked_at = float("-inf")


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
