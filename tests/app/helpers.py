"""Helpers for the app tests: image bytes, and driving the real app with AppTest."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_UI = REPO_ROOT / "app" / "ui.py"


# --- images -------------------------------------------------------------------------------
def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tissue_like(seed: int = 0, height: int = 460, width: int = 700) -> np.ndarray:
    """Pink-and-purple noise shaped like a BreakHis frame (used when the sample is absent)."""
    rng = np.random.default_rng(seed)
    pink, purple = np.array([225, 150, 195.0]), np.array([125, 65, 150.0])
    mix = rng.random((height, width, 1))
    pixels = pink * mix + purple * (1 - mix) + rng.normal(0, 10, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


# --- driving the app ----------------------------------------------------------------------
def new_app() -> AppTest:
    """The real app script (app/ui.py, which app/main.py serves), with a timeout that covers
    loading the model."""
    return AppTest.from_file(str(APP_UI), default_timeout=180)


def run_until_loaded(app: AppTest, timeout: float = 180) -> AppTest:
    """Run, and rerun until the model has finished loading in the background."""
    app.run()
    deadline = time.monotonic() + timeout
    while any("Loading the model" in info.value for info in app.info) or any(
        ": loading..." in caption.value for caption in app.sidebar.caption
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the model did not load in time")
        time.sleep(0.25)
        app.run()
    return app


def page_script_hash(url_path: str) -> str:
    """The id Streamlit gives the ``st.Page`` with this URL path (``Page._script_hash``); also
    what an ``st.page_link`` to that page carries."""
    return calc_hash(url_path)


def open_page(app: AppTest, url_path: str) -> AppTest:
    """Switch to the navigation page registered under ``url_path``; call ``run()`` next.

    ``app/ui.py`` builds its pages from callables (``st.Page(functools.partial(render,
    context), url_path=...)``), and ``AppTest.switch_page`` accepts only page files. A session
    asks for a page by its script hash, which ``st.Page`` computes from the URL path alone
    (``Page._script_hash`` is ``calc_hash(url_path)`` in ``streamlit/navigation/page.py``;
    ``st.navigation`` registers each page under it). So this sets the hash that
    ``AppTest.run`` requests (its ``_page_hash``, which ``switch_page`` sets for files after
    ``_resolve_page_hash``), after checking that the last run registered such a page: a
    typo or a page missing from the navigation fails here instead of silently opening the
    default page.

    Example: ``open_page(app, "model-card").run()``.
    """
    page_hash = page_script_hash(url_path)
    registered = app._registered_pages  # what st.navigation registered in the last run
    if page_hash not in registered:  # (the default page is registered with url_pathname "")
        known = sorted(str(info.get("url_pathname")) for info in registered.values())
        raise ValueError(f"no page {url_path!r} in the last run's navigation: {known}")
    app._page_hash = page_hash
    return app


def texts(elements) -> list[str]:
    """The text values of a list of AppTest elements."""
    return [str(element.value) for element in elements]
