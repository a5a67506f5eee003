"""Who may do what: owners and guests, guest quotas, and slowed-down failed logins.

Owners (`--auth`) may do everything. Guests (`--guest-auth`) may generate with the models the owner
provides — each tab's default or one already loaded — but may not switch, fetch or train models, load
LoRA files, change engine settings, or see others' History; and they have a quota of generations per
rolling hour. Without any login (a studio on this machine only) the single local user is an owner.

The checks run on the server for every event (`studio.tabs.common.guarded`), whatever the page shows.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass


class AccessDenied(ValueError):
    """A request this user may not make; the message says why in plain words."""


@dataclass(frozen=True)
class Admission:
    """A granted generation; `refund()` gives the quota back when the generation fails."""

    access: Access | None
    user: str
    at: float

    def refund(self) -> None:
        if self.access is not None:
            self.access._refund(self.user, self.at)


class Access:
    def __init__(self, owners: tuple[tuple[str, str], ...] = (), guests: tuple[tuple[str, str], ...] = (),
                 guest_generations_per_hour: int = 30, clock=time.time) -> None:
        self.owners = dict(owners)
        self.guests = {user: password for user, password in guests if user not in self.owners}
        self.per_hour = guest_generations_per_hour
        self.clock = clock
        self._used: dict[str, deque[float]] = defaultdict(deque)
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.key_guests: set[str] = set()  # users of guest API keys (studio/keys.py): guests without a login

    def is_guest(self, user: str) -> bool:
        return user in self.guests or user in self.key_guests

    def register_key_guest(self, user: str) -> None:
        """A guest API key's user is a guest from now on (the same models, limits and quota as a guest login)."""
        with self._lock:
            self.key_guests.add(user)

    # -- logins ----------------------------------------------------------------------------------------
    def check_password(self, user: str, password: str) -> bool:
        expected = self.owners.get(user, self.guests.get(user))
        # compare even for unknown users, so timing does not tell which user names exist
        return hmac.compare_digest((expected or "\0unknown").encode(), password.encode()) and expected is not None

    def failure_delay(self, user: str) -> float:
        """Seconds to wait before answering a failed login: 0.5 s doubling per recent failure, at most 8 s."""
        now = self.clock()
        with self._lock:
            if len(self._failures) > 10_000:  # many made-up user names: forget the stale ones
                for name in [n for n, times in self._failures.items() if times[-1] < now - 900]:
                    del self._failures[name]
            recent = self._failures[user]
            while recent and recent[0] < now - 900:
                recent.popleft()
            recent.append(now)
            return min(0.5 * 2 ** (len(recent) - 1), 8.0)

    async def authenticate(self, user: str, password: str) -> bool:
        """Gradio's login check. Failed attempts are answered ever more slowly (per user name)."""
        if self.check_password(user, password):
            with self._lock:
                self._failures.pop(user, None)
            return True
        await asyncio.sleep(self.failure_delay(user))
        return False

    # -- permissions -----------------------------------------------------------------------------------
    def require_owner(self, user: str, what: str) -> None:
        if self.is_guest(user):
            raise AccessDenied(f"Guests can't {what}. Ask the studio's owner.")

    def admit(self, user: str, tab: str) -> Admission:
        """Count one generation for a guest, or say when the next one is allowed."""
        if not self.is_guest(user):
            return Admission(None, user, 0.0)
        now = self.clock()
        with self._lock:
            used = self._used[user]
            while used and used[0] <= now - 3600:
                used.popleft()
            if len(used) >= self.per_hour:
                resets = time.strftime("%H:%M", time.localtime(used[0] + 3600))
                raise AccessDenied(f"Quota reached: guests may make {self.per_hour} generations per hour. "
                                   f"Your next one is available at {resets}.")
            used.append(now)
        return Admission(self, user, now)

    def remaining(self, user: str) -> int | None:
        if not self.is_guest(user):
            return None
        now = self.clock()
        with self._lock:
            return self.per_hour - sum(1 for t in self._used[user] if t > now - 3600)

    def _refund(self, user: str, at: float) -> None:
        with self._lock:
            try:
                self._used[user].remove(at)
            except ValueError:
                pass
