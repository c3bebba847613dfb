"""The Space in a real browser: headless Debian Chromium driven by Playwright.

`bash scripts/setup.sh --test` installs Chromium (`apt-get install chromium`) and the `playwright` package; the
browser is Debian's `/usr/bin/chromium` (Playwright's own browser downloads are never used).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_space import SPACE, free_port, load_app, save_tiny_model

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is missing: `bash scripts/setup.sh --test` installs Debian's chromium package",
    ),
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> Iterator[str]:
    app = load_app()
    demo = app.build_demo(str(save_tiny_model(tmp_path_factory.mktemp("browser-model"))))
    _, url, _ = app.launch(
        demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="install the test extra: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}
#: Page heights (CSS px) the layout must stay within with a 300×900 input on the tampering tab, per viewport.
MAX_PAGE_HEIGHT = {"desktop": 1200, "phone": 2000}


def open_page(browser, url: str, width: int = 1280, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#remove-run")
    return page


@pytest.fixture
def page(browser, app_url):
    page = open_page(browser, app_url)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the screenshots go: $UPOCR_SCREENSHOTS (to look at them) or the test's temporary folder."""
    folder = Path(os.environ.get("UPOCR_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_screenshot(page, path: Path, full_page: bool = True) -> None:
    page.screenshot(path=str(path), full_page=full_page)
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def shown_images(page, selector: str) -> list[dict]:
    """Box and natural size of every visible picture under `selector`."""
    return page.eval_on_selector_all(
        f"{selector} img[src]",
        """els => els.filter(e => e.offsetParent && e.complete && e.naturalWidth > 0).map(e => {
            const r = e.getBoundingClientRect();
            return {left: r.left, right: r.right, width: r.width, height: r.height,
                    naturalWidth: e.naturalWidth, naturalHeight: e.naturalHeight,
                    objectFit: getComputedStyle(e).objectFit};
        })""",
    )


def painted_size(image: dict) -> tuple[float, float]:
    """The size a picture is painted at inside its box with `object-fit: scale-down` (checked where it matters):
    fitted to the box, never larger than its pixels."""
    assert image["objectFit"] == "scale-down", image
    scale = min(image["width"] / image["naturalWidth"], image["height"] / image["naturalHeight"], 1.0)
    return image["naturalWidth"] * scale, image["naturalHeight"] * scale


def test_upload_run_and_screenshot_removal(page, screenshots):
    """Text removal tab: upload an example file, run, wait for the before/after slider, screenshot."""
    example = SPACE / "examples" / "text_2.png"
    page.locator("#remove-input input[type=file]").set_input_files(str(example))
    page.wait_for_selector("#remove-input img[src]")
    page.click("#remove-run")
    page.wait_for_function(
        "() => document.querySelector('#remove-info') && document.querySelector('#remove-info').innerText.includes('256×256')"
    )
    page.wait_for_selector("#remove-output img[src]")
    # a 256-pixel image is never painted larger than its pixels, in the slider or in the input
    images = shown_images(page, "#remove-output") + shown_images(page, "#remove-input")
    assert images and all(image["objectFit"] == "scale-down" for image in images)
    assert_screenshot(page, screenshots / "removal.png")


def test_click_example_and_detect_tampering(page, screenshots):
    """Tampering tab: click a shipped example, run, wait for the verdict and the marked image."""
    page.get_by_role("tab", name="Tampering").click()
    page.locator("#detect-examples").get_by_role("button").first.click()
    page.wait_for_selector("#detect-input img[src]")
    page.click("#detect-run")
    page.wait_for_selector("#detect-annotated img[src]")
    page.wait_for_function(
        "() => document.querySelector('#detect-info') && document.querySelector('#detect-info').innerText.includes('tampered')"
    )
    verdict = page.locator("#detect-verdict").inner_text()
    assert "Tampered text found" in verdict or "No tampered text" in verdict or "No text" in verdict
    assert page.locator("#tamper-legend .upocr-legend-item").count() == 3
    assert_screenshot(page, screenshots / "tampering.png")


def test_bad_upload_is_named_at_once_and_the_page_keeps_working(page, tmp_path, screenshots):
    """A text file named .png: a toast names the file and the reason on upload (before Run), the input is
    cleared; a following run succeeds."""
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all\n")
    page.get_by_role("tab", name="Segment").click()
    page.locator("#segment-input input[type=file]").set_input_files(str(bad))
    toast = page.locator("[data-testid='toast-text']", has_text="not an image").first
    toast.wait_for()
    assert "Not a usable image" in toast.inner_text() and "notes.png" in toast.inner_text()
    page.wait_for_function("() => !document.querySelector('#segment-input img[src]')")
    assert_screenshot(page, screenshots / "error.png", full_page=False)  # the toast is fixed to the viewport
    page.locator("#segment-examples").get_by_role("button").first.click()
    page.wait_for_selector("#segment-input img[src]")
    page.click("#segment-run")
    page.wait_for_selector("#segment-overlay img[src]")


def test_run_without_an_image_asks_for_one_and_marks_no_output(page, screenshots):
    page.locator("#remove-input button[aria-label='Remove Image']").click()
    page.wait_for_function("() => !document.querySelector('#remove-input img[src]')")
    page.click("#remove-run")
    page.get_by_text("Upload an image first").first.wait_for()
    assert page.locator("#remove-output .error, #remove-info .error").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0
    assert_screenshot(page, screenshots / "no-image.png", full_page=False)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_layout_fits_the_screen(browser, app_url, tmp_path, screenshots, viewport):
    """At 1280×800 and at a phone's 390×844: every task tab is visible without a menu, a 300×900 image and its
    outputs fit the viewport's width, the page height stays bounded, the legend is there."""
    from PIL import Image

    width, height = VIEWPORTS[viewport]
    tall = tmp_path / "tall.png"
    Image.new("RGB", (300, 900), (30, 90, 160)).save(tall)
    page = open_page(browser, app_url, width, height)
    try:
        tabs = page.get_by_role("tab")
        names = [tabs.nth(i).inner_text() for i in range(tabs.count()) if tabs.nth(i).is_visible()]
        assert names == ["Erase text", "Segment", "Tampering"]
        for i in range(tabs.count()):
            if tabs.nth(i).is_visible():
                box = tabs.nth(i).bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert_screenshot(page, screenshots / f"{viewport}-start.png", full_page=False)
        page.get_by_role("tab", name="Tampering").click()
        page.locator("#detect-input input[type=file]").set_input_files(str(tall))
        page.wait_for_function("() => document.querySelector('#detect-input img[src]')")
        page.click("#detect-run")
        page.wait_for_function("() => document.querySelector('#detect-info').innerText.includes('300×900')")
        page.wait_for_selector("#detect-annotated img[src]")
        for selector in ("#detect-input", "#detect-annotated"):
            for image in shown_images(page, selector):
                assert image["left"] >= 0 and image["right"] <= width
                assert painted_size(image)[1] <= 400  # the tall image is scaled down to the display height
        assert page.locator("#tamper-legend .upocr-legend-item").count() == 3
        assert page.locator("#tamper-legend").is_visible()
        page_height = page.evaluate("() => document.documentElement.scrollHeight")
        assert page_height <= MAX_PAGE_HEIGHT[viewport], page_height
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert_screenshot(page, screenshots / f"{viewport}-tampering-tall.png")
    finally:
        page.close()
