"""Fixtures for the model core: one real (randomly initialised) network per test session."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.card import Evaluation, ModelCard, TrainingInfo


@pytest.fixture(scope="session")
def random_model():
    """The real ResNet-50 classifier with random weights (no download needed)."""
    from model.network import build_model

    return build_model(weights=None, seed=7)


@pytest.fixture(scope="session")
def trained_card() -> ModelCard:
    """A card as a training run writes it (values are illustrative, not measured)."""
    return ModelCard(
        name="test-run",
        threshold=0.42,
        threshold_source="Youden J on validation",
        training=TrainingInfo(
            trained=True,
            initial_weights="imagenet",
            protocol="patient",
            dataset="synthetic",
            preset="smoke",
            epochs=1,
            batch_size=2,
        ),
        evaluation={
            "patient": Evaluation(
                protocol="patient",
                description="patient-disjoint test",
                patient_disjoint=True,
                scope="model",
                metrics={"accuracy": 0.5, "auc": 0.9},
                intervals={"accuracy": (0.3, 0.7), "auc": (0.85, 0.95)},
            )
        },
    )


@pytest.fixture(scope="session")
def artifact_dir(random_model, trained_card, tmp_path_factory) -> Path:
    from model.artifact import save_artifact

    return save_artifact(random_model, trained_card, tmp_path_factory.mktemp("artifact") / "model")


@pytest.fixture(scope="session")
def sample_inputs(breakhis_sample_images) -> np.ndarray:
    """Four real BreakHis images (two benign, two malignant) as model inputs."""
    from model.config import InputSpec
    from model.preprocessing import load_image_file, to_model_input

    benign = [p for p in breakhis_sample_images if "_B_" in p.name][:2]
    malignant = [p for p in breakhis_sample_images if "_M_" in p.name][:2]
    return np.stack([to_model_input(load_image_file(p), InputSpec()) for p in benign + malignant])


def png_bytes(image: Image.Image, **save_args) -> bytes:
    """Encode a Pillow image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=save_args.pop("format", "PNG"), **save_args)
    return buffer.getvalue()


def tissue_like(width: int = 700, height: int = 460, seed: int = 0) -> Image.Image:
    """A pink-and-purple noise image shaped like a BreakHis frame."""
    rng = np.random.default_rng(seed)
    base = np.array([230, 170, 200], dtype=np.float32)
    noise = rng.normal(0, 25, size=(height, width, 3))
    blobs = (rng.random((height, width)) > 0.97)[..., None] * np.array([-120, -110, -40])
    return Image.fromarray(np.clip(base + noise + blobs, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def trusted_card(random_model, trained_card) -> ModelCard:
    """``trained_card`` plus everything a card can say about trusting a result: a Platt
    calibration, a feature summary (fitted on synthetic images' real features, so synthetic
    images are typical and real ones may be unlike) and a training-image profile."""
    from dataclasses import replace

    from model.applicability import fit_feature_summary
    from model.calibration import Calibration
    from model.config import InputSpec
    from model.explainer import Explainer
    from model.preprocessing import decode_image, to_model_input
    from model.quality import ImageProfile

    decoded = [decode_image(png_bytes(tissue_like(seed=100 + k))) for k in range(15)]
    inputs = np.stack([to_model_input(image, InputSpec()) for image in decoded])
    features = Explainer(random_model).forward(inputs).features
    return replace(
        trained_card,
        name="test-run-trusted",
        calibration=Calibration("platt", slope=0.6, intercept=0.3, fitted_on="illustrative"),
        applicability=fit_feature_summary(features[:10], features[10:], n_components=3),
        training_images=ImageProfile.from_measurements(
            [(image.width, image.height) for image in decoded],
            [image.pixels.reshape(-1, 3).mean(axis=0) for image in decoded],
        ),
    )


@pytest.fixture(scope="session")
def trusted_artifact(random_model, trusted_card, tmp_path_factory) -> Path:
    """An artifact of ``random_model`` under ``trusted_card``."""
    from model.artifact import save_artifact

    return save_artifact(random_model, trusted_card, tmp_path_factory.mktemp("trusted") / "model")


@pytest.fixture(scope="session")
def flat_network():
    """The real classifier whose logit ignores its features (zero kernel): every Grad-CAM
    map is zero everywhere."""
    from model.network import build_model

    network = build_model(weights=None, seed=3)
    logit = network.get_layer("logit")
    logit.kernel.assign(logit.kernel.numpy() * 0.0)
    return network
