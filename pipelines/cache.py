"""One cache of loaded models, owned by the app: LRU per modality, frees memory on eviction.

Loading is lazy: `get()` calls the loader only on a miss. Two requests for the same model wait on
one load instead of loading twice. Evicted models are dropped and accelerator memory is returned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pipelines.device import free_memory


class ModelCache:
    """`limit` loaded models per modality (default 1): switching models frees the old one."""

    def __init__(self, limit: int = 1) -> None:
        if limit < 1:
            raise ValueError(f"cache limit must be at least 1 model per modality, got {limit}")
        self.limit = limit
        self._models: dict[str, OrderedDict[str, Any]] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def get(self, modality: str, key: str, loader: Callable[[], Any]) -> Any:
        with self._lock:
            slot = self._models.setdefault(modality, OrderedDict())
            if key in slot:
                slot.move_to_end(key)
                return slot[key]
            load_lock = self._loading.setdefault((modality, key), threading.Lock())
        with load_lock:
            with self._lock:
                if key in slot:
                    return slot[key]
            # Evict before loading, so the old and the new model never sit in memory together.
            self._evict(modality, keep=self.limit - 1)
            model = loader()
            with self._lock:
                slot[key] = model
                self._loading.pop((modality, key), None)
            return model

    def _evict(self, modality: str, keep: int) -> None:
        dropped = []
        with self._lock:
            slot = self._models.get(modality, OrderedDict())
            while len(slot) > keep:
                dropped.append(slot.popitem(last=False))
        if dropped:
            for _, model in dropped:
                close = getattr(model, "close", None)  # e.g. a text engine's worker process
                if callable(close):
                    close()
            del dropped, model
            free_memory()

    def peek(self, modality: str, key: str) -> Any | None:
        """A loaded model without loading or reordering anything (None when it is not loaded)."""
        with self._lock:
            return self._models.get(modality, {}).get(key)

    def loaded(self, modality: str | None = None) -> list[tuple[str, str]]:
        with self._lock:
            return [(m, k) for m, slot in self._models.items() for k in slot if modality in (None, m)]

    def clear(self, modality: str | None = None) -> None:
        for m in list(self._models) if modality is None else [modality]:
            self._evict(m, keep=0)
