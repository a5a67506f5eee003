"""API keys: one per user, for the OpenAI- and AUTOMATIC1111-compatible routes (studio/compat).

`studio keys add NAME [--guest]` prints a new key once; only a salted hash (PBKDF2-SHA256) is kept, with the
name, whether the key is a guest's, and when it was made, in `<outputs>/settings/api-keys.json` (the settings
folder is the studio's own: never served). A key names a user: an owner key acts as that owner, a guest key as
a guest (the same models, limits and quota as a guest login). A key reads `sk-studio-<id>.<secret>`: the id
finds its entry, so checking a key costs one hash, and a checked key is remembered until the file changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PREFIX = "sk-studio-"
ITERATIONS = 200_000
NAME = re.compile(r"[A-Za-z0-9][\w.@-]{0,63}")


@dataclass(frozen=True)
class KeyEntry:
    """One stored key: its user `name`, `guest`, `created` (epoch seconds), the key's `id`, `salt` and `hash`."""

    name: str
    guest: bool
    created: float
    id: str
    salt: str
    hash: str


def _digest(secret: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt), ITERATIONS).hex()


class ApiKeys:
    """The keys file of an outputs folder: add, list, revoke, and `user_of(key)` → (name, guest) or None."""

    def __init__(self, outputs: Path) -> None:
        self.path = Path(outputs) / "settings" / "api-keys.json"
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[str, bool]] = {}  # sha256 of a key checked → its user
        self._stamp: float | None = None

    def entries(self) -> list[KeyEntry]:
        if not self.path.is_file():
            return []
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return [KeyEntry(**entry) for entry in data.get("keys", [])]

    def _write(self, entries: list[KeyEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"keys": [asdict(e) for e in entries]}, f, indent=1)
        os.replace(temp, self.path)

    def add(self, name: str, *, guest: bool = False) -> str:
        """A new key for user `name` (a user may hold several); returns the key, which is never stored."""
        if not NAME.fullmatch(name or ""):
            raise ValueError("name: 1 to 64 letters, digits, '.', '@', '-' or '_', starting with a letter or digit; "
                             f"got {str(name)[:70]!r}")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self._lock:
            self._write([*self.entries(), KeyEntry(name, guest, time.time(), key_id, salt, _digest(secret, salt))])
        return f"{PREFIX}{key_id}.{secret}"

    def revoke(self, name: str) -> int:
        """Remove every key of user `name`; returns how many were removed."""
        with self._lock:
            entries = self.entries()
            kept = [e for e in entries if e.name != name]
            if len(kept) != len(entries):
                self._write(kept)
            self._checked.clear()
        return len(entries) - len(kept)

    def user_of(self, key: str) -> tuple[str, bool] | None:
        """(user name, guest) of a valid key, else None."""
        match = re.fullmatch(re.escape(PREFIX) + r"([0-9a-f]{12})\.([\w-]{20,100})", (key or "").strip())
        if not match:
            return None
        fingerprint = hashlib.sha256(key.strip().encode()).hexdigest()
        with self._lock:
            stamp = self.path.stat().st_mtime if self.path.is_file() else None
            if stamp != self._stamp:  # added or revoked since (perhaps by `studio keys` in another process)
                self._checked.clear()
                self._stamp = stamp
            if fingerprint in self._checked:
                return self._checked[fingerprint]
        entry = next((e for e in self.entries() if e.id == match.group(1)), None)
        if entry is None or not hmac.compare_digest(entry.hash, _digest(match.group(2), entry.salt)):
            return None
        with self._lock:
            self._checked[fingerprint] = (entry.name, entry.guest)
        return entry.name, entry.guest
