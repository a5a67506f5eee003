"""One cache of loaded models, owned by the app: LRU per modality, reference-counted, frees memory on eviction.

Loading is lazy: a miss calls the loader. Two requests for the same model wait on one load instead of
loading twice. A model is in use while a request holds a lease on it (`lease`), and nothing in use is
evicted: a load that needs room waits for a model to be given back (or says plainly that the models are
busy), and loads in progress count against the limit, so two concurrent loads never overshoot it. Evicted
models are closed (a text engine's worker process) and accelerator memory is returned.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.device import free_memory
from pipelines.registry import ModelNotAvailable

WAIT_FOR_ROOM_S = 120.0


class ModelsBusy(ModelNotAvailable):
    """Every loaded model of a modality is in use and the limit leaves no room for another one yet."""


class ModelCache:
    """`limit` loaded models per modality (default 1): switching models frees the old one once it is idle."""

    def __init__(self, limit: int = 1, wait_for_room_s: float = WAIT_FOR_ROOM_S) -> None:
        if limit < 1:
            raise ValueError(f"cache limit must be at least 1 model per modality, got {limit}")
        self.limit = limit
        self.wait_for_room_s = wait_for_room_s
        self._models: dict[str, OrderedDict[str, Any]] = {}
        self._users: dict[tuple[str, str], int] = {}
        self._doomed: set[tuple[str, str]] = set()  # cleared while in use: dropped when given back
        self._reserved: dict[str, int] = {}  # loads in progress per modality
        self._cond = threading.Condition()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    # -- leases ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, modality: str, key: str, loader: Callable[[], Any]) -> Iterator[Any]:
        """The model `key`, loaded if needed and held in use (never evicted) until the block ends."""
        model = self._acquire(modality, key, loader)
        try:
            yield model
        finally:
            self.release(modality, key)

    def get(self, modality: str, key: str, loader: Callable[[], Any]) -> Any:
        """The model `key`, loaded if needed, for a short use that holds no lease."""
        model = self._acquire(modality, key, loader)
        self.release(modality, key)
        return model

    @contextlib.contextmanager
    def holding(self, model: Any) -> Iterator[None]:
        """Hold an already loaded `model` (found by identity) in use until the block ends, so nobody else's load
        evicts it mid-work; a model no longer in the cache is simply not held."""
        with self._cond:
            found = next(((m, k) for m, slot in self._models.items() for k, v in slot.items() if v is model), None)
            if found is not None:
                self._take(*found)
        try:
            yield
        finally:
            if found is not None:
                self.release(*found)

    def in_use(self, modality: str, key: str) -> int:
        with self._cond:
            return self._users.get((modality, key), 0)

    def _acquire(self, modality: str, key: str, loader: Callable[[], Any]) -> Any:
        with self._cond:
            slot = self._models.setdefault(modality, OrderedDict())
            if key in slot:
                return self._take(modality, key)
            load_lock = self._loading.setdefault((modality, key), threading.Lock())
        with load_lock:
            with self._cond:
                if key in slot:
                    return self._take(modality, key)
                # Evict before loading, so the old and the new model never sit in memory together
                dropped = self._make_room(modality, key)
                self._reserved[modality] = self._reserved.get(modality, 0) + 1
            self._close(dropped)
            try:
                model = loader()
            except BaseException:
                with self._cond:
                    self._reserved[modality] -= 1
                    self._cond.notify_all()
                raise
            with self._cond:
                self._reserved[modality] -= 1
                slot[key] = model
                self._loading.pop((modality, key), None)
                return self._take(modality, key)

    def _take(self, modality: str, key: str) -> Any:
        slot = self._models[modality]
        slot.move_to_end(key)
        self._users[(modality, key)] = self._users.get((modality, key), 0) + 1
        return slot[key]

    def release(self, modality: str, key: str) -> None:
        dropped = []
        with self._cond:
            left = self._users.get((modality, key), 0) - 1
            if left > 0:
                self._users[(modality, key)] = left
            else:
                self._users.pop((modality, key), None)
                if (modality, key) in self._doomed:
                    self._doomed.discard((modality, key))
                    dropped.append(self._models[modality].pop(key))
            self._cond.notify_all()
        self._close(dropped)

    def _make_room(self, modality: str, key: str) -> list:
        """With the lock held: drop idle models (least recently used first) until the new one fits; wait while
        every loaded one is in use."""
        slot = self._models[modality]
        dropped = []
        waited = 0.0
        while len(slot) + self._reserved.get(modality, 0) >= self.limit:
            idle = [k for k in slot if not self._users.get((modality, k))]
            if idle:
                dropped.append(slot.pop(idle[0]))
                continue
            if waited >= self.wait_for_room_s:
                busy = ", ".join(slot) or "another model being loaded"
                raise ModelsBusy(f"{key} cannot load yet: {busy} is still in use by another request, and this "
                                 f"studio keeps {self.limit} {modality} model(s) at a time. Try again when it is done.")
            self._cond.wait(1.0)
            waited += 1.0
        return dropped

    @staticmethod
    def _close(dropped: list) -> None:
        if not dropped:
            return
        for model in dropped:
            close = getattr(model, "close", None)  # e.g. a text engine's worker process
            if callable(close):
                close()
        dropped.clear()
        free_memory()

    # -- reading and clearing --------------------------------------------------------------------------
    def peek(self, modality: str, key: str) -> Any | None:
        """A loaded model without loading or reordering anything (None when it is not loaded)."""
        with self._cond:
            return self._models.get(modality, {}).get(key)

    def loaded(self, modality: str | None = None) -> list[tuple[str, str]]:
        with self._cond:
            return [(m, k) for m, slot in self._models.items() for k in slot if modality in (None, m)]

    def clear(self, modality: str | None = None) -> None:
        """Drop the modality's models (all when None): idle ones now, those in use when they are given back."""
        dropped = []
        with self._cond:
            for m in list(self._models) if modality is None else [modality]:
                slot = self._models.get(m, OrderedDict())
                for key in list(slot):
                    if self._users.get((m, key)):
                        self._doomed.add((m, key))
                    else:
                        dropped.append(slot.pop(key))
        self._close(dropped)
