"""End to end in a real browser: `streamlit run app/main.py` + Debian's headless Chromium.

Set ``BCD_SAVE_SCREENSHOT=1`` to also write the screenshot to ``docs/screenshots/app.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.launch import (
    CHROMIUM,
    CHROMIUM_ARGS,
    start_streamlit,
    stop,
    wait_until_healthy,
)
from tests.app.helpers import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGE_NAME = "SOB_M_DC-14-2523-40-010.png"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "app.png"


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def app_url(
    chromium_path: Path, trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser")
    (folder / "runs").mkdir()
    log = folder / "streamlit.log"
    process, url = start_streamlit(trained_artifact, folder / "runs", log)
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        yield url
    finally:
        stop(process)


def test_upload_shows_probability_and_overlay_in_chromium(
    app_url: str, chromium_path: Path, breakhis_sample_images: list[Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    image = next(path for path in breakhis_sample_images if path.name == IMAGE_NAME)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            # Tall enough to hold the whole result: Streamlit scrolls inside its own container.
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.goto(app_url)
            page.get_by_role("heading", name="Classify images").wait_for(timeout=60_000)
            page.locator(".st-key-images input[type=file]").set_input_files(str(image))

            probability = page.locator("[data-testid='stMetricValue']").first
            probability.wait_for(timeout=180_000)
            assert re.fullmatch(r"[<>]?\d{1,3}\.\d%", probability.inner_text().strip())

            overlay = page.locator(".st-key-result-0 [data-testid='stImage'] img").nth(2)
            overlay.wait_for(timeout=60_000)
            page.wait_for_function(
                "image => image.complete && image.naturalWidth === 700",
                arg=overlay.element_handle(),
                timeout=60_000,
            )
            page.locator(".st-key-result-0 [data-testid='stPlotlyChart'] svg").first.wait_for(
                timeout=60_000
            )
            body = page.locator("body").inner_text()
            assert "Research use only: not a diagnostic device." in body
            assert "overlay (opacity 0.40)" in body
            assert "malignant, ductal carcinoma; patient 14-2523; 40X; image 10" in body
            assert "Untrained model" not in body
            assert "Traceback" not in body

            time.sleep(1.0)  # let the gauge finish its entry animation
            screenshot = tmp_path / "app.png"
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 50_000
            if os.environ.get("BCD_SAVE_SCREENSHOT"):
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(screenshot, DOCS_SCREENSHOT)
        finally:
            browser.close()
