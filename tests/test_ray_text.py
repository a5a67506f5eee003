"""The text model tier on Ray Serve (studio/raytier/serve.py TextTier, studio/raytier/client.py RemoteTextPipeline), for
real: a local Ray with 2 CPUs, the tiny random-weight language model, a served studio in front. Text
streamed piece by piece from a replica, the same text as in-process, Stop reaching the replica (the
answer ends as in-process), a replica killed mid-answer costing no text and repeating none."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

pytest.importorskip("ray.serve", reason="the [ray] extra is part of the test install")

from pipelines.text import TextParams
from studio.config import RaySettings
from tests.live import wait_for_replacement

pytestmark = pytest.mark.slow  # a local Ray cluster: the fast tier starts none

RAY = RaySettings(address="local", cpus=2, min_replicas=1, max_replicas=2, max_ongoing_requests=2,
                  target_ongoing_requests=2.0, tiers=("text",))
# greedy over random weights: a long answer that never ends early
LONG = TextParams(prompt="Once upon a time", mode="completion", max_new_tokens=512, temperature=0.0, seed=3)
SHORT = TextParams(prompt="Hello there", mode="completion", max_new_tokens=48, temperature=0.9, seed=7)


@pytest.fixture(scope="module")
def tier(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    """A studio served in-process whose text models run on a local Ray Serve app."""
    from tests.conftest import _free_port
    from tests.live import start

    root = tmp_path_factory.mktemp("ray-text")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir, ray=RAY)
    yield f"http://127.0.0.1:{port}/", services
    app.close()
    services.host.ray_bridge.close()


def replica_pids(services) -> set[int]:
    return {p["pid"] for p in services.host.ray_bridge.status()["text"]["published"]}


def timed_stream(pipe, params, **options) -> tuple[list[str], list[float], dict]:
    pieces, times, stats = [], [], {}
    for piece in pipe.stream(params, stats=stats, **options):
        pieces.append(piece)
        times.append(time.perf_counter())
    return pieces, times, stats


def test_text_streams_from_a_replica_piece_by_piece_and_matches_in_process(tier, tiny_text_pipeline):
    import torch

    _, services = tier
    pipe = services.host.text_pipeline("tiny-llama")
    assert pipe.remote and pipe.model.name == "tiny-llama" and pipe.backend == "transformers"
    assert pipe.runs_on.endswith("transformers · Ray Serve")
    started = time.perf_counter()
    pieces, times, stats = timed_stream(pipe, LONG)
    ended = time.perf_counter()
    assert len(pieces) > 50 and stats["text"] == "".join(pieces) and stats["new_tokens"] == 512
    assert stats["finish_reason"] == "length" and stats["seed"] == 3
    # the first piece is shown long before the answer ends: it streams, it is not sent whole at the end
    assert times[0] - started < (ended - started) / 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a replica's torch threads = its CPU share (1): same sums, same tokens
    try:
        for params in (LONG, SHORT):
            local = tiny_text_pipeline(params)
            assert pipe(params).text == local.text
    finally:
        torch.set_num_threads(threads)
    assert pipe.count_tokens(SHORT) == tiny_text_pipeline.count_tokens(SHORT)
    report = services.host.ray_bridge.status()["text"]
    assert report["replicas"].get("RUNNING", 0) >= 1
    assert any("tiny-llama [transformers]" in p["models"] and p["pid"] != os.getpid() for p in report["published"])
    from studio.tabs.models import tier_text

    shown = tier_text(services)
    assert "**Text models**: autoscaling 1–2" in shown and "tiny-llama [transformers]" in shown
    assert "image and GAN/VAE models run in this process" in shown


def test_bad_input_is_the_same_plain_error_as_in_process(tier):
    _, services = tier
    pipe = services.host.text_pipeline("tiny-llama")
    too_long = TextParams(prompt="hi", max_new_tokens=2000)  # a valid request, over this server's limit
    with pytest.raises(ValueError, match="max_new_tokens must be a whole number from 1 to 1,024, got 2000"):
        list(pipe.stream(too_long))


def test_stop_reaches_the_replica_and_the_answer_ends_as_in_process(tier):
    _, services = tier
    pipe = services.host.text_pipeline("tiny-llama")
    full = pipe(LONG)
    cancel = threading.Event()
    stats: dict = {}
    text = ""
    for i, piece in enumerate(pipe.stream(LONG, cancel=cancel, stats=stats)):
        text += piece
        if i == 5:
            cancel.set()
    assert stats["finish_reason"] == "cancelled" and stats["text"] == text
    assert 6 <= stats["new_tokens"] < LONG.max_new_tokens // 2 and full.text.startswith(text)


def test_a_replica_killed_mid_answer_costs_no_text_and_repeats_none(tier):
    _, services = tier
    pipe = services.host.text_pipeline("tiny-llama")
    reference = pipe(LONG).text
    victims = replica_pids(services)
    text, stats = "", {}
    for i, piece in enumerate(pipe.stream(LONG, stats=stats)):
        text += piece
        if i == 10:
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
    assert text == reference and stats["text"] == reference  # retried on another replica, shown once
    live = wait_for_replacement(lambda: replica_pids(services), victims)
    assert live and not live & victims


def test_served_answers_stream_through_the_studio_and_land_in_history(tier):
    from gradio_client import Client

    url, services = tier
    client = Client(url, verbose=False)
    before = len(services.history.list(tab="text"))
    answers, errors = [], []

    def user(seed: int) -> None:
        try:
            job = client.submit(prompt="Hello there", model="tiny-llama", max_new_tokens=48, temperature=0.9,
                                seed=seed, api_name="/generate_text")
            answers.append((seed, list(job)))
        except Exception as exc:  # noqa: BLE001 - counted below
            errors.append(exc)

    users = [threading.Thread(target=user, args=(seed,)) for seed in (7, 8, 9)]
    for u in users:
        u.start()
    for u in users:
        u.join(120)
    assert not errors and len(answers) == 3
    for seed, updates in answers:
        text, status = updates[-1]
        assert json.loads(status)["seed"] == seed and text
    assert dict(answers)[7][-1][0] == services.host.text_pipeline("tiny-llama")(SHORT).text
    services.host.lanes.drain("history")
    items = services.history.list(tab="text")[: len(services.history.list(tab="text")) - before]
    assert sorted(i.seed for i in items) == [7, 8, 9]
