"""Exploration links' store: the state comes back exactly (points, directions with their vectors, keyframes with
frame counts, parents, settings, slider amounts), the URL names a state but carries none of it, only the owner
who made a link can revoke it, and a revoked or bent link opens nothing with a message in plain words."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.latent import Direction, LatentPoint
from studio.actions.latent import Bench, Keyframe
from studio.explorations import Explorations


def point(seed: int, label: str) -> LatentPoint:
    return LatentPoint(torch.randn(16, generator=torch.Generator().manual_seed(seed)), model="tiny-gan", label=label,
                       seed=seed)


@pytest.fixture
def store(tmp_path) -> Explorations:
    return Explorations(tmp_path / "explorations", lambda: b"k" * 32)


def a_bench() -> Bench:
    smile = Direction("smile", "z", torch.nn.functional.normalize(torch.randn(16), dim=0), std=1.5, method="sefa")
    return Bench(model="tiny-gan", current=point(7, "seed 7"), directions=[smile],
                 keyframes=[Keyframe(point(1, "seed 1"), 12), Keyframe(point(2, "seed 2"), 30)],
                 parents=[point(3, "seed 3"), point(4, "seed 4")])


def test_a_shared_state_comes_back_exactly(store):
    bench = a_bench()
    share_id = store.save("ada", "gan", bench, {"model": "tiny-gan", "truncation": 0.7},
                          {"map_extent": 2.5, "fps": 8, "amounts": [1.5]})
    query = store.query(share_id)
    assert query.startswith("?exploration=") and len(share_id) == 16
    assert "tiny-gan" not in query and "0.7" not in query  # the URL names a state; it carries none of it
    assert store.tab_of(query.split("=", 1)[1]) == "gan"
    shared = store.open(query.split("=", 1)[1])
    assert shared.owner == "ada" and shared.settings == {"model": "tiny-gan", "truncation": 0.7}
    assert shared.controls == {"map_extent": 2.5, "fps": 8, "amounts": [1.5]}
    got = shared.bench
    assert got.model == "tiny-gan" and torch.equal(got.current.z, bench.current.z) and got.current.seed == 7
    assert [(k.point.label, k.frames) for k in got.keyframes] == [("seed 1", 12), ("seed 2", 30)]
    assert all(torch.equal(a.point.z, b.point.z) for a, b in zip(got.keyframes, bench.keyframes))
    assert [p.label for p in got.parents] == ["seed 3", "seed 4"]
    (smile,) = got.directions
    assert smile.name == "smile" and smile.std == 1.5 and torch.equal(smile.vector, bench.directions[0].vector)


def test_bent_revoked_and_foreign_links_open_nothing(store):
    share_id = store.save("ada", "gan", a_bench(), {}, {})
    value = store.query(share_id).split("=", 1)[1]
    for wrong in (value[:-1] + ("0" if value[-1] != "0" else "1"), share_id, "../../etc/passwd.x", ""):
        with pytest.raises(ValueError, match="does not open anything"):
            store.open(wrong)
        assert store.tab_of(wrong) is None
    assert store.revoke(share_id, "bob") is False  # not bob's link
    assert store.open(value).owner == "ada"
    assert [s["id"] for s in store.mine("ada", "gan")] == [share_id] and store.mine("bob") == []
    assert store.revoke(share_id, "ada") is True
    with pytest.raises(ValueError, match="revoked"):
        store.open(value)
    assert not (store.folder / share_id).exists()


def test_nothing_to_share_without_a_picture_and_what_is_stored_is_plain(store):
    with pytest.raises(ValueError, match="Open a picture first"):
        store.save("ada", "gan", Bench(model="tiny-gan"), {}, {})
    share_id = store.save("ada", "vae", Bench(model="digit-vae-2d", current=point(1, "seed 1")), {}, {})
    state = json.loads((store.folder / share_id / "state.json").read_text())
    assert state["tab"] == "vae" and state["roles"] == {"keyframes": [], "parents": []}
    assert not (store.folder / share_id / "directions.safetensors").exists()
    assert store.open(store.query(share_id).split("=", 1)[1]).bench.directions == []
