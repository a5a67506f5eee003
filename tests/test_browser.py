"""A person in Chromium (Playwright, Debian's chromium, headless) drives every tab: types, moves sliders,
clicks, waits for outputs, downloads a GIF; and the layout stays usable at phone width. Screenshots go
to test-artifacts/."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.live import start

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser
SLOW = 90_000  # ms: first requests load models on a 2-core machine


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, tiny_lm_dir, tiny_sd_dir):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("browser")
    port = _free_port()
    app, services = start(root / "outputs", tiny_lm_dir, port, root / "cache", tiny_sd_dir)
    yield f"http://127.0.0.1:{port}/", services
    app.close()


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("STUDIO_REQUIRE_BROWSER") == "1"  # set by .ci/run: CI must not skip these
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail("playwright is not installed, but STUDIO_REQUIRE_BROWSER=1 (CI) requires the browser tests")
        pytest.skip("playwright is not installed")
    if not shutil.os.path.exists(CHROMIUM):
        if required:
            pytest.fail(f"Chromium is not at {CHROMIUM}, but STUDIO_REQUIRE_BROWSER=1 (CI) requires the browser tests")
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


def choose_model(page, elem_id: str, name: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(name)
    box.press("Enter")


def move_slider(page, elem_id: str, value: int) -> None:
    """Drag-equivalent: set the range input the way a browser does when the thumb moves."""
    page.locator(f"#{elem_id} input[type=range]").fill(str(value))
    page.wait_for_function(
        f"() => document.querySelector('#{elem_id} input[type=number]').value == '{value}'", timeout=5_000)


def wait_text(page, elem_id: str, needle: str, timeout: int = SLOW) -> None:
    page.wait_for_function(
        f"() => (document.querySelector('#{elem_id}')?.innerText || '').includes({needle!r})", timeout=timeout)


def download_gif(page, elem_id: str, target) -> bytes:
    """Wait for a GIF in a File component, click its download link like a person, return the bytes."""
    link = page.locator(f"#{elem_id} a[download$='.gif']").first
    link.wait_for(timeout=SLOW)
    with page.expect_download() as info:
        link.click()
    info.value.save_as(target)
    return target.read_bytes()


def test_text_tab_streams_into_the_page(served_app, page, artifacts_dir):
    url, services = served_app
    page.goto(url)
    page.get_by_role("tab", name="Completion").click()
    choose_model(page, "text-model", "tiny-llama")
    page.locator("#text-seed textarea, #text-seed input").first.fill("3")
    page.locator("#text-prompt textarea").fill("Once upon a time")
    page.locator("#text-generate").click()
    wait_text(page, "text-status", "Seed 3")
    text = page.locator("#text-output textarea").input_value()
    assert len(text) > 0
    page.screenshot(path=str(artifacts_dir / "text-tab.png"), full_page=True)
    items = [i for i in services.history.list(tab="text") if i.prompt == "Once upon a time"]
    assert len(items) == 1 and items[0].seed == 3
    assert services.history.path(items[0].files[0]).read_text(encoding="utf-8") == text


def test_image_tab_generates_a_batch(served_app, page, artifacts_dir):
    url, services = served_app
    page.goto(url)
    page.get_by_role("tab", name="Image").click()
    choose_model(page, "image-model", "tiny-sd")
    move_slider(page, "image-steps", 3)
    move_slider(page, "image-batch", 2)
    page.locator("#image-seed textarea, #image-seed input").first.fill("5")
    page.locator("#image-prompt textarea").fill("a red circle")
    page.locator("#image-generate").click()
    wait_text(page, "image-status", "2 image(s)")
    assert page.locator("#image-gallery img").count() >= 2
    page.screenshot(path=str(artifacts_dir / "image-tab.png"), full_page=True)
    assert sorted(i.seed for i in services.history.list(tab="image")) == [5, 6]


def test_gan_tab_grid_select_walk_and_download_the_gif(served_app, page, artifacts_dir, tmp_path):
    url, _ = served_app
    page.goto(url)
    page.get_by_role("tab", name="GAN").click()
    choose_model(page, "gan-model", "tiny-gan")
    move_slider(page, "gan-grid", 2)
    page.locator("#gan-generate").click()
    page.wait_for_function("() => document.querySelectorAll('#gan-gallery img').length >= 4", timeout=SLOW)
    page.locator("#gan-gallery img").first.click()
    page.wait_for_function("() => document.querySelector('#gan-selected img')", timeout=SLOW)
    before = page.locator("#gan-selected img").get_attribute("src")
    page.get_by_text("Latent directions (GANSpace)").click()
    page.locator("#gan-find-directions").click()
    page.locator("#gan-direction-0 input[type=range]").wait_for(timeout=SLOW)
    move_slider(page, "gan-direction-0", 3)  # the selected face moves along the first direction, live
    page.wait_for_function(f"() => document.querySelector('#gan-selected img')?.getAttribute('src') !== {before!r}",
                           timeout=SLOW)
    page.get_by_role("tab", name="Walk (interpolation)").click()
    move_slider(page, "gan-frames", 8)
    page.locator("#gan-walk").click()
    assert download_gif(page, "gan-walk-files", tmp_path / "walk.gif")[:4] == b"GIF8"
    page.screenshot(path=str(artifacts_dir / "gan-tab.png"), full_page=True)


def test_vae_tab_morph_and_map(served_app, page, artifacts_dir, tmp_path):
    url, services = served_app
    page.goto(url)
    page.get_by_role("tab", name="VAE").click()
    choose_model(page, "vae-model", "digit-vae-2d")
    move_slider(page, "vae-random", 3)
    move_slider(page, "vae-frames", 8)
    page.locator("#vae-morph").click()
    assert download_gif(page, "vae-files", tmp_path / "morph.gif")[:4] == b"GIF8"
    page.get_by_role("tab", name="Map").click()
    move_slider(page, "vae-map-cells", 4)
    page.locator("#vae-map").click()
    page.wait_for_function("() => document.querySelectorAll('#vae-map-gallery img').length >= 16", timeout=SLOW)
    page.screenshot(path=str(artifacts_dir / "vae-tab.png"), full_page=True)
    assert len(services.history.list(tab="vae")) >= 2


def test_history_and_models_tabs(served_app, page, artifacts_dir):
    url, services = served_app
    services.history.add("text", {".txt": b"a saved poem"}, prompt="poem for the history test",
                         params={"prompt": "poem for the history test", "max_new_tokens": 33}, seed=9)
    page.goto(url)
    page.get_by_role("tab", name="History").click()
    row = page.locator("#history-table [role=gridcell]", has_text="poem for the history test").first
    row.wait_for(timeout=SLOW)
    row.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('a saved poem'))", timeout=SLOW)
    page.get_by_role("button", name="Restore parameters into its tab").click()
    page.wait_for_function(
        "() => document.querySelector('#text-prompt textarea')?.value === 'poem for the history test'",
        timeout=SLOW)
    page.get_by_role("tab", name="Models / Settings").click()
    cells = page.locator("#models-table [role=gridcell]")
    cells.filter(has_text="smollm2-135m-instruct").first.wait_for(timeout=SLOW)
    shown = " ".join(cells.all_text_contents())
    assert "Apache-2.0" in shown and ("llama.cpp —" in shown or "transformers —" in shown)
    page.screenshot(path=str(artifacts_dir / "models-tab.png"), full_page=True)


def test_phone_width_layout_stays_usable(served_app, browser, artifacts_dir):
    url, _ = served_app
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        page.goto(url)
        page.get_by_role("tab", name="Completion").wait_for(timeout=SLOW)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 2, f"the page scrolls sideways by {overflow}px at phone width"
        page.get_by_role("tab", name="Completion").tap()
        choose_model(page, "text-model", "tiny-llama")
        page.locator("#text-prompt textarea").fill("Hello")
        button = page.locator("#text-generate")
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] >= 44  # a finger fits
        button.tap()
        wait_text(page, "text-status", "tokens in")
        page.screenshot(path=str(artifacts_dir / "phone-text-tab.png"), full_page=True)
    finally:
        context.close()


def test_a_guest_sees_what_they_may_do_and_cannot_pick_models(tmp_path, tiny_lm_dir, tiny_sd_dir, free_port, browser,
                                                             artifacts_dir):
    port = free_port()
    app, _ = start(tmp_path / "outputs", tiny_lm_dir, port, tmp_path / "cache", tiny_sd_dir,
                   auth=(("owner", "owner-pw"),), guest_auth=(("guest", "guest-pw"),), guest_generations_per_hour=5)
    try:
        for user, password, is_guest in (("guest", "guest-pw", True), ("owner", "owner-pw", False)):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("username").fill(user)
            page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()
            page.locator("#text-model input").wait_for(timeout=SLOW)
            if is_guest:
                wait_text(page, "studio-who", "5 of 5 generations left this hour")
                page.wait_for_function("() => document.querySelector('#text-model input').disabled", timeout=SLOW)
                page.screenshot(path=str(artifacts_dir / "guest-view.png"))
            else:
                page.wait_for_timeout(1500)  # the page-load event has run
                assert page.locator("#text-model input").is_enabled()
                assert "guest" not in page.locator("#studio-who").inner_text()
            context.close()
    finally:
        app.close()
