"""Stain normalisation (model.stain): the reference, the round trip through the card, the
normalisation of re-stained real images, and the fallbacks that never crash or pass silently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.card import ModelCard
from model.config import InputSpec, ModelConfig
from model.preprocessing import load_image_file, prepare_input, resize_to_input
from model.stain import (
    StainReference,
    choose_reference_images,
    default_reference,
    fit_reference,
    normalise_stain,
    restain,
    stain_distance,
    synthetic_he_tile,
)

SPEC = InputSpec()
# A lab whose haematoxylin is bluer, eosin more orange, H stronger and E paler than the
# sample's (stain-vector and concentration shifts of the size seen between labs).
OTHER_LAB = {
    "hematoxylin_shift": (0.1, -0.1, 0.05),
    "eosin_shift": (0.15, -0.05, 0.1),
    "hematoxylin_scale": 1.2,
    "eosin_scale": 0.8,
}


@pytest.fixture(scope="module")
def sample_pixels(breakhis_sample_images) -> list[np.ndarray]:
    """The real sample at the network's input size (where the contract normalises)."""
    return [resize_to_input(load_image_file(path), SPEC) for path in breakhis_sample_images]


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_reference_fits_on_real_images_and_survives_the_card(sample_pixels, method) -> None:
    reference = fit_reference(sample_pixels[::2], method, fitted_on="17 sample images")
    colours = reference.reference_colours()
    assert all(0 <= v <= 255 for rgb in colours.values() for v in rgb)
    card = ModelCard(name="stained")
    card.config = ModelConfig(input=SPEC.with_stain_reference(reference))
    again = ModelCard.from_json(card.to_json())
    assert again.config.input.stain_reference == reference
    assert again.config.input.stain_norm == method
    # The loaded contract normalises exactly as the one it was saved from.
    image = sample_pixels[1]
    np.testing.assert_array_equal(
        prepare_input(image, again.config.input).seen, prepare_input(image, card.config.input).seen
    )


def test_macenko_reference_is_haematoxylin_blue_and_eosin_pink(sample_pixels) -> None:
    colours = fit_reference(sample_pixels, "macenko").reference_colours()
    h, e = np.array(colours["haematoxylin"]), np.array(colours["eosin"])
    assert h[2] > h[0]  # blue-purple: more blue than red left after absorption
    assert e[0] > e[1]  # pink: red passes, green is absorbed


def test_a_contract_without_stain_normalisation_is_unchanged() -> None:
    image = synthetic_he_tile(np.random.default_rng(1))
    prepared = prepare_input(image, SPEC)
    assert prepared.stain is None and prepared.notes == ()
    np.testing.assert_array_equal(prepared.seen, image)


def test_a_contract_naming_a_normaliser_needs_its_reference() -> None:
    with pytest.raises(ValueError, match="no fitted reference"):
        prepare_input(
            synthetic_he_tile(np.random.default_rng(1)), replace(SPEC, stain_norm="macenko")
        )
    with pytest.raises(ValueError, match="reinhard"):
        InputSpec(stain_norm="macenko", stain_reference=default_reference("reinhard"))


@pytest.mark.parametrize(("method", "margin"), [("macenko", 0.5), ("reinhard", 0.8)])
def test_normalisation_brings_a_restained_real_image_back(sample_pixels, method, margin) -> None:
    """Re-stain the real images as another lab would; after normalisation they are much
    closer to the normalised originals (mean CIELAB distance on the tissue) than before."""
    reference = fit_reference(sample_pixels[::2], method)
    before, after = [], []
    for image in sample_pixels[1::2]:
        original = restain(image)  # the same image through the same model, no shift
        other_lab = restain(image, **OTHER_LAB)
        before.append(stain_distance(other_lab, original))
        normalised = normalise_stain(other_lab, reference)
        assert normalised.applied, normalised.note
        after.append(stain_distance(normalised.pixels, normalise_stain(original, reference).pixels))
    assert np.mean(before) > 5.0  # the shift is a visible one
    assert np.mean(after) < margin * np.mean(before), (np.mean(before), np.mean(after))


BAD_IMAGES = {
    "blank black": np.zeros((96, 144, 3), np.uint8),
    "white glass": np.full((96, 144, 3), 250, np.uint8),
    "near-white": np.clip(np.random.default_rng(0).normal(238, 3, (96, 144, 3)), 0, 255).astype(
        np.uint8
    ),
    "grayscale tissue": np.repeat(
        synthetic_he_tile(np.random.default_rng(2)).mean(axis=2, keepdims=True).astype(np.uint8),
        3,
        axis=2,
    ),
    "1x1": np.array([[[150, 60, 140]]], np.uint8),
    "mostly glass": np.where(
        (np.arange(144) < 4)[None, :, None], synthetic_he_tile(np.random.default_rng(3)), 245
    ).astype(np.uint8),
}


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_images_without_usable_stains_pass_unchanged_with_a_note(kind, method) -> None:
    image = BAD_IMAGES[kind]
    outcome = normalise_stain(image, default_reference(method))
    assert not outcome.applied
    assert outcome.note.startswith(f"stain normalisation ({method.capitalize()}) skipped: ")
    np.testing.assert_array_equal(outcome.pixels, image)


def test_a_skipped_normalisation_reaches_the_result_notes() -> None:
    spec = SPEC.with_stain_reference(default_reference("macenko"))
    prepared = prepare_input(np.full((460, 700, 3), 250, np.uint8), spec)
    assert prepared.notes and "too little tissue" in prepared.notes[0]
    assert prepared.model_input.shape == spec.shape


def test_reference_images_are_balanced_and_spread_over_patients() -> None:
    labels = np.array([0] * 30 + [1] * 10)
    patients = np.array([f"b{k % 3}" for k in range(30)] + [f"m{k % 5}" for k in range(10)])
    rows = choose_reference_images(labels, patients, count=8, seed=0)
    assert len(rows) == 8
    assert (labels[rows] == 1).sum() == 4
    assert set(patients[rows][labels[rows] == 0]) == {"b0", "b1", "b2"}  # every patient first
    with pytest.raises(ValueError, match="no image with enough coloured tissue"):
        fit_reference([BAD_IMAGES["white glass"]], "macenko")


def test_reference_round_trips_as_plain_data() -> None:
    reference = fit_reference(
        [synthetic_he_tile(np.random.default_rng(k)) for k in range(3)],
        "macenko",
        fitted_on="tiles",
    )
    assert StainReference.from_dict(reference.to_dict()) == reference
