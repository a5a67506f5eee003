"""One owner of model execution (`studio.host.ModelHost`): requests that run at once on one model each get
exactly what they would get alone, nothing in use is evicted, and admission is checked in one place.

Each numbered case of the issue that introduced the host has a test here; the served, many-user suite is
tests/test_many_users.py."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.cache import ModelCache, ModelsBusy
from pipelines.device import pick_placement
from pipelines.image import ImageLimits, ImageParams, ImagePipeline, Lora, load_image_model
from pipelines.image_latent import DiffusionLatentModel, DiffusionLook
from pipelines.registry import ModelSpec, Registry
from studio.access import AccessDenied
from studio.config import RaySettings, Settings
from studio.host import Caller, ModelHost, calling
from studio.lanes import Lanes

LONG = ImageParams(prompt="red heart", steps=24, batch_size=4, width=64, height=64, seed=3, scheduler="Euler a")
LOOK = DiffusionLook(steps=6, preview_steps=4, guidance=5.0, scheduler="Euler a", width=64, height=64)


@pytest.fixture(scope="module")
def tiny(tiny_sd_dir):
    registry = Registry(tiny_sd_dir.parent / "cache", offline=True)
    model = load_image_model(registry.resolve(registry.lookup(str(tiny_sd_dir), "image")), pick_placement("cpu"),
                             offline=True)
    pipe = ImagePipeline(model, ImageLimits(max_steps=60, max_batch_size=4))
    return pipe, DiffusionLatentModel(model, LOOK)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_sd_dir) -> Path:
    from tests.conftest import build_tiny_lora

    return build_tiny_lora(tmp_path_factory.mktemp("lora"), tiny_sd_dir)


def pixels(out) -> list[bytes]:
    return [np.asarray(image).tobytes() for image in out.images]


def serving(lanes: Lanes, main: bool):
    """The lanes as `studio launch` runs them (a main thread serving model work) or as tests do (a thread per lane)."""
    stop = threading.Event()
    if main:
        threading.Thread(target=lanes.serve_here, args=(stop,), daemon=True).start()
        while lanes._main is None:
            time.sleep(0.01)
    return stop


@pytest.mark.parametrize("main", [False, True], ids=["lane-threads", "main-thread"])
def test_a_slider_move_during_a_long_picture_changes_neither_and_does_not_wait_for_it(tiny, main):
    """The issue's opening case: user A's 4-picture job, user B's Explore slider on the same model meanwhile.
    B's preview answers while A's job is paused mid-run (so it ran beside it, not after it, and not inside
    its callback), and both are byte-equal to the same requests made alone."""
    pipe, space = tiny
    point = space.point_for_seed(5, prompt="blue fox")
    alone, moved_alone = pixels(pipe(LONG)), space.render([point], preview=True).tobytes()
    lanes = Lanes()
    stop = serving(lanes, main)
    moved: dict = {}
    answered = threading.Event()

    def slider() -> None:
        started = time.perf_counter()
        moved["pixels"] = lanes.run("model", space.render, [point], preview=True, interactive=True).tobytes()
        moved["seconds"] = time.perf_counter() - started
        answered.set()

    def on_step(done, total, preview):
        if done == 3 and not answered.is_set():
            threading.Thread(target=slider).start()
            moved["during"] = answered.wait(60)  # A's job waits here: B can only answer beside it

    try:
        job = lanes.submit("model", lambda report: pipe(LONG, callback=on_step))
        out = job.result()
    finally:
        stop.set()
    assert moved["during"], "the slider move waited for the long job"
    assert pixels(out) == alone
    assert moved["pixels"] == moved_alone


def test_pictures_with_and_without_loras_on_one_model_at_once_are_each_as_alone(tiny, lora_file):
    """1. A request's LoRAs apply to it alone: one with a LoRA and one without, at once, each byte-equal to
    the same request alone; the one without never sees the other's LoRA."""
    pipe, space = tiny
    plain = replace(LONG, batch_size=1, steps=8)
    styled = replace(plain, seed=9, loras=(Lora("style", lora_file, 0.8),))
    expected = {"plain": pixels(pipe(plain)), "styled": pixels(pipe(styled)), "plain again": pixels(pipe(plain))}
    assert expected["plain"] == expected["plain again"] and expected["plain"] != pixels(pipe(replace(styled, seed=3)))
    point = space.point_for_seed(5, prompt="blue fox")
    render_alone = space.render([point]).tobytes()
    got: dict = {}
    errors: list = []

    def run(name, fn):
        try:
            got[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, f)) for n, f in (
        ("plain", lambda: pixels(pipe(plain))), ("styled", lambda: pixels(pipe(styled))),
        ("render", lambda: space.render([point]).tobytes()), ("plain again", lambda: pixels(pipe(plain))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert {k: got[k] for k in expected} == expected and got["render"] == render_alone


def test_a_picture_records_its_own_loras(tiny, lora_file, monkeypatch):
    """1. The PNG's `Lora:` text comes from the request, not from what the shared weights hold at the end."""
    from types import SimpleNamespace

    import studio.actions.images
    from studio.actions.images import keep_images

    pipe, _ = tiny
    styled = replace(LONG, batch_size=1, steps=2, loras=(Lora("style", lora_file, 0.8),))
    out = pipe(styled)
    pipe(replace(styled, loras=()))  # someone else's request since: the weights hold no LoRA now
    kept = []
    monkeypatch.setattr(studio.actions.images, "keep_output",
                        lambda services, tab, files, **fields: kept.append((files, fields)))
    keep_images(SimpleNamespace(host=SimpleNamespace(placement=pipe.model.placement), history=SimpleNamespace(mark=lambda image: image)),
                pipe, out, "alice")
    (files, fields), = kept
    assert fields["params"]["loras"] == {"style": 0.8}
    assert b"Lora: style:0.8" in files[".png"]


def test_nothing_in_use_is_evicted_and_concurrent_loads_keep_the_limit():
    """5. A model in use stays loaded (and open) while another is asked for; two loads at once never hold more
    than the limit; when all are busy, the new one waits, then says so in words."""
    closed, loaded = [], []

    class Model:
        def __init__(self, name):
            self.name = name
            loaded.append(name)

        def close(self):
            closed.append(self.name)

    cache = ModelCache(1, wait_for_room_s=2)
    with cache.lease("text", "a", lambda: Model("a")) as a:
        with pytest.raises(ModelsBusy, match="a is still in use by another request"):
            cache.get("text", "b", lambda: Model("b"))
        assert closed == [] and cache.peek("text", "a") is a
        cache.clear("text")  # e.g. a memory plan: doomed, dropped when given back
        assert closed == []
    assert closed == ["a"] and cache.loaded() == []
    # two loads at once: the second waits for room instead of overshooting the limit
    held = []

    def slow(name):
        def load():
            held.append(len(cache.loaded("image")) + 1)
            time.sleep(0.3)
            return Model(name)
        return load

    threads = [threading.Thread(target=cache.get, args=("image", n, slow(n))) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert max(held) == 1 and len(cache.loaded("image")) == 1


def test_ray_stand_ins_have_their_own_slot(tmp_path):
    """5. Under --ray, "name [ray]" (a stand-in, no weights) never takes the in-process model's place."""
    settings = Settings(outputs=tmp_path, cache_dir=tmp_path / "cache", device="cpu", offline=True,
                        ray=RaySettings(address="local", tiers=("image",)))
    host = ModelHost.create(settings)
    remote = host._image_entry("emoji-ldm", None, local=False)
    local = host._image_entry("emoji-ldm", None, local=True)
    assert (remote[0], remote[1]) == ("image [ray]", "emoji-ldm [ray]")
    assert (local[0], local[1]) == ("image", "emoji-ldm")
    host.cache.get(remote[0], remote[1], lambda: "stand-in")
    host.cache.get("image", "emoji-ldm", lambda: "weights")
    assert host.cache.peek(remote[0], remote[1]) == "stand-in" and host.cache.peek("image", "emoji-ldm") == "weights"


def test_explore_renders_are_reproducible_with_ancestral_samplers_and_show_the_image_tabs_picture(tiny):
    """4. Explore passes each point's own generator: with Euler a the same point always renders the same, and a
    point from a seed and a (weighted) prompt is the picture the Image tab makes of them."""
    pipe, space = tiny
    torch.manual_seed(123)  # global RNG state must not matter
    for prompt in ("red heart", "(red:1.4) heart"):
        point = space.point_for_seed(7, prompt=prompt)
        first = space.render([point])
        torch.rand(10)
        assert np.array_equal(first, space.render([point]))
        tab = pipe(ImageParams(prompt=prompt, negative_prompt="", steps=LOOK.steps, guidance=LOOK.guidance,
                               scheduler="Euler a", width=64, height=64, seed=7))
        assert np.array_equal(first[0], np.asarray(tab.images[0])), prompt


def test_model_names_are_admitted_before_anything_is_opened(tmp_path):
    """8. A path outside the model folders, a non-model file or a very long name is refused, naming the field."""
    host = ModelHost.create(Settings(outputs=tmp_path, cache_dir=tmp_path / "cache", device="cpu", offline=True))
    with pytest.raises(ValueError, match=r"model: '../../../../etc/passwd' is outside the model folders"):
        host.vae_pipeline("../../../../etc/passwd")
    with pytest.raises(ValueError, match="model: a model name, hub id or path has at most 512 characters"):
        host.image_pipeline("a" * 5000)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(ValueError, match="model: notes.txt is not a model file"):
        host.gan_pipeline(str(notes))
    assert host.admission.admit_model("text", "").name == "smollm2-135m-instruct"  # blank = the default


def test_guests_are_held_to_the_defaults_on_every_path_and_unknown_callers_are_guests(tmp_path):
    """2. The host's admission, not each handler: a guest caller cannot name another model on any getter, and a
    request that arrives without a caller on a studio with guests is a guest (fail closed)."""
    settings = Settings(outputs=tmp_path, cache_dir=tmp_path / "cache", device="cpu", offline=True,
                        auth=(("o", "pw"),), guest_auth=(("g", "pw"),))
    host = ModelHost.create(settings)
    host.registry.add(ModelSpec("other-vae", "vae", "folder", str(tmp_path), license="test"))
    for getter, name in ((host.vae_pipeline, "other-vae"), (host.gan_pipeline, "gpt2/x"),
                         (host.image_pipeline, "sd-1.5"), (host.text_pipeline, "smollm2-360m-instruct")):
        with pytest.raises(AccessDenied, match="Guests can't switch models"):
            getter(name)  # no caller: a guest
        with calling(Caller("g", guest=True)), pytest.raises(AccessDenied, match="Guests can't switch models"):
            getter(name)
    with calling(Caller("g", guest=True)), pytest.raises(AccessDenied, match="Guests can't change the text engine"):
        host.text_pipeline("", backend="transformers")
    with calling(Caller("o")), pytest.raises(ValueError, match="outside the model folders"):
        host.vae_pipeline("/etc")


def test_explore_is_held_to_the_server_limits_and_full_renders_count_for_guests(tmp_path):
    """3 and 2. Explore's look obeys the image limits, a render request has a cap, and every render — a slider
    preview too — counts its work against a guest's quota."""
    settings = Settings(outputs=tmp_path, cache_dir=tmp_path / "cache", device="cpu", offline=True,
                        image_limits=ImageLimits(max_steps=20, max_megapixels=0.3))
    host = ModelHost.create(settings)
    with pytest.raises(ValueError, match="steps must be from 1 to 20 on this server, got 150"):
        host.admission.admit_look(DiffusionLook(steps=150, width=64, height=64))
    with pytest.raises(ValueError, match="size: 2048×2048 is 4.19 megapixels; the limit is 0.3"):
        host.admission.admit_look(DiffusionLook(steps=10, width=2048, height=2048))
    with pytest.raises(ValueError, match="one diffusion request renders 1 to 480 pictures, got 4,096"):
        host.admission.admit_render(4096, preview=True)  # a walk of 480 frames is Explore's longest
    host.admission.admit_render(24 * 24, preview=True, kind="vae")  # a VAE's biggest map
    charged = []
    guest = Caller("g", guest=True, charge=lambda units, what: charged.append((units, what)) or "admission")
    with calling(guest):
        host.admission.admit_render(1, preview=True, units=0.05)
        host.admission.admit_render(64, preview=False, units=2.5)
    assert charged == [(0.05, "this preview"), (2.5, "this render")] and guest.charged == ["admission"] * 2
    with calling(Caller("g", guest=True, session="s")), pytest.raises(ValueError, match="preview_steps must be from "
                                                                                       "1 to 12 for guests, got 20"):
        host.admission.admit_look(DiffusionLook(steps=10, preview_steps=20, width=64, height=64))


def test_an_image_tab_picture_opens_in_explore_as_the_model_read_it_and_says_what_it_leaves_out():
    """4. The style is applied to the prompt Explore embeds; LoRAs, hires and a start image are named, not dropped
    in silence."""
    from studio.actions.latent import from_picture

    settings, notes = from_picture({"prompt": "a cat", "negative_prompt": "blurry", "model": "m", "seed": 4,
                                    "style": {"name": "Watercolour", "prompt": "watercolour painting of {prompt}",
                                              "negative": "photo"}})
    assert settings["prompt"] == "watercolour painting of a cat" and settings["negative_prompt"] == "blurry, photo"
    assert notes == [] and settings["seed"] == 4
    _, notes = from_picture({"prompt": "a cat", "loras": {"style": 0.8}, "hires": {"scale": 2}, "mode": "img2img"})
    assert notes == ["Explore shows this picture's seed and prompt without its LoRAs (style), the hires pass, its "
                     "start picture (img2img): a point holds start noise and a prompt."]


def test_latents_are_written_per_request_never_through_a_shared_temporary_file(tmp_path):
    """7. Keeping a latent builds its file in memory (no fixed `.tmp-latent.safetensors` that users race): many
    users keeping different points at once each get their own back."""
    from pipelines.latent import LatentPoint, load_points, points_bytes

    def keep(i: int, out: dict) -> None:
        point = LatentPoint(torch.full((4,), float(i)), model="m", label=f"point {i}", seed=i)
        path = tmp_path / f"kept-{i}.safetensors"
        path.write_bytes(points_bytes([point]))
        out[i] = load_points(path)[0]

    got: dict = {}
    threads = [threading.Thread(target=keep, args=(i, got)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(torch.equal(got[i].z, torch.full((4,), float(i))) and got[i].label == f"point {i}" and got[i].seed == i
               for i in range(16))
    assert not list(tmp_path.glob(".tmp*"))


def test_requests_tokenizing_at_once_each_get_their_own_padding(tiny):
    """Found by the LoRA test above, flaky once in a loaded run: a shared fast tokenizer takes its truncation and
    padding from the last call, so two requests tokenizing at once (diffusers: "max_length", then "longest")
    could get ids of the other's length. Views call it one request at a time."""
    import sys

    pipe, _ = tiny
    views = [pipe.model.view("txt2img", "DDIM") for _ in range(2)]
    wrong: list[int] = []

    def padded():
        for _ in range(2000):
            ids = views[0].tokenizer("red heart", padding="max_length", max_length=16, truncation=True).input_ids
            if len(ids) != 16:
                wrong.append(len(ids))

    def longest():
        for _ in range(2000):
            views[1].tokenizer("red heart", padding="longest")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: without the lock, a few dozen go wrong
    try:
        threads = [threading.Thread(target=padded), threading.Thread(target=longest)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_preprocessor_model_is_the_settings_one_loaded_once_and_not_for_guests(tmp_path):
    from tests.conftest import build_tiny_depth_model

    folder = build_tiny_depth_model(tmp_path / "depth")
    settings = Settings(outputs=tmp_path, cache_dir=tmp_path / "cache", device="cpu", offline=True,
                        auth=(("o", "pw"),), guest_auth=(("g", "pw"),), depth_model=str(folder))
    host = ModelHost.create(settings)
    with calling(Caller("g", guest=True)), pytest.raises(AccessDenied, match="Guests can't use the depth"):
        host.estimator("depth")
    with calling(Caller("o")):
        first = host.estimator("depth")
        assert host.estimator("depth") is first and host.cache.peek("helper", str(folder)) is first


def test_a_render_holds_its_model_so_another_users_load_cannot_evict_it_midway():
    """Explore, GAN and VAE renders hold the cached model they render with (ModelCache.holding, by identity):
    another request's load waits for it instead of dropping it mid-render."""
    cache = ModelCache(1, wait_for_room_s=1)
    first = cache.get("gan", "a", lambda: object())
    with cache.holding(first):
        assert cache.in_use("gan", "a") == 1
        with pytest.raises(ModelsBusy, match="a is still in use by another request"):
            cache.get("gan", "b", object)
    assert cache.in_use("gan", "a") == 0
    second = cache.get("gan", "b", object)  # once the render is done, the next load takes its place
    assert cache.peek("gan", "a") is None and cache.peek("gan", "b") is second
    with cache.holding(first):  # no longer cached: nothing is held, nothing fails
        assert cache.in_use("gan", "a") == 0
