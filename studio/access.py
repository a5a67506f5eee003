"""Who may do what: owners and guests, guest quotas, and slowed-down failed logins.

Owners (`--auth`) may do everything. Guests (`--guest-auth`) may generate with the models the owner
provides — each tab's default or one already loaded — but may not switch, fetch or train models, load
LoRA files, change engine settings or shared styles, or see others' History; and they have a quota of work per
rolling hour, counted in units of work (pictures × steps × size, tokens, frames), not in requests. Without any
login (a studio on this machine only) the single local user is an owner.

Each request's user is its `Caller` (`studio.boundary` builds it for every event); the checks run where each thing
is used, reading that Caller, whatever the page shows.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import defaultdict, deque
from contextvars import ContextVar
from dataclasses import dataclass

LOGIN_ADDRESS: ContextVar[str] = ContextVar("login_address", default="")  # set around the login route (app.launch)


class AccessDenied(ValueError):
    """A request this user may not make; the message says why in plain words."""


UNIT = "one unit is one 512×512 picture at 20 steps (smaller pictures and fewer steps cost less), or 512 tokens of text"


@dataclass(frozen=True)
class Admission:
    """Granted work; `refund()` gives the quota back when the work fails or makes nothing."""

    access: Access | None
    user: str
    at: float
    units: float = 1.0

    def refund(self) -> None:
        if self.access is not None:
            self.access._refund(self.user, self.at)


class Access:
    def __init__(self, owners: tuple[tuple[str, str], ...] = (), guests: tuple[tuple[str, str], ...] = (),
                 guest_generations_per_hour: float = 30, clock=time.time) -> None:
        self.owners = dict(owners)
        self.guests = {user: password for user, password in guests if user not in self.owners}
        self.per_hour = guest_generations_per_hour  # units of work (`UNIT`) a guest may use per rolling hour
        self.clock = clock
        self._used: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._all_failures: deque[float] = deque()
        self._lock = threading.Lock()
        self.key_guests: set[str] = set()  # users of guest API keys (studio/keys.py): guests without a login

    def is_guest(self, user: str) -> bool:
        return user in self.guests or user in self.key_guests

    def register_key_guest(self, user: str) -> None:
        """A guest API key's user is a guest from now on (the same models, limits and quota as a guest login)."""
        with self._lock:
            self.key_guests.add(user)

    def knows(self, user: str) -> bool:
        """A user with a login (owner or guest) or a guest API key."""
        return user in self.owners or user in self.guests or user in self.key_guests

    # -- logins ----------------------------------------------------------------------------------------
    def check_password(self, user: str, password: str) -> bool:
        expected = self.owners.get(user, self.guests.get(user))
        # compare even for unknown users, so timing does not tell which user names exist
        return hmac.compare_digest((expected or "\0unknown").encode(), password.encode()) and expected is not None

    def failure_delay(self, user: str, address: str = "") -> float:
        """Seconds to wait before answering a failed login: 0.5 s doubling per recent failure of this user name or
        from this address (whichever had more), at most 8 s; and, however names and addresses are varied, 0.1 s
        more per failure anyone had in the last minute past 20, at most 8 s more. The tables stay bounded."""
        now = self.clock()
        with self._lock:
            if len(self._failures) > 10_000:  # many made-up user names: forget the stale ones
                for name in [n for n, times in self._failures.items() if times[-1] < now - 900]:
                    del self._failures[name]
                if len(self._failures) > 10_000:  # still too many: the table stays bounded all the same
                    self._failures.clear()
            worst = 0
            for key in (user, "\0address " + address if address else None):
                if key is None:
                    continue
                recent = self._failures[key]
                while recent and recent[0] < now - 900:
                    recent.popleft()
                recent.append(now)
                worst = max(worst, len(recent))
            overall = self._all_failures
            while overall and overall[0] < now - 60:
                overall.popleft()
            if len(overall) < 100_000:
                overall.append(now)
            return min(0.5 * 2 ** (worst - 1), 8.0) + min(max(0, len(overall) - 20) * 0.1, 8.0)

    async def authenticate(self, user: str, password: str) -> bool:
        """Gradio's login check. Failed attempts are answered ever more slowly (per user name and overall)."""
        if self.check_password(user, password):
            with self._lock:
                self._failures.pop(user, None)
            return True
        await asyncio.sleep(self.failure_delay(user, LOGIN_ADDRESS.get()))
        return False

    # -- permissions -----------------------------------------------------------------------------------
    def require_owner(self, user: str, what: str) -> None:
        if self.is_guest(user):
            raise AccessDenied(f"Guests can't {what}. Ask the studio's owner.")

    def admit(self, user: str, units: float = 1.0, what: str = "this") -> Admission:
        """Count `units` of work for a guest (owners are not counted), or say when there is room again."""
        if not self.is_guest(user):
            return Admission(None, user, 0.0, 0.0)
        units = max(float(units), 0.0)
        now = self.clock()
        with self._lock:
            used = self._used[user]
            while used and used[0][0] <= now - 3600:
                used.popleft()
            spent = sum(u for _, u in used)
            if spent + units > self.per_hour + 1e-9:
                left = max(self.per_hour - spent, 0.0)
                resets = time.strftime("%H:%M", time.localtime((used[0][0] if used else now) + 3600))
                raise AccessDenied(f"Quota reached: guests may use {self.per_hour:g} units of work per hour ({UNIT}). "
                                   f"{what[:1].upper() + what[1:]} needs {units:.2f}, and {left:.2f} are left; "
                                   f"more is available at {resets}. Fewer or smaller pictures, or fewer steps, cost "
                                   "less.")
            at = now
            while any(t == at for t, _ in used):  # a distinct time per admission, so a refund removes just it
                at += 1e-6
            used.append((at, units))
        return Admission(self, user, at, units)

    def remaining(self, user: str) -> float | None:
        if not self.is_guest(user):
            return None
        now = self.clock()
        with self._lock:
            return self.per_hour - sum(u for t, u in self._used[user] if t > now - 3600)

    def _refund(self, user: str, at: float) -> None:
        with self._lock:
            used = self._used[user]
            for entry in list(used):
                if entry[0] == at:
                    used.remove(entry)
                    break
