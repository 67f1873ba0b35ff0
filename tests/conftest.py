"""Shared fixtures: the real BreakHis sample beside the checkout, quiet TensorFlow logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's default, made explicit: the app turns oneDNN off for its process when the choice
# is left open (app/process.py), which would otherwise make the suite's TensorFlow (and its
# subprocesses) depend on which test happens to import TensorFlow first.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# The app's background warm-up of every map control (seconds of CPU per loaded model) is
# off for the suite, which loads many models on two cores; tests/app/test_model_loading.py
# turns it on where it is the subject.
os.environ.setdefault("BCD_WARM_UP_CONTROLS", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
BREAKHIS_SAMPLE = REPO_ROOT.parent / "shared" / "breakhis-sample"


REQUIRE_SAMPLE = "BCD_REQUIRE_SAMPLE"
"""Set (to anything but empty or 0) by ``.ci/run``: there a missing sample is an error, so
the real-image tests cannot silently turn into skips."""


def sample_missing(reason: str) -> None:
    """Skip the test, or fail it where the sample is required (:data:`REQUIRE_SAMPLE`)."""
    if os.environ.get(REQUIRE_SAMPLE, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_SAMPLE} says the real sample is required here")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def breakhis_sample() -> Path:
    """Root of the 34 real BreakHis images (official archive layout); skip when absent
    (fail under ``BCD_REQUIRE_SAMPLE``)."""
    if not (BREAKHIS_SAMPLE / "BreaKHis_v1").is_dir():
        sample_missing(f"real BreakHis sample not found at {BREAKHIS_SAMPLE}")
    return BREAKHIS_SAMPLE


@pytest.fixture(scope="session")
def breakhis_sample_images(breakhis_sample: Path) -> list[Path]:
    """All 34 real PNGs, sorted by path."""
    return sorted(breakhis_sample.glob("BreaKHis_v1/**/*.png"))
