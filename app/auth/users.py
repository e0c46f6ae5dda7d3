"""The user directory: names and scrypt password hashes in ``USERS_FILE`` (JSON).

The file is re-read when its modification time changes, so ``python -m app users add`` takes effect on running
nodes without a restart. Passwords are never logged or stored in clear; verification takes the same time for an
unknown user as for a wrong password, so the answer does not tell which names exist.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..core.identity import normalize_username

# scrypt cost: ~50 ms and 16 MiB per check on this class of machine, OWASP's minimum parameters for scrypt.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_KEY_LENGTH = 32
MIN_PASSWORD_LENGTH = 8
#: How stale this process's view of USERS_FILE may be: a user added by the CLI can sign in within this time.
_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class _Record:
    salt: bytes
    key: bytes
    #: Bumped by a password change; sessions carry it, so a change ends old sessions on every node.
    generation: int = 0


def _derive(password: str, salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=_KEY_LENGTH, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)


class PasswordTooShort(ValueError):
    pass


class UserDirectory:
    def __init__(self, path: Path, *, recheck_seconds: float = _RECHECK_SECONDS) -> None:
        self.path = path
        self._recheck_seconds = recheck_seconds
        self._records: dict[str, _Record] = {}
        self._mtime: float | None = None
        self._checked_at = float("-inf")
        # A fixed record to verify against when the user is unknown, so both answers cost the same.
        self._decoy = _Record(salt=os.urandom(16), key=os.urandom(_KEY_LENGTH))

    # -- reading --------------------------------------------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
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
        if mtime == self._mtime:
            return
        data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        records = {}
        for name, entry in data.get("users", {}).items():
            records[name] = _Record(
                salt=base64.b64decode(entry["salt"]),
                key=base64.b64decode(entry["key"]),
                generation=int(entry.get("generation", 0)),
            )
        self._records, self._mtime = records, mtime

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

    def verify(self, username: str, password: str) -> bool:
        self._refresh(force=True)  # sign-in is rare and costs a scrypt anyway: always the current file
        record = self._records.get(username)
        checked = record or self._decoy
        try:
            _derive(password, checked.salt).verify(password.encode(), checked.key)
        except InvalidKey:
            return False
        return record is not None

    # -- writing (CLI) ----------------------------------------------------------------------------------------

    def add(self, username: str, password: str) -> str:
        """Add a user or change their password; returns the normalised name."""
        name = normalize_username(username)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise PasswordTooShort(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        self._refresh()
        salt = os.urandom(16)
        key = _derive(password, salt).derive(password.encode())
        previous = self._records.get(name)
        generation = 0 if previous is None else previous.generation + 1
        self._records[name] = _Record(salt, key, generation)
        self._write()
        return name

    def remove(self, username: str) -> bool:
        self._refresh()
        if self._records.pop(username, None) is None:
            return False
        self._write()
        return True

    def bump_generation(self, username: str) -> None:
        self._refresh()
        record = self._records.get(username)
        if record is not None:
            self._records[username] = _Record(record.salt, record.key, record.generation + 1)
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
