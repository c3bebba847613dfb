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

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: `bash scripts/setup.sh --test` installs Debian's chromium package",
)


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


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.wait_for_selector("#remove-run")
    try:
        yield page
    finally:
        page.close()


def assert_screenshot(page, path: Path, full_page: bool = True) -> None:
    page.screenshot(path=str(path), full_page=full_page)
    assert path.is_file() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_upload_run_and_screenshot_removal(page, tmp_path):
    """Text removal tab: upload an example file, run, wait for the before/after slider, screenshot."""
    example = SPACE / "examples" / "text_2.png"
    page.locator("#remove-input input[type=file]").set_input_files(str(example))
    page.wait_for_selector("#remove-input img[src]")
    page.click("#remove-run")
    output = page.wait_for_selector("#remove-output img[src]")
    assert output.get_attribute("src")
    page.wait_for_function(
        "() => document.querySelector('#remove-info') && document.querySelector('#remove-info').innerText.includes('256×256')"
    )
    assert_screenshot(page, tmp_path / "removal.png")


def test_click_example_and_detect_tampering(page, tmp_path):
    """Tampered text tab: click a shipped example, run, wait for the annotated image and the shares."""
    page.get_by_role("tab", name="Tampered text").click()
    page.locator("#detect-examples").get_by_role("button").first.click()
    page.wait_for_selector("#detect-input img[src]")
    page.click("#detect-run")
    output = page.wait_for_selector("#detect-annotated img[src]")
    assert output.get_attribute("src")
    page.wait_for_function(
        "() => document.querySelector('#detect-info') && document.querySelector('#detect-info').innerText.includes('tampered')"
    )
    assert_screenshot(page, tmp_path / "tampering.png")


def test_bad_upload_shows_an_error_and_the_page_keeps_working(page, tmp_path):
    """A text file named .png: the UI shows the reason; a following run succeeds."""
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all\n")
    page.get_by_role("tab", name="Text segmentation").click()
    page.locator("#segment-input input[type=file]").set_input_files(str(bad))
    page.click("#segment-run")
    toast = page.locator("[data-testid='toast-text']", has_text="not an image").first
    toast.wait_for()
    assert "notes.png" in toast.inner_text()
    assert_screenshot(page, tmp_path / "error.png", full_page=False)  # the toast is fixed to the viewport
    page.locator("#segment-examples").get_by_role("button").first.click()
    page.wait_for_selector("#segment-input img[src]")
    page.click("#segment-run")
    page.wait_for_selector("#segment-mask img[src]")
    page.wait_for_selector("#segment-overlay img[src]")
