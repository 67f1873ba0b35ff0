"""Helpers for the app tests: image bytes, and driving the real app with AppTest."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

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


def texts(elements) -> list[str]:
    """The text values of a list of AppTest elements."""
    return [str(element.value) for element in elements]
