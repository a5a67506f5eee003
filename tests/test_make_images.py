"""studio.actions.images.make_images: the one way every door makes pictures (the page streams the same sequence
step by step: making_images). Streaming equals not streaming; the session's Cancel stops it and keeps nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pipelines.image import GenerationCancelled, ImageParams
from pipelines.registry import ModelSpec
from studio.actions.images import make_images, making_images
from studio.config import Settings
from studio.services import Services

QUICK = ImageParams(prompt="a red fox", steps=3, batch_size=1, width=64, height=64, seed=9, scheduler="Euler a")


@pytest.fixture
def services(tmp_path, tiny_sd_dir):
    services = Services.create(Settings(device="cpu", outputs=tmp_path / "outputs", cache_dir=tmp_path / "cache",
                                        offline=True))
    services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
    return services


def test_streamed_pictures_equal_the_unstreamed_ones_and_both_are_kept(services):
    heard = []
    made = make_images(services, QUICK, "tiny-sd", "local", "alice", heard.append)
    steps = making_images(services, QUICK, "tiny-sd", "local", "alice")
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as finished:
            streamed = finished.value
            break
    assert isinstance(events[0], str)  # a note in words first (loading, or generating)
    assert [event[:2] for event in events if isinstance(event, tuple)][-1] == (3, 3)
    assert heard and all(isinstance(event, tuple) for event in heard)  # the callback hears steps only
    assert np.array_equal(np.asarray(made.out.images[0]), np.asarray(streamed.out.images[0]))
    assert len(services.history.list(tab="image")) == 2
    (_path, seed, item_id), = streamed.kept
    assert seed == 9 and services.history.get(item_id).params["steps"] == 3


def test_the_sessions_cancel_stops_it_and_nothing_is_kept(services):
    make_images(services, QUICK, "tiny-sd", "local", "warm-up", keep=False)  # loaded: the long job starts at once
    outcome = []

    def long_job():
        try:
            make_images(services, ImageParams(prompt="slow", steps=150, batch_size=4, width=64, height=64, seed=1), "tiny-sd",
                        "local", "alice", lambda event: started.set())
        except GenerationCancelled:
            outcome.append("cancelled")

    started = threading.Event()
    worker = threading.Thread(target=long_job)
    worker.start()
    assert started.wait(60)
    services.jobs.cancel("bob", "image")  # another session's Cancel never stops it …
    assert worker.is_alive()
    services.jobs.cancel("alice", "image")  # … its own does
    worker.join(timeout=60)
    assert outcome == ["cancelled"] and services.history.list(tab="image") == []
