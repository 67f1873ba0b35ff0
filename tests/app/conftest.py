"""Fixtures for the app: real model artifacts (random weights), real or synthetic images.

The artifacts hold the real ResNet-50 network, built once per test session; only its weights
are random (so probabilities mean nothing, which is all the app tests need).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from model.card import Evaluation, ModelCard, TrainingInfo
from tests.app.helpers import png_bytes, tissue_like
from tests.conftest import BREAKHIS_SAMPLE, REQUIRE_SAMPLE

# Two images of patient 14-2523 and one of patient 14-25197, as in the real sample.
SAMPLE_NAMES = (
    "SOB_M_DC-14-2523-40-010.png",
    "SOB_M_DC-14-2523-40-014.png",
    "SOB_B_F-14-25197-40-023.png",
)


def trained_card(auc_interval: tuple[float, float] = (0.85, 0.96)) -> ModelCard:
    """A card as a finished training run writes it (numbers illustrative, not measured).

    ``auc_interval`` is the served model's own patient-disjoint AUC CI, which decides its
    evidence level (:mod:`model.trust`): the default makes it *evaluated*.
    """
    return ModelCard(
        name="test-fixture-random-weights",
        threshold=0.5,
        threshold_source="default 0.5 (not tuned)",
        training=TrainingInfo(
            trained=True,
            initial_weights="imagenet",
            protocol="patient",
            dataset="none: test fixture with random weights; its card numbers are illustrative",
            preset="quick",
            epochs=3,
            batch_size=32,
            optimizer="RMSprop",
            learning_rate=1e-4,
            loss="mean_squared_error",
            freeze="base",
        ),
        evaluation={
            "patient": Evaluation(
                protocol="patient",
                description="test fixture: random weights, illustrative numbers",
                patient_disjoint=True,
                metrics={"accuracy": 0.851, "auc": 0.912, "sensitivity": 0.9},
            ),
            "paper": Evaluation(
                protocol="paper",
                description="test fixture: illustrative numbers (paper protocol)",
                patient_disjoint=False,
                metrics={"accuracy": 0.982, "auc": 0.995, "sensitivity": 0.99},
            ),
            "patient-fold1 (this model)": Evaluation(
                protocol="patient",
                description="test fixture: this model's own test split, illustrative",
                patient_disjoint=True,
                scope="model",
                metrics={"accuracy": 0.86, "auc": 0.91},
                intervals={"auc": auc_interval},
            ),
        },
    )


@pytest.fixture(scope="session")
def app_network():
    """The real classifier with random weights (no download)."""
    from model.network import build_model

    return build_model(weights=None, seed=11)


@pytest.fixture(scope="session")
def trained_artifact(app_network, tmp_path_factory) -> Path:
    """A run folder as ``python -m train.run`` writes it: ``<run>/model/``."""
    from model.artifact import save_artifact

    run = tmp_path_factory.mktemp("runs") / "quick-20260101-000000"
    save_artifact(app_network, trained_card(), run / "model")
    return run


def _artifact_with_card(network, card: ModelCard, folder: Path) -> Path:
    from model.artifact import save_artifact

    return save_artifact(network, card, folder / "model")


@pytest.fixture(scope="session")
def unproven_artifact(app_network, tmp_path_factory) -> Path:
    """Trained, but its own patient-disjoint AUC CI includes chance: no labels anywhere."""
    card = trained_card(auc_interval=(0.35, 0.78))
    card.name = "app-test-no-signal"
    return _artifact_with_card(app_network, card, tmp_path_factory.mktemp("unproven"))


@pytest.fixture(scope="session")
def weak_artifact(app_network, tmp_path_factory) -> Path:
    """Better than chance, not by much: a warning on every result."""
    card = trained_card(auc_interval=(0.61, 0.9))
    card.name = "app-test-weak"
    return _artifact_with_card(app_network, card, tmp_path_factory.mktemp("weak"))


@pytest.fixture(scope="session")
def empty_map_artifact(tmp_path_factory) -> Path:
    """An evaluated card on a network whose logit ignores its features (zero kernel): every
    Grad-CAM map is zero everywhere."""
    from model.network import build_model

    network = build_model(weights=None, seed=3)
    logit = network.get_layer("logit")
    logit.kernel.assign(logit.kernel.numpy() * 0.0)
    card = trained_card()
    card.name = "app-test-empty-maps"
    return _artifact_with_card(network, card, tmp_path_factory.mktemp("empty"))


@pytest.fixture(scope="session")
def untrained_artifact(app_network, tmp_path_factory) -> Path:
    from model.artifact import save_artifact

    card = ModelCard(name="app-test-untrained", training=TrainingInfo(trained=False))
    return save_artifact(app_network, card, tmp_path_factory.mktemp("untrained") / "model")


@pytest.fixture(scope="session")
def trained_zip(trained_artifact: Path, tmp_path_factory) -> Path:
    from model.artifact import export_zip

    return export_zip(trained_artifact / "model", tmp_path_factory.mktemp("zip") / "model.zip")


@pytest.fixture(scope="session")
def damaged_artifact(trained_artifact: Path, tmp_path_factory) -> Path:
    """A valid card beside a damaged weights file (its checksum no longer matches)."""
    folder = tmp_path_factory.mktemp("damaged") / "model"
    folder.mkdir()
    card = (trained_artifact / "model" / "model_card.json").read_text(encoding="utf-8")
    (folder / "model_card.json").write_text(card, encoding="utf-8")
    (folder / "model.keras").write_bytes(b"PK\x03\x04 not really a keras file")
    return folder


@pytest.fixture(scope="session")
def bad_card_artifact(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("badcard") / "model"
    folder.mkdir()
    (folder / "model_card.json").write_text("{not json", encoding="utf-8")
    (folder / "model.keras").write_bytes(b"")
    return folder


@pytest.fixture(autouse=True)
def isolated_model_environment(monkeypatch, tmp_path) -> Path:
    """No model configured, an empty runs folder and an empty download cache, unless a test
    sets one."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.delenv("BCD_MODEL", raising=False)
    monkeypatch.setenv("BCD_RUNS_DIR", str(runs))
    monkeypatch.setenv("BCD_CACHE_DIR", str(tmp_path / "bcd-cache"))
    return runs


@pytest.fixture(scope="session")
def sample_images() -> dict[str, bytes]:
    """Three BreakHis-named PNGs: real images from the shared sample when it is there;
    otherwise synthetic tissue-like ones, with a warning (an error under
    ``BCD_REQUIRE_SAMPLE``, as in CI)."""
    found = {path.name: path for path in BREAKHIS_SAMPLE.glob("BreaKHis_v1/**/*.png")}
    missing = [name for name in SAMPLE_NAMES if name not in found]
    if missing:
        if os.environ.get(REQUIRE_SAMPLE, "") not in ("", "0"):
            pytest.fail(f"real sample images {missing} not found under {BREAKHIS_SAMPLE}")
        warnings.warn(
            f"real sample images {missing} not found under {BREAKHIS_SAMPLE}: synthetic "
            "tissue-like images stand in for them",
            stacklevel=2,
        )
    return {
        name: found[name].read_bytes() if name in found else png_bytes(tissue_like(seed))
        for seed, name in enumerate(SAMPLE_NAMES)
    }
