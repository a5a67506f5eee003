"""History store (atomic, restart-safe, repair) and settings/CLI parsing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from pipelines.cache import ModelCache
from studio.config import load_settings, parse_auth
from studio.history import History


def test_history_add_list_filter_and_survive_restart(tmp_path):
    history = History(tmp_path)
    a = history.add("text", {".txt": b"a red fox"}, prompt="fox story", seed=1, model="m1", params={"x": 1})
    b = history.add("image", {".png": b"\x89PNG"}, prompt="sunset", seed=2, model="m2")
    assert [i.id for i in history.list()] == [b.id, a.id]  # newest first
    assert [i.id for i in history.list(tab="text")] == [a.id]
    assert [i.id for i in history.list(text="sun")] == [b.id]
    assert history.list(text="100%") == []  # LIKE wildcards are escaped
    assert history.path(a.files[0]).read_bytes() == b"a red fox"
    reopened = History(tmp_path)
    item = reopened.get(a.id)
    assert item.params == {"x": 1} and item.seed == 1 and item.model == "m1"


def test_repair_drops_rows_without_files_and_orphan_files(tmp_path):
    history = History(tmp_path)
    kept = history.add("text", {".txt": b"kept"})
    lost = history.add("text", {".txt": b"lost"})
    history.path(lost.files[0]).unlink()  # e.g. deleted by hand
    _, orphan = history.new_path("text", ".txt")  # a crash after the file, before the row
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    temp = orphan.with_name(".half-written.tmp")
    temp.write_bytes(b"half")
    users_file = orphan.with_name("my-notes.txt")
    users_file.write_text("not ours")
    report = History(tmp_path).repair()
    assert report == {"rows_dropped": 1, "files_removed": 2}
    assert [i.id for i in history.list()] == [kept.id]
    assert not orphan.exists() and not temp.exists() and users_file.exists()


def test_history_rows_are_all_or_nothing(tmp_path):
    history = History(tmp_path)
    with pytest.raises(sqlite3.Error):
        with sqlite3.connect(history.db_path) as db:
            db.execute("INSERT INTO items (id, created_at, tab) VALUES ('x', 1, 'text')")
            raise sqlite3.OperationalError("simulated crash inside the transaction")
    assert history.get("x") is None


def test_cache_evicts_and_frees_the_old_model():
    import gc
    import weakref

    import torch

    cache = ModelCache(limit=1)
    first = cache.get("text", "a", lambda: torch.nn.Linear(512, 512))
    ref = weakref.ref(first)
    del first
    assert cache.get("text", "a", lambda: pytest.fail("must not reload")) is ref()
    cache.get("text", "b", lambda: torch.nn.Linear(4, 4))
    gc.collect()
    assert ref() is None, "switching models must free the old one"
    assert cache.loaded("text") == [("text", "b")]
    cache.get("gan", "g", lambda: object())  # other modalities keep their own slot
    assert len(cache.loaded()) == 2


def test_settings_from_toml_and_overrides(tmp_path):
    config = tmp_path / "studio.toml"
    config.write_text('port = 9000\noffline = true\n[limits]\nmax_new_tokens = 64\n')
    settings = load_settings(config, port=9100)
    assert settings.port == 9100 and settings.offline and settings.text_limits.max_new_tokens == 64
    config.write_text("colour = 'red'\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_settings(config)


def test_ray_settings_per_family_tables_and_their_errors(tmp_path):
    config = tmp_path / "studio.toml"
    config.write_text('[ray]\naddress = "local"\nreplica_cpus = 1.0\ntiers = ["text"]\n'
                      '[ray.text]\nreplica_gpus = 0.5\nmax_replicas = 4\n')
    ray = load_settings(config).ray
    assert ray.runs("text") and not ray.runs("image") and ray.tiers == ("text",)
    text, image = ray.for_tier("text"), ray.for_tier("image")
    assert (text.replica_gpus, text.max_replicas, text.replica_cpus) == (0.5, 4, 1.0)
    assert (image.replica_gpus, image.max_replicas) == (0.0, 2)
    config.write_text('[ray]\ntiers = ["gan"]\n')
    with pytest.raises(ValueError, match="ray tiers must name one or more of image, text, latent, got gan"):
        load_settings(config)
    config.write_text("[ray.text]\nmax_replicas = 0\n")
    with pytest.raises(ValueError, match="need 1 ≤ min_replicas ≤ max_replicas ≤ 1024, got 1 and 0"):
        load_settings(config)


def test_a_local_ray_shares_its_cpus_among_the_families_and_a_small_cluster_is_a_plain_error():
    from studio.config import RaySettings, Settings
    from studio.raytier.serve import _fit

    settings = Settings(ray=RaySettings(address="local", tier_sizes=(("text", (("min_replicas", 2),)),)))
    assert _fit(settings, 8.0, local=True) == (settings, "")  # 4 replicas of 1 CPU fit in 8
    fitted, note = _fit(settings, 2.0, local=True)
    shares = {t: fitted.ray.for_tier(t).replica_cpus for t in ("image", "text", "latent")}
    assert shares == {"image": 0.5, "text": 0.5, "latent": 0.5}
    assert sum(fitted.ray.for_tier(t).min_replicas * shares[t] for t in shares) <= 2.0
    assert fitted.ray.for_tier("text").min_replicas == 2 and "2 CPUs for 4 CPUs of replicas" in note
    with pytest.raises(ValueError, match="needs 4 CPUs .* but the cluster has 2: lower them in"):
        _fit(settings, 2.0, local=False)


def test_parse_auth_pairs_and_file(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# owners\nann:secret\nbob:pw:with:colons\n")
    assert parse_auth(["me:pw", str(users)]) == (("me", "pw"), ("ann", "secret"), ("bob", "pw:with:colons"))
    with pytest.raises(ValueError, match="USER:PASS"):
        parse_auth(["nopassword"])


def test_cli_models_and_dry_run(tmp_path):
    env_cache = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-m", "studio", "models", "--cache-dir", env_cache],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "smollm2-135m-instruct" in out.stdout and "no" in out.stdout
    dry = subprocess.run([sys.executable, "-m", "studio", "--dry-run", "--outputs", str(tmp_path / "o"),
                          "--cache-dir", env_cache, "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "App built" in dry.stdout
    bad = subprocess.run([sys.executable, "-m", "studio", "text", "hi", "--max-new-tokens", "0",
                          "--cache-dir", env_cache, "--offline"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "max_new_tokens must be a whole number from 1" in bad.stderr


def test_public_launch_needs_auth_or_an_explicit_flag(tmp_path):
    with pytest.raises(ValueError, match="refusing to start a public studio without a login"):
        load_settings(share=True)
    with pytest.raises(ValueError, match="--auth USER:PASS"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", auth=(("ann", "pw"),)).public
    assert load_settings(share=True, insecure_public=True).insecure_public
    assert not load_settings().public
    out = subprocess.run([sys.executable, "-m", "studio", "--share", "--dry-run", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "refusing to start a public studio" in out.stderr


def test_lanes_run_work_on_one_thread_inline_when_nested_and_on_the_main_thread_when_served():
    import threading

    from studio.lanes import Lanes

    lanes = Lanes()
    names = []
    outer = lanes.run("model", lambda: (names.append(threading.current_thread().name),
                                        lanes.run("model", lambda: names.append(threading.current_thread().name))))
    assert outer is not None and names[0] == names[1] and names[0].startswith("lane-model")  # no deadlock
    job = lanes.submit("model", lambda report: [report(i) for i in range(3)] and "done")
    assert list(job) == [0, 1, 2] and job.result() == "done"
    stop, seen = threading.Event(), []
    # served: the main thread takes the work; interactive tasks jump the queue
    def client():
        seen.append(lanes.run("model", lambda: threading.current_thread() is threading.main_thread(),
                              interactive=True))
        stop.set()

    threading.Timer(0.2, client).start()
    lanes.serve_here(stop)
    assert seen == [True]
    failing = lanes.submit("model", lambda report: 1 / 0)
    import pytest

    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_history_search_by_seed_dates_and_stars_survives_an_old_database(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "history.sqlite3") as db:  # a History from before stars
        db.executescript("""CREATE TABLE items (id TEXT PRIMARY KEY, created_at REAL NOT NULL, tab TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT 'local', prompt TEXT NOT NULL DEFAULT '', params TEXT NOT NULL DEFAULT '{}',
            seed INTEGER, model TEXT NOT NULL DEFAULT '', device TEXT NOT NULL DEFAULT '',
            timings TEXT NOT NULL DEFAULT '{}', files TEXT NOT NULL DEFAULT '[]', parent TEXT);
            INSERT INTO items VALUES ('20250101-000000-aaaaaaaa', 1735689600, 'text', 'local', 'kept', '{}', 3, 'm',
            '', '{}', '[]', NULL);""")
    history = History(old)
    (item,) = history.list()
    assert item.prompt == "kept" and item.starred is False
    assert history.star(item.id) and history.get(item.id).starred
    assert [i.id for i in history.list(starred=True)] == [item.id]
    assert history.star("no-such-id") is False
    new = history.add("image", {".png": b"\x89PNG"}, prompt="today", seed=7, model="m2")
    assert [i.id for i in history.list(seed=7)] == [new.id]
    assert [i.id for i in history.list(model="m")] == [item.id]
    assert [i.id for i in history.list(until=1735689600 + 86400)] == [item.id]
    assert [i.id for i in history.list(since=1735689600 + 86400)] == [new.id]


def test_history_export_and_delete(tmp_path):
    import json
    import zipfile

    import numpy as np
    from PIL import Image

    from pipelines.media import png_with_metadata, read_png_info

    history = History(tmp_path / "outputs")
    picture = png_with_metadata(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "red heart\nSteps: 8, Seed: 4",
                                {"prompt": "red heart", "seed": 4})
    item = history.add("image", {".png": picture, ".safetensors": b"latent"}, prompt="red heart", seed=4,
                       params={"steps": 8})
    other = history.add("text", {".txt": b"poem"}, prompt="poem", seed=1)
    archive = history.export(history.list(), owner="../../evil")
    assert archive.parent.parent == history.root / "users" and archive.suffix == ".zip"  # the owner's own folder
    assert archive.parent.name.startswith("_.._evil-") and history.may_read("../../evil", archive, guest=True)
    assert not history.may_read("someone else", archive, guest=True)
    with zipfile.ZipFile(archive) as z:
        index = json.loads(z.read("index.json"))
        assert {e["id"] for e in index} == {item.id, other.id}
        entry = next(e for e in index if e["id"] == item.id)
        assert entry["params"] == {"steps": 8} and entry["seed"] == 4 and len(entry["files"]) == 2
        z.extract(f"{item.id}/{item.id}.png", tmp_path / "out")
    info = read_png_info(tmp_path / "out" / item.id / f"{item.id}.png")  # PNG info survives the round trip
    assert info["studio"] == {"prompt": "red heart", "seed": 4} and "Seed: 4" in info["parameters"]
    with pytest.raises(ValueError, match="Nothing to export"):
        history.export([])
    paths = [history.path(f) for f in item.files]
    assert history.delete(item.id) and not any(p.exists() for p in paths)
    assert history.get(item.id) is None and history.delete(item.id) is False
    assert [i.id for i in history.list()] == [other.id]
    assert history.repair() == {"rows_dropped": 0, "files_removed": 0}  # exports are not History's orphans
    assert archive.is_file()
