"""Fixtures of the training tests: synthetic BreakHis datasets written on demand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from train.synthetic import make_synthetic_breakhis as _make_synthetic_breakhis

SMALL_SIZE = (70, 46)  # a tenth of 700x460: same aspect ratio, fast to write and read


@pytest.fixture
def make_synthetic_breakhis() -> Callable[..., Path]:
    """Factory ``make_synthetic_breakhis(root, patients_per_class=4, images_per_magnification=2,
    size=(700, 460), seed=0, *, total_images=None)`` writing the official archive layout.

    Example:
        def test_x(make_synthetic_breakhis, tmp_path):
            root = make_synthetic_breakhis(tmp_path, patients_per_class=3, size=(70, 46))
    """
    return _make_synthetic_breakhis


@pytest.fixture(scope="session")
def small_synthetic_breakhis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic dataset shared by the session: 5 patients per class, all 4
    magnifications, 2 images each (80 images of 70x46 pixels)."""
    root = tmp_path_factory.mktemp("synthetic_breakhis")
    return _make_synthetic_breakhis(
        root, patients_per_class=5, images_per_magnification=2, size=SMALL_SIZE
    )


@pytest.fixture(scope="session")
def no_signal_manifest(
    small_synthetic_breakhis: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A CSV manifest of ``small_synthetic_breakhis`` with labels scrambled by patient:
    nothing to learn, so the validation loss turns upward once a head starts fitting the
    training patients, and the training loss never saturates (dropout and batch order show
    in it)."""
    from train.dataset import index_dataset

    images = index_dataset(small_synthetic_breakhis, check_images=False).images
    patients = sorted(images["patient"].unique())
    labels = np.random.default_rng(11).permutation([i % 2 for i in range(len(patients))])
    manifest = tmp_path_factory.mktemp("no-signal") / "no-signal.csv"
    images.assign(label=images["patient"].map(dict(zip(patients, labels, strict=True))))[
        ["path", "label", "patient"]
    ].to_csv(manifest, index=False)
    return manifest


def slow_smoke_arguments(manifest: Path, runs: Path) -> list[str]:
    """``train.run`` arguments shared by the tests on :func:`no_signal_manifest`: the smoke
    preset with a learning rate slow enough for the validation loss to turn upward only
    after a few epochs, and a short bootstrap."""
    return [
        *("--preset", "smoke", "--learning-rate", "1e-5", "--bootstrap", "10"),
        *("--data", str(manifest), "--runs-dir", str(runs)),
    ]


@pytest.fixture(autouse=True)
def _each_test_hears_its_warnings() -> None:
    """warn_once says a warning once per process; each test is a fresh run."""
    from train.console import forget_warnings

    forget_warnings()
