"""Stain normalisation and stain augmentation in training: the fold's reference comes from
its training images only, the run still learns, the served model carries the reference and
applies it, and Macenko augmentation varies the stains without touching the glass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from model.analysis import Analyzer
from model.artifact import read_card
from model.config import InputSpec
from model.preprocessing import load_image_file, prepare_input, resize_to_input
from model.stain import synthetic_he_tile, tissue_mask
from tests.app.helpers import png_bytes
from train.pipeline import load_images, macenko_jitter
from train.run import main
from train.staining import fit_fold_reference, stain_matrices
from train.synthetic import make_synthetic_breakhis

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """As the smoke test's data (12 patients per class, each with its own stain shift), at
    half the BreakHis frame size to keep decoding short."""
    return make_synthetic_breakhis(
        tmp_path_factory.mktemp("synthetic-stain"),
        patients_per_class=12,
        images_per_magnification=1,
        size=(350, 230),
        seed=3,
    )


@pytest.fixture(scope="module")
def stain_run(synthetic, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "--preset",
            "smoke",
            "--deterministic",
            "--data",
            str(synthetic),
            "--runs-dir",
            str(runs),
            "--quiet",
            "--stain-norm",
            "macenko",
            "--name",
            "stain",
        ]
    )
    assert code == 0
    return runs / "stain"


def test_training_with_macenko_normalisation_still_learns(stain_run: Path) -> None:
    fold = json.loads((stain_run / "patient" / "patient-fold1" / "metrics.json").read_text())
    assert fold["audit"]["patient_disjoint"]
    assert fold["metrics"]["image"]["accuracy"] >= 0.9  # the smoke test's bar


def test_the_reference_is_fitted_on_the_folds_training_images_only(stain_run: Path) -> None:
    card = read_card(stain_run / "model")
    reference = card.config.input.stain_reference
    assert card.config.input.stain_norm == "macenko" and reference is not None
    assert "training images" in reference.fitted_on
    assert "Macenko stain normalisation applied to" in card.training.notes
    # Refit from the training rows of splits.csv: the very same reference. A reference
    # fitted on validation or test images (or on all of them) would differ.
    splits = pd.read_csv(stain_run / "patient" / "splits.csv")
    train = splits[(splits["name"] == "patient-fold1") & (splits["split"] == "train")]
    pixels = load_images(list(train["path"]), InputSpec())
    names = train["path"].map(lambda p: Path(p).name)
    labels = names.str.startswith("SOB_M").astype(int).to_numpy()
    patients = names.str.split("-").map(lambda parts: "-".join(parts[1:3])).to_numpy()
    refit = fit_fold_reference(pixels, labels, patients, "macenko", 42, "patient-fold1")
    np.testing.assert_allclose(refit.reference.stain_matrix, reference.stain_matrix, atol=1e-9)
    np.testing.assert_allclose(
        refit.reference.max_concentrations, reference.max_concentrations, atol=1e-9
    )


def test_the_served_model_applies_its_reference(stain_run: Path, synthetic: Path) -> None:
    analyzer = Analyzer.from_path(stain_run)
    spec = analyzer.card.config.input
    path = next(synthetic.rglob("SOB_M_*.png"))
    analysis = analyzer.analyze(path.read_bytes())
    expected = prepare_input(load_image_file(path), spec)
    assert analysis.stain_norm == "macenko"
    assert analysis.stain_applied == expected.stain.applied
    np.testing.assert_array_equal(analysis.seen, expected.seen)
    assert not np.array_equal(analysis.seen, resize_to_input(load_image_file(path), spec))
    white = analyzer.analyze(png_bytes(np.full((460, 700, 3), 250, np.uint8)))
    assert not white.stain_applied
    assert any(note.startswith("stain normalisation (Macenko) skipped") for note in white.notes)


def test_fine_tuning_with_macenko_stain_augmentation_runs_and_is_recorded(
    synthetic: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "--preset",
            "smoke",
            "--data",
            str(synthetic),
            "--runs-dir",
            str(tmp_path),
            "--quiet",
            "--freeze",
            "conv4",
            "--augment",
            "--stain-augment",
            "macenko",
            "--epochs",
            "1",
            "--bootstrap",
            "10",
            "--name",
            "augmented",
        ]
    )
    assert code == 0
    card = read_card(tmp_path / "augmented" / "model")
    assert "Macenko stain augmentation" in card.training.augmentation
    assert "HED" not in card.training.augmentation


def test_stain_augmentation_without_augmentation_is_refused(synthetic, tmp_path, capsys) -> None:
    code = main(
        [
            "--preset",
            "smoke",
            "--data",
            str(synthetic),
            "--runs-dir",
            str(tmp_path),
            "--stain-augment",
            "macenko",
        ]
    )
    assert code == 2
    assert "needs --augment" in capsys.readouterr().err


def test_macenko_jitter_changes_stains_not_glass() -> None:
    tiles = np.stack([synthetic_he_tile(np.random.default_rng(k)) for k in range(4)])
    matrices = stain_matrices(tiles)
    images = tf.constant(tiles, tf.float32)
    unchanged = macenko_jitter(images, tf.constant(matrices), sigmas=(0.0, 0.0)).numpy()
    np.testing.assert_allclose(unchanged, tiles, atol=0.01)  # only the change is added
    jittered = macenko_jitter(images, tf.constant(matrices), seed=1).numpy()
    tissue_change = np.abs(jittered - tiles).mean(axis=-1)
    glass_strip = tissue_change[:, : tiles.shape[1] // 6]  # synthetic_he_tile's empty glass
    stained = tissue_change[:, tiles.shape[1] // 6 :][tissue_mask(tiles[:, tiles.shape[1] // 6 :])]
    assert stained.mean() > 5.0
    assert glass_strip.max() <= 1.0


# --- augmentation in the train step -------------------------------------------------------
def test_device_augmentation_is_the_pipelines_augmentation_and_identity_at_inference() -> None:
    from model.preprocessing import normalise
    from train.pipeline import DeviceAugmentation

    spec = InputSpec()
    tiles = np.stack([synthetic_he_tile(np.random.default_rng(k)) for k in range(4)])
    inputs = tf.constant(normalise(tiles.astype(np.float32), spec))
    layer = DeviceAugmentation(spec.channel_mean_bgr, "hed", seed=3)
    np.testing.assert_array_equal(layer(inputs, training=False).numpy(), inputs.numpy())
    augmented = layer(inputs, training=True).numpy()
    assert augmented.shape == inputs.shape
    assert np.abs(augmented - inputs.numpy()).mean() > 1.0
    # Back in pixel terms it stays an image (the normalisation was undone and redone).
    pixels = (augmented + np.asarray(spec.channel_mean_bgr, np.float32))[..., ::-1]
    assert pixels.min() >= -1e-3 and pixels.max() <= 255.0 + 1e-3
    again = DeviceAugmentation.from_config(layer.get_config())
    assert (again.stain_augment, again.seed) == ("hed", 3)


def test_fine_tuning_with_augmentation_in_the_train_step(synthetic: Path, tmp_path: Path) -> None:
    """The wrapper trains and is checkpointed; the served network has no augmentation layer
    and is the plain architecture (what the app loads)."""
    import keras

    from train.trainer import _is_device_wrapper, latest_checkpoint

    args = ["--preset", "smoke", "--data", str(synthetic), "--runs-dir", str(tmp_path)]
    args += ["--quiet", "--freeze", "conv4", "--augment", "--augment-on-device", "--epochs", "2"]
    assert main([*args, "--bootstrap", "10", "--name", "device"]) == 0
    fold = tmp_path / "device" / "patient" / "patient-fold1"
    checkpoint = keras.saving.load_model(latest_checkpoint(fold / "checkpoint") / "model.keras")
    assert _is_device_wrapper(checkpoint)
    served = Analyzer.from_path(tmp_path / "device")
    names = {layer.name for layer in served.artifact.model.layers}
    assert "device_augmentation" not in names and "conv5_block3_out" in names
    history = pd.read_csv(fold / "history.csv")
    assert len(history) == 2


def test_the_paper_preset_augments_in_the_train_step_unless_told_otherwise() -> None:
    from train.config import resolve_config

    assert resolve_config("paper").augment_on_device
    assert not resolve_config("paper", {"stain_augment": "macenko"}).augment_on_device
    with pytest.raises(ValueError, match="no-augment-on-device"):
        resolve_config("paper", {"stain_augment": "macenko", "augment_on_device": True})
