"""The app's state, built once at start-up: settings, the model host, history, jobs, access.

Only read-only weights are shared between users; per-user state (a running job's Stop flag) is
keyed by the Gradio session so one user's Stop never stops another user's job. Model execution —
loading, placement, memory, the cache — belongs to `studio.host.ModelHost`, and what a request may load or
render to its admission (`services.host.admission`, `studio.admission.ModelAdmission`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from studio.access import Access
from studio.config import Settings
from studio.history import History
from studio.host import ModelHost

log = logging.getLogger("studio")


class Jobs:
    """Cancel flags of running jobs, one per (session, tab)."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str, tab: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[(session, tab)] = event
        return event

    def supersede(self, session: str, tab: str) -> threading.Event:
        """A new job that stops the one it replaces (real-time pictures: the newest request wins)."""
        event = threading.Event()
        with self._lock:
            older = self._events.get((session, tab))
            self._events[(session, tab)] = event
        if older is not None:
            older.set()
        return event

    def cancel(self, session: str, tab: str) -> bool:
        with self._lock:
            event = self._events.get((session, tab))
        if event is None:
            return False
        event.set()
        return True

    def finish(self, session: str, tab: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get((session, tab)) is event:
                del self._events[(session, tab)]


def provenance(settings: Settings):
    """What seals History's pictures and videos: this install's credentials (made now, on the first run, under
    the settings folder inside the outputs folder) or the user's own certificate; None when both are off."""
    from importlib.metadata import PackageNotFoundError, version

    from pipelines.provenance import Provenance

    if not (settings.content_credentials or settings.watermark):
        return None
    try:
        release = version("genai-studio")
    except PackageNotFoundError:
        release = "0"
    cert, key = (Path(p).expanduser() if p else None for p in (settings.signing_cert, settings.signing_key))
    sealer = Provenance(Path(settings.outputs) / "settings" / "credentials", settings.content_credentials,
                        settings.watermark, cert, key, release)
    if settings.content_credentials and cert:
        sealer.check()  # the user's own certificate: a start-up error when it cannot sign, not unsigned pictures
    elif settings.content_credentials:
        sealer.credentials()  # this install's own, made now on the first run
    return sealer


@dataclass
class Services:
    """The app's state — History, Access, Jobs, share links, upscaler models of the Upscale panel — beside the
    `ModelHost` that owns model execution (`services.host`: placement, registry, cache, lanes, pipelines, leases;
    `services.host.admission`: what a request may load or render)."""

    settings: Settings
    host: ModelHost
    history: History
    jobs: Jobs = field(default_factory=Jobs)
    repair_report: dict = field(default_factory=dict)
    access: Access = field(default_factory=Access)
    upscalers: dict = field(default_factory=dict)  # upscaler models loaded for the Upscale panel, by path

    @classmethod
    def create(cls, settings: Settings) -> Services:
        history = History(settings.outputs, provenance(settings))
        return cls(settings=settings, host=ModelHost.create(settings), history=history,
                   repair_report=history.repair(),
                   access=Access(settings.auth, settings.guest_auth, settings.guest_generations_per_hour))

    @cached_property
    def links(self):
        """Per-item share links (the secret lives in the settings folder inside the outputs folder)."""
        from studio.share import ItemLinks

        return ItemLinks(self.history, self.history.root / "settings" / "share.key")

    @cached_property
    def explorations(self):
        """Exploration links (the workbench's state, kept in the settings folder; signed with the links' secret)."""
        from studio.explorations import Explorations

        return Explorations(self.history.root / "settings" / "explorations", lambda: self.links.secret)
