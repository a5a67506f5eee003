"""A person in Chromium: open the app, type in the Text tab, click Generate, watch text stream in."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from pipelines.registry import ModelSpec
from studio.app import build_app, launch
from studio.config import Settings
from studio.services import Services

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser


@pytest.fixture
def served_app(tmp_path, tiny_lm_dir, free_port):
    port = free_port()
    settings = replace(Settings(), port=port, outputs=tmp_path / "outputs", device="cpu",
                       cache_dir=tmp_path / "cache", offline=True)
    services = Services.create(settings)
    services.registry.add(ModelSpec("tiny-llama", "text", "folder", str(tiny_lm_dir), license="test"))
    app = build_app(services)
    launch(app, services, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/", services
    app.close()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not shutil.os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def test_text_tab_streams_into_the_page(served_app, page, artifacts_dir):
    url, services = served_app
    page.goto(url)
    page.get_by_role("tab", name="Completion").click()
    model = page.locator("input[aria-label='Model']")
    model.fill("tiny-llama")
    model.press("Enter")
    page.locator("#text-seed textarea, #text-seed input").first.fill("3")
    page.locator("#text-prompt textarea").fill("Once upon a time")
    page.locator("#text-generate").click()
    output = page.locator("#text-output textarea")
    page.wait_for_function(
        "() => document.querySelector('#text-status') && document.querySelector('#text-status').innerText.includes('Seed 3')",
        timeout=60_000,
    )
    text = output.input_value()
    assert len(text) > 0
    page.screenshot(path=str(artifacts_dir / "text-tab.png"), full_page=True)
    items = services.history.list(tab="text")
    assert len(items) == 1 and items[0].seed == 3 and items[0].prompt == "Once upon a time"
    assert services.history.path(items[0].files[0]).read_text(encoding="utf-8") == text
