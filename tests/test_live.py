"""Real-time mode's rule (studio.actions.images.live_picture): the newest request of a session wins — it stops the one
before it mid-denoise — and its picture is the one the same settings make anywhere else; sessions are apart."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np

from pipelines.image import ImageParams
from pipelines.registry import ModelSpec
from studio.actions.images import LIVE_PAUSE, live_picture
from studio.config import Settings
from studio.services import Services

QUICK = ImageParams(prompt="a red fox", steps=3, batch_size=1, width=64, height=64, seed=9, scheduler="Euler a")


def test_the_newest_request_wins_and_draws_what_generate_draws(tmp_path, tiny_sd_dir):
    services = Services.create(Settings(device="cpu", outputs=tmp_path / "outputs", cache_dir=tmp_path / "cache",
                                        offline=True))
    services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
    alone = services.host.image_pipeline("tiny-sd")(QUICK)
    answers: dict[str, object] = {}

    def ask(name, params, session):
        answers[name] = live_picture(services, "tiny-sd", params, session)

    slow = threading.Thread(target=ask, args=("old", replace(QUICK, steps=60), "alice"))
    other = threading.Thread(target=ask, args=("bob", replace(QUICK, steps=12), "bob"))
    slow.start()
    other.start()
    time.sleep(LIVE_PAUSE + 0.3)  # both past the pause, denoising
    ask("new", QUICK, "alice")  # alice typed again: her older picture stops
    slow.join(timeout=60)
    other.join(timeout=60)
    assert answers["old"] is None
    assert np.array_equal(np.asarray(answers["new"].images[0]), np.asarray(alone.images[0]))
    assert answers["bob"] is not None and answers["bob"].params.steps == 12  # another session is never stopped
    assert services.history.list(tab="image") == []  # nothing is kept until Keep


def test_a_request_superseded_within_the_pause_never_starts(tmp_path, tiny_sd_dir):
    services = Services.create(Settings(device="cpu", outputs=tmp_path / "outputs", cache_dir=tmp_path / "cache",
                                        offline=True))
    services.host.registry.add(ModelSpec("tiny-sd", "image", "folder", str(tiny_sd_dir), license="test"))
    started = []
    real = services.host.image_lease

    def counting(model, *args, **kwargs):
        started.append(model)
        return real(model, *args, **kwargs)

    services.host.image_lease = counting
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(live_picture(services, "tiny-sd", QUICK, "alice")))
               for _ in range(5)]
    for t in threads:  # five keystrokes faster than the pause
        t.start()
        time.sleep(LIVE_PAUSE / 10)
    for t in threads:
        t.join(timeout=60)
    assert len(started) == 1 and sum(a is not None for a in answers) == 1
