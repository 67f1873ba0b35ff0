"""End to end in a real browser: `streamlit run app/main.py` + Debian's headless Chromium.

One server serves the module's tests: a single image's probability and overlay, and a mixed
upload through the browser's own file chooser (WebP, animated GIF, PNG, the same PNG under
another name, a text file), read back from the rendered results table, counts and CSV.

Set ``BCD_SAVE_SCREENSHOT=1`` to also write the screenshot to ``docs/screenshots/app.png``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

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
            assert_gauge_caption_clear_of_ticks(
                page.locator(".st-key-result-0 [data-testid='stPlotlyChart']").first
            )
            screenshot = tmp_path / "app.png"
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 50_000
            if os.environ.get("BCD_SAVE_SCREENSHOT"):
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(screenshot, DOCS_SCREENSHOT)
        finally:
            browser.close()


READ_TEXT_BOXES = """chart => {
    const box = element => {
        const r = element.getBoundingClientRect();
        return {text: element.textContent, top: r.top, bottom: r.bottom, left: r.left,
                right: r.right};
    };
    return {chart: box(chart), texts: [...chart.querySelectorAll('svg text')].map(box)};
}"""


def assert_gauge_caption_clear_of_ticks(chart: Any) -> None:
    """As drawn by the browser: the gauge's tick labels read 0%..100%, and its threshold
    caption lies below all of them and inside the chart (not clipped)."""
    drawn = chart.evaluate(READ_TEXT_BOXES)
    ticks = [box for box in drawn["texts"] if re.fullmatch(r"\d+%", box["text"].strip())]
    assert sorted(box["text"] for box in ticks) == sorted(["0%", "25%", "50%", "75%", "100%"]), [
        box["text"] for box in drawn["texts"]
    ]
    (caption,) = [box for box in drawn["texts"] if box["text"].startswith("threshold ")]
    # Below the lowest tick labels (0% and 100%), not on their line between them: the
    # caption used to sit level with them, 30 px from each.
    lowest = max(ticks, key=lambda box: box["bottom"])
    assert caption["top"] >= lowest["bottom"], f"caption {caption} beside tick label {lowest}"
    assert caption["bottom"] <= drawn["chart"]["bottom"] + 1
    assert caption["left"] >= drawn["chart"]["left"] - 1
    assert caption["right"] <= drawn["chart"]["right"] + 1


# --- a mixed upload through the file chooser ----------------------------------------------
TEXT_REASON = "not a supported image type (.txt): upload PNG, JPEG, TIFF, BMP, WebP or GIF images"
TYPED_CASE = "CASE-017"
"""Typed before uploading: the images without a BreakHis patient id join this case."""

READ_VISIBLE_CELLS = """grid => {
    const table = grid.querySelector('table[role=grid]');
    const headers = {}, cells = {};
    for (const th of table.querySelectorAll('th[role=columnheader]')) {
        headers[th.getAttribute('aria-colindex')] = th.innerText;
    }
    for (const td of table.querySelectorAll('td[role=gridcell]')) cells[td.id] = td.innerText;
    return {headers, cells, columns: Number(table.getAttribute('aria-colcount'))};
}"""


def rendered_table(grid: Any, max_scrolls: int = 20) -> list[dict[str, str]]:
    """The rows of a rendered ``st.dataframe`` (``grid``, a Playwright locator), each as
    {column header: cell text}.

    ``st.dataframe`` draws on a canvas (glide-data-grid); beside it, it renders an accessible
    ``<table role=grid>`` of the cells in view only. So this scrolls the grid to the right
    with the mouse wheel, as a visitor would (setting ``scrollLeft`` from a script does not
    re-render it), and collects every cell seen until every column has been.
    """
    # The frame of an ``st.dataframe`` is drawn before its grid is mounted: on a busy
    # machine there can be seconds between the two.
    grid.locator("table[role=grid]").wait_for(state="attached", timeout=60_000)
    grid = grid.element_handle()
    headers: dict[int, str] = {}
    cells: dict[str, str] = {}
    grid.hover()
    for _ in range(max_scrolls):
        seen = grid.evaluate(READ_VISIBLE_CELLS)
        # aria-colindex counts from 1; cell ids are glide-cell-<column>-<row>, from 0.
        headers.update({int(index) - 1: text for index, text in seen["headers"].items()})
        cells.update(seen["cells"])
        if len(headers) == seen["columns"]:
            break
        grid.owner_frame().page.mouse.wheel(300, 0)
        time.sleep(0.3)  # the grid re-renders its accessible table on the next frames
    else:
        raise AssertionError(f"columns never scrolled into view; seen {headers}")
    rows: dict[int, dict[str, str]] = {}
    for cell_id, text in cells.items():
        column, row = (int(part) for part in cell_id.removeprefix("glide-cell-").split("-"))
        rows.setdefault(row, {})[headers[column]] = text
    return [rows[row] for row in sorted(rows)]


@pytest.fixture
def mixed_upload(breakhis_sample_images: list[Path], tmp_path: Path) -> list[Path]:
    """Five files written for the test from one real BreakHis image: WebP, a 3-frame GIF,
    the PNG itself, the same PNG under another name, and a text file."""
    original = next(path for path in breakhis_sample_images if path.name == IMAGE_NAME)
    folder = tmp_path / "upload"
    folder.mkdir()
    image = Image.open(original).convert("RGB")
    image.save(folder / "scan.webp", format="WEBP")
    frames = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image.rotate(180)]
    image.save(folder / "scan.gif", format="GIF", save_all=True, append_images=frames)
    shutil.copyfile(original, folder / IMAGE_NAME)
    shutil.copyfile(original, folder / "copy-of-the-slide.png")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return [
        folder / name
        for name in ("scan.webp", "scan.gif", IMAGE_NAME, "copy-of-the-slide.png", "notes.txt")
    ]


def test_mixed_upload_through_the_file_chooser_lists_and_counts_every_file(
    app_url: str, chromium_path: Path, mixed_upload: list[Path]
) -> None:
    """Every chosen file reaches the table (none dropped by the browser), the GIF by its first
    frame, the duplicate flagged and counted once (in the count and in its case), the text
    file with its reason; the CSV the browser downloads says the same."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1900}, accept_downloads=True)
            page.goto(app_url)
            page.get_by_role("heading", name="Classify images").wait_for(timeout=60_000)
            case_field = page.get_by_role(
                "textbox", name="Case id for images without a BreakHis patient id"
            )
            case_field.fill(TYPED_CASE)
            case_field.press("Enter")
            # As a visitor does it: the uploader's button opens the browser's file chooser,
            # and all five files are picked in one go.
            with page.expect_file_chooser() as chooser:
                page.locator(".st-key-images [data-testid='stFileUploaderDropzone'] button").click()
            assert chooser.value.is_multiple()
            chooser.value.set_files([str(path) for path in mixed_upload])

            count_line = page.locator("[data-testid='stMarkdownContainer']").filter(
                has_text=re.compile(r"\d+ of \d+ images? classified\.")
            )
            count_line.wait_for(timeout=180_000)
            # The per-image details come last in a batch: once their heading is there, the
            # whole result has been drawn.
            page.get_by_role("heading", name="Images", exact=True).wait_for(timeout=60_000)
            grids = page.locator("[data-testid='stDataFrame']")
            grids.nth(1).wait_for(timeout=60_000)  # results, then cases

            table = {row["file"]: row for row in rendered_table(grids.nth(0))}
            assert list(table) == [path.name for path in mixed_upload]
            webp, gif, png, copy, text = (table[path.name] for path in mixed_upload)
            for image in (webp, gif, png):
                assert image["error"] == "" and image["duplicate of"] == ""
                assert re.fullmatch(r"0\.\d+|1(\.0+)?", image["probability"])
            assert "first of 3 frames used" in gif["warnings"]
            assert "frames" not in webp["warnings"] + png["warnings"]
            assert copy["duplicate of"] == IMAGE_NAME and copy["error"] == ""
            assert text["error"] == TEXT_REASON
            assert text["probability"] == "" and text["duplicate of"] == ""
            assert text["warnings"] == ""  # the reason is said once, in the error column

            # 5 chosen: the duplicate counted once (4), the text file among them, unclassified.
            assert count_line.inner_text().strip() == (
                "3 of 4 images classified. 1 file could not be used: see the error column. "
                "1 duplicate upload (the same content as an earlier file) counted once: see "
                "the duplicate of column."
            )
            cases = {row["case"]: row for row in rendered_table(grids.nth(1))}
            assert cases["14-2523"]["images"] == "1"
            assert cases[TYPED_CASE]["images"] == "2"  # WebP and GIF; not the copy again

            body = page.locator("body").inner_text()
            assert f"Duplicate of 3. {IMAGE_NAME}: the same content" in body
            assert f"Not classified: {TEXT_REASON}" in body
            assert "first of 3 frames used" in body  # the GIF's note beside its result
            assert "Traceback" not in body

            with page.expect_download() as download:
                page.get_by_role("button", name="Download results (CSV)").click()
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert [row["file"] for row in rows] == [path.name for path in mixed_upload]
            assert [row["duplicate_of"] for row in rows] == ["", "", "", IMAGE_NAME, ""]
            assert [row["error"] for row in rows] == ["", "", "", "", TEXT_REASON]
        finally:
            browser.close()
