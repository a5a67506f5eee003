"""History: every output saved under the outputs folder and indexed in SQLite.

Writes are atomic: the file is written to a temporary name and renamed, then the row is inserted
in one transaction; a crash in between leaves at worst an orphan file, which `repair()` (run at
start-up) removes together with rows whose files vanished. Rows are never half-written.

With a `Provenance`, every picture and video is sealed on its way in (invisible watermark, then Content
Credentials: see `pipelines.provenance`), so each file History holds says how it was made.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.provenance import CREATED_ORIGIN, Origin, Provenance

log = logging.getLogger("studio")
_ITEM_FILE = re.compile(r"^\.?\d{8}-\d{6}-[0-9a-f]{8}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    tab TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT 'local',
    prompt TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    model TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    timings TEXT NOT NULL DEFAULT '{}',
    files TEXT NOT NULL DEFAULT '[]',
    parent TEXT,
    starred INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_created ON items(created_at DESC);
"""
COLUMNS = ("id", "created_at", "tab", "owner", "prompt", "params", "seed", "model", "device", "timings", "files",
           "parent", "starred")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM items"
MAX_EXPORT = 500
SCRATCH_HOURS = 24.0  # a user's exports, downloads and sent pictures are removed after this long
SCRATCH_MB = 200.0  # and their oldest go once a user holds more than this there


@dataclass(frozen=True)
class Record:
    """What an output is kept with in History (besides its tab and files): the prompt and parameters it was
    made from, its seed, model and device, timings, whose it is, the item it was made from (`parent`),
    `origin` (made from noise, or an edit of a start picture) and `marked` (a PNG's pixels carry the
    watermark already, see `History.mark`)."""

    prompt: str = ""
    params: dict | None = None
    seed: int | None = None
    model: str = ""
    device: str = ""
    timings: dict | None = None
    owner: str = "local"
    parent: str | None = None
    origin: Origin = CREATED_ORIGIN
    marked: bool = False


class StorageFull(ValueError):
    """New work refused before the disk or a user's share of it fills; the message says what to do."""


def _folder_name(user: str) -> str:
    """A user's name as a folder name (their scratch folder), distinct per user."""
    import hashlib

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)[:48].strip(".") or "user"
    return f"{safe}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class HistoryItem:
    id: str
    created_at: float
    tab: str
    owner: str
    prompt: str
    params: dict
    seed: int | None
    model: str
    device: str
    timings: dict
    files: list[str]
    parent: str | None = None
    starred: bool = False

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_at))


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class History:
    """The outputs folder plus `history.sqlite3` inside it."""

    def __init__(self, outputs: Path, provenance: Provenance | None = None) -> None:
        self.root = Path(outputs).resolve()
        self.provenance = provenance
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "history.sqlite3"
        self._lock = threading.Lock()
        self._usage: dict[str, int] | None = None  # bytes each owner's items hold (counted on first use)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the database file: every later connection uses it
            db.executescript(SCHEMA)
            known = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "starred" not in known:  # a History from before stars: add the column, keep every row
                db.execute("ALTER TABLE items ADD COLUMN starred INTEGER NOT NULL DEFAULT 0")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, timeout=30)

    def private_paths(self) -> list[Path]:
        """What the studio keeps in the outputs folder for itself, never to be served: the database (every
        user's prompts) and `settings/` (share-link key, Content Credentials private key, explorations, styles)."""
        return [self.root / "settings", *(self.db_path.with_name(self.db_path.name + end)
                                          for end in ("", "-wal", "-shm", "-journal"))]

    def new_path(self, tab: str, suffix: str) -> tuple[str, Path]:
        """A fresh id and the file path (relative layout: <tab>/<YYYY-MM-DD>/<id><suffix>)."""
        item_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        return item_id, self.root / tab / time.strftime("%Y-%m-%d") / f"{item_id}{suffix}"

    def add(self, tab: str, files: dict[str, bytes], **fields) -> HistoryItem:
        """Save `files` ({suffix: bytes}, e.g. {".txt": b"..."}) and list them in one step (`fields` as `write`
        takes them)."""
        item = self.write(tab, files, **fields)
        self.list_items([item])
        return item

    def write(self, tab: str, files: dict[str, bytes], record: Record | None = None, **fields) -> HistoryItem:
        """`add`'s first half: the files written to disk (durably), not yet listed; pictures and videos are
        sealed first. What the item is kept with is a `Record`, or its fields by name (`prompt=…, seed=…`).
        A batch's items are then listed together."""
        record = record or Record(**fields)
        item_id, base = self.new_path(tab, "")
        paths = []
        for suffix, data in files.items():
            path = base.with_name(base.name + suffix)
            write_atomic(path, self.seal(path.name, data, origin=record.origin, model=record.model,
                                         marked=record.marked,
                                         parameters={"prompt": record.prompt, "seed": record.seed,
                                                     **(record.params or {})}))
            paths.append(str(path.relative_to(self.root)))
        self._count(record.owner, sum(self._size(p) for p in paths))
        return HistoryItem(item_id, time.time(), tab, record.owner, record.prompt, record.params or {}, record.seed,
                           record.model, record.device, record.timings or {}, paths, record.parent)

    def list_items(self, items: list[HistoryItem]) -> list[HistoryItem]:
        """Add written items to the list in one transaction, in the order given (the last is the newest, even
        when they were written side by side); returns them as listed."""
        first = min(item.created_at for item in items)
        items = [replace(item, created_at=first + n * 1e-6) for n, item in enumerate(items)]
        with self._lock, self._connect() as db:
            db.executemany(
                f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                [(i.id, i.created_at, i.tab, i.owner, i.prompt, json.dumps(i.params), i.seed, i.model, i.device,
                  json.dumps(i.timings), json.dumps(i.files), i.parent, int(i.starred)) for i in items],
            )
        return items

    def mark(self, image):
        """The picture as History keeps it: watermarked in its pixels when this History's Provenance marks."""
        return image if self.provenance is None else self.provenance.mark(image)

    def seal(self, name: str, data: bytes, **details) -> bytes:
        """`data` watermarked and signed when this History has a Provenance. Should signing fail (a broken
        certificate file), the file is kept unsigned and the log says why: the user's work comes first."""
        if self.provenance is None:
            return data
        try:
            return self.provenance.seal(Path(name).suffix, data, title=name, **details)
        except Exception:  # noqa: BLE001 — c2pa raises its own error types; none may cost the user a picture
            log.exception("could not add Content Credentials to %s; kept it without them", name)
            return data

    def _row(self, row: tuple) -> HistoryItem:
        (item_id, created, tab, owner, prompt, params, seed, model, device, timings, files, parent, starred) = row
        return HistoryItem(item_id, created, tab, owner, prompt, json.loads(params), seed, model, device,
                           json.loads(timings), json.loads(files), parent, bool(starred))

    def list(self, *, tab: str | None = None, text: str = "", owner: str | None = None, limit: int = 100,
             model: str = "", seed: int | None = None, since: float | None = None, until: float | None = None,
             starred: bool = False) -> list[HistoryItem]:
        """Newest first, optionally only one tab / owner / model / seed, items made in [since, until) (epoch
        seconds), starred ones, and items whose prompt or model contains `text`."""
        sql, args = SELECT + " WHERE 1=1", []
        for column, value in (("tab", tab), ("owner", owner), ("model", model), ("seed", seed)):
            if value not in (None, ""):
                sql += f" AND {column} = ?"
                args.append(value)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(float(since))
        if until is not None:
            sql += " AND created_at < ?"
            args.append(float(until))
        if starred:
            sql += " AND starred = 1"
        if text:
            sql += " AND (prompt LIKE ? ESCAPE '\\' OR model LIKE ? ESCAPE '\\')"
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        with self._connect() as db:
            return [self._row(r) for r in db.execute(sql, args)]

    def get(self, item_id: str) -> HistoryItem | None:
        with self._connect() as db:
            row = db.execute(SELECT + " WHERE id = ?", (item_id,)).fetchone()
        return self._row(row) if row else None

    def delete(self, item_id: str) -> bool:
        """Remove an item: its row first (so nobody opens a half-deleted item), then its files."""
        item = self.get(item_id)
        if item is None:
            return False
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM items WHERE id = ?", (item_id,))
        self._count(item.owner, -sum(self._size(name) for name in item.files))
        for name in item.files:
            (self.root / name).unlink(missing_ok=True)
        return True

    def star(self, item_id: str, on: bool = True) -> bool:
        """Mark (or unmark) an item as a favourite; False when there is no such item."""
        with self._lock, self._connect() as db:
            return db.execute("UPDATE items SET starred = ? WHERE id = ?", (int(bool(on)), item_id)).rowcount > 0

    def export(self, items: list[HistoryItem], owner: str = "local") -> Path:
        """Write `items` into a new zip in the owner's scratch folder (written whole, then renamed): each item's files under
        `<id>/` as they are (PNGs keep their metadata, GIF/MP4/latents too) and `index.json` with every
        item's parameters, prompt, model, seed, time and file names."""
        import zipfile

        if not items:
            raise ValueError("Nothing to export: no History items match.")
        if len(items) > MAX_EXPORT:
            raise ValueError(f"export: at most {MAX_EXPORT} items at once, got {len(items)}; narrow the search")
        index = []
        target = self.scratch_file(owner, f"history-{time.strftime('%Y%m%d-%H%M%S')}", ".zip")
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for item in items:
                    names = []
                    for relative in item.files:
                        path = self.root / relative
                        if path.is_file():
                            name = f"{item.id}/{path.name}"
                            archive.write(path, name)
                            names.append(name)
                    index.append({"id": item.id, "created": item.when, "tab": item.tab, "prompt": item.prompt,
                                  "model": item.model, "seed": item.seed, "params": item.params,
                                  "timings": item.timings, "device": item.device, "parent": item.parent,
                                  "starred": item.starred, "files": names})
                archive.writestr("index.json", json.dumps(index, indent=1, ensure_ascii=False))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def path(self, relative: str) -> Path:
        return self.root / relative

    # -- owners: whose files, how much room ----------------------------------------------------------------
    def _size(self, relative: str) -> int:
        try:
            return (self.root / relative).stat().st_size
        except OSError:
            return 0

    def _count(self, owner: str, delta: int) -> None:
        with self._lock:
            if self._usage is not None:
                self._usage[owner] = max(0, self._usage.get(owner, 0) + delta)

    def usage(self, owner: str | None = None) -> int:
        """Bytes the items of `owner` (None: everyone) hold in History."""
        with self._lock:
            if self._usage is None:
                usage: dict[str, int] = {}
                with self._connect() as db:
                    for item_owner, files in db.execute("SELECT owner, files FROM items"):
                        usage[item_owner] = usage.get(item_owner, 0) + sum(map(self._size, json.loads(files)))
                self._usage = usage
            return sum(self._usage.values()) if owner is None else self._usage.get(owner, 0)

    def check_room(self, owner: str, *, guest: bool, user_mb: float, total_mb: float, free_mb: float) -> None:
        """Refuse new work, in words, before it would not fit: a guest's share (`user_mb`), History's cap
        (`total_mb`, 0 = none) and the disk's own free space (at least `free_mb` left). Nothing kept is touched."""
        import shutil

        mb = 2**20
        if guest and self.usage(owner) >= user_mb * mb:
            raise StorageFull(f"Your History is full ({self.usage(owner) / mb:,.1f} MB of the {user_mb:,.1f} MB a guest "
                              "may keep): delete some items in the History tab, then try again. Nothing you made "
                              "was lost.")
        if total_mb and self.usage() >= total_mb * mb:
            raise StorageFull(f"The studio's History is full ({self.usage() / mb:,.1f} MB of {total_mb:,.1f} MB): "
                              "nothing new can be kept until some items are deleted. Nothing made so far was lost.")
        if shutil.disk_usage(self.root).free < free_mb * mb:
            raise StorageFull("The disk is almost full: new work is paused so that nothing already kept is lost. "
                              "Ask the studio's owner to free some space.")

    def may_read(self, user: str, path: Path, *, guest: bool) -> bool:
        """Whether `user` may fetch `path` (resolved, inside the outputs folder): a History item's file that is
        theirs, or a file in their scratch folder; owners may fetch any item's and any scratch file. Nothing else
        under the outputs folder (the database, settings/, keys, strays) is ever served."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return False
        parts = relative.parts
        if len(parts) >= 3 and parts[0] == "users":
            return not guest or parts[1] == _folder_name(user)
        if not _ITEM_FILE.match(path.name) or path.name.startswith("."):
            return False
        item = self.get(path.name[:24])
        if item is None or str(relative) not in item.files:
            return False
        return not guest or item.owner == user

    def scratch(self, owner: str) -> Path:
        """`owner`'s own folder for exports, downloads and pictures sent between tabs: served to them alone
        (`owner_of_file`), files removed after SCRATCH_HOURS, the oldest first past SCRATCH_MB."""
        folder = self.root / "users" / _folder_name(owner)
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep(folder)
        return folder

    def scratch_file(self, owner: str, stem: str, suffix: str) -> Path:
        """A new, unguessable file name in `owner`'s scratch folder."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:40] or "file"
        return self.scratch(owner) / f"{safe}-{uuid.uuid4().hex[:12]}{suffix}"

    @staticmethod
    def _sweep(folder: Path) -> None:
        now = time.time()
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            old = path.stat().st_mtime < now - SCRATCH_HOURS * 3600
            if old or total > SCRATCH_MB * 2**20:
                total -= path.stat().st_size
                path.unlink(missing_ok=True)

    def repair(self) -> dict:
        """Start-up check: drop rows whose files are gone, delete temp files and unindexed outputs."""
        with self._connect() as db:
            rows = db.execute("SELECT id, files FROM items").fetchall()
            known = set()
            broken = []
            for item_id, files in rows:
                names = json.loads(files)
                if all((self.root / f).is_file() for f in names):
                    known.update(names)
                else:
                    broken.append(item_id)
            db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in broken])
        removed = 0
        for path in self.root.rglob("*"):
            if not path.is_file() or path.parent == self.root:
                continue
            ours = _ITEM_FILE.match(path.name) or path.name.endswith(".tmp")
            if ours and str(path.relative_to(self.root)) not in known:
                path.unlink()
                removed += 1
        return {"rows_dropped": len(broken), "files_removed": removed}
