"""Interactive latency in the page: from the event (a slider moved, a cell clicked, the timeline
dragged) to the new picture shown, measured in Chromium with Playwright against a running studio.
Used by benchmarks/e2e.py (row "browser")."""

from __future__ import annotations

import statistics
import time

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _src(page, elem_id: str):
    image = page.locator(f"#{elem_id} img").first
    return image.get_attribute("src") if image.count() else None


def _until_new(page, elem_id: str, before, timeout: float = 120_000) -> float:
    """Seconds until the picture in `elem_id` changes (polled in the page, every animation frame)."""
    started = time.perf_counter()
    page.wait_for_function("(a) => { const i = document.querySelector('#' + a[0] + ' img'); "
                           "return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src') !== a[1]; }",
                           arg=[elem_id, before], timeout=timeout, polling="raf")
    return time.perf_counter() - started


def _slide(page, elem_id: str, value: float) -> None:
    page.locator(f"#{elem_id} input[type=range]").fill(str(value))


def _click(page, elem_id: str, fx: float, fy: float) -> None:
    image = page.locator(f"#{elem_id} img").first
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


def slider_times(page, prefix: str, reps: int) -> list[float]:
    """Seconds from each move of the first direction slider to its new picture (the first move is a warm-up)."""
    times = []
    for i in range(reps + 1):
        before = _src(page, f"{prefix}-current")
        _slide(page, f"{prefix}-direction-0", (1.0 + i * 0.3) * (-1) ** i)
        seconds = _until_new(page, f"{prefix}-current", before)
        if i:
            times.append(seconds)
    return times


def _median_slider(page, prefix: str, reps: int) -> float:
    return statistics.median(slider_times(page, prefix, reps))


def open_sliders(page, tab: str, prefix: str, model: str) -> None:
    """In `tab`: choose `model`, open a point and find its directions, so its sliders are there to move."""
    page.get_by_role("tab", name=tab, exact=True).click()
    box = page.locator(f"#{prefix}-model input")
    box.fill(model)
    box.press("Enter")
    page.wait_for_timeout(300)
    before = _src(page, f"{prefix}-current")
    page.locator(f"#{prefix}-open").click()
    _until_new(page, f"{prefix}-current", before)
    page.locator(f"#{prefix}-tab-directions-button").click()
    if prefix == "explore":  # a prompt-pair direction
        page.locator("[placeholder=frowning]").fill("frowning face")
        page.locator("[placeholder=smiling]").fill("smiling face")
    page.locator(f"#{prefix}-find").click()
    page.locator(f"#{prefix}-direction-0 input[type=range]").wait_for(timeout=120_000)
    page.wait_for_timeout(500)


def browser_rows(url: str, reps: int, report) -> None:
    from playwright.sync_api import sync_playwright

    report.line("\nIn the page (Chromium): event → new picture shown")
    report.line(f"{'interaction':44} {'median s':>10} {'target':>10}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        rows = _Rows(report)
        rows.append(("emoji-ldm: real-time, a word typed (4 steps)", statistics.median(real_time(page, reps)), None))
        for tab, prefix, model, target in (("GAN", "gan", "dcgan-faces-64", 0.15), ("VAE", "vae", "digit-vae-2d", 0.15),
                                           ("VAE", "vae", "emoji-vae", 0.5), ("Explore", "explore", "emoji-ldm", 0.5)):
            open_sliders(page, tab, prefix, model)
            rows.append((f"{model}: direction slider move", _median_slider(page, prefix, reps), target))
            if prefix in ("gan", "vae") and model != "emoji-vae":
                page.locator(f"#{prefix}-tab-map-button").click()
                cells = page.locator(f"#{prefix}-map-cells input[type=number]")
                cells.fill("12")
                cells.press("Enter")
                before = _src(page, f"{prefix}-map")
                started = time.perf_counter()
                page.locator(f"#{prefix}-draw-map").click()
                _until_new(page, f"{prefix}-map", before)
                rows.append((f"{model}: 12×12 map drawn", time.perf_counter() - started, 0.3 if prefix == "vae" else None))
                clicks = []
                for i in range(reps + 1):
                    before = _src(page, f"{prefix}-current")
                    _click(page, f"{prefix}-map", 0.1 + 0.08 * i, 0.2 + 0.07 * i)
                    seconds = _until_new(page, f"{prefix}-current", before)
                    if i:
                        clicks.append(seconds)
                rows.append((f"{model}: map cell click", statistics.median(clicks), 0.15))
            if prefix == "gan":
                page.locator(f"#{prefix}-tab-grid-button").click()
                size = page.locator(f"#{prefix}-grid-size input[type=number]")
                size.fill("4")
                size.press("Enter")
                grids = []
                for i in range(reps + 1):
                    page.locator(f"#{prefix}-grid + * input, #{prefix}-grid").first
                    before = _src(page, f"{prefix}-grid")
                    started = time.perf_counter()
                    page.locator(f"#{prefix}-make-grid").click()
                    _until_new(page, f"{prefix}-grid", before)
                    if i:
                        grids.append(time.perf_counter() - started)
                    page.get_by_label("First seed").first.fill(str(100 + i))
                rows.append((f"{model}: 4×4 grid", statistics.median(grids), 0.3))
            if prefix == "explore":
                page.locator("#explore-add-key").click()
                page.locator("#explore-seed textarea, #explore-seed input").first.fill("5")
                before = _src(page, "explore-current")
                page.locator("#explore-open").click()
                _until_new(page, "explore-current", before)
                page.locator("#explore-add-key").click()
                page.locator("#explore-tab-timeline-button").click()
                page.locator("#explore-key-1-frames").wait_for(timeout=60_000)
                scrubs = []
                for i in range(reps + 1):
                    before = _src(page, "explore-scrub-picture")
                    _slide(page, "explore-scrub", 3 + 4 * i)
                    seconds = _until_new(page, "explore-scrub-picture", before)
                    if i:
                        scrubs.append(seconds)
                rows.append(("emoji-ldm: timeline scrub preview", statistics.median(scrubs), 0.5))
        browser.close()


def real_time(page, reps: int) -> list[float]:
    """Image tab, real-time on: seconds from the last key of a word typed into the prompt to its picture shown
    (the studio waits LIVE_PAUSE after a key for the next one; the first word is a warm-up)."""
    page.get_by_role("tab", name="Image", exact=True).click()
    page.locator("#image-seed textarea, #image-seed input").first.fill("7")
    page.locator("#image-live input[type=checkbox]").check()
    prompt = page.locator("#image-prompt textarea")
    times = []
    for i, word in enumerate(["red heart", " smiling", " cat", " sun", " star", " moon", " tree", " fish",
                              " blue"][:reps + 1]):
        prompt.press_sequentially(word[:-1], delay=30)
        page.wait_for_timeout(400)  # the words before it drawn: the next picture is this word's
        before = _src(page, "image-preview")
        prompt.press_sequentially(word[-1])
        seconds = _until_new(page, "image-preview", before)
        if i:
            times.append(seconds)
    page.locator("#image-live input[type=checkbox]").uncheck()
    return times


class _Rows(list):
    """Rows printed (and kept) the moment they are measured."""

    def __init__(self, report) -> None:
        super().__init__()
        self.report = report

    def append(self, row) -> None:
        super().append(row)
        label, seconds, target = row
        self.report.line(f"{label:44} {seconds:10.3f} {('≤ ' + format(target, 'g')) if target else '':>10}")
