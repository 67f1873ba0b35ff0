"""Stain normalisation in training: fit a fold's reference, normalise its images once.

The reference of a fold's model is fitted on that fold's **training** images only (never its
validation or test images): :func:`model.stain.choose_reference_images` takes up to
:data:`REFERENCE_IMAGES` of them, half from each class where possible and one patient at a
time, so that no patient's staining dominates. Every image of the run (train, validation,
test) is then normalised with :func:`model.stain.normalise_stain`, the very function the app
and the batch path call through :func:`model.preprocessing.prepare_input`, on the same
resized pixels. Images whose stains cannot be estimated pass unchanged; how many is logged
and recorded in the fold's card.

For ``--stain-augment macenko`` the training images' own stain vectors are estimated here
too (:func:`stain_matrices`), once, so the augmentation itself is a few tensor operations
in ``tf.data`` (:func:`train.pipeline.macenko_jitter`).

Example:
    >>> import numpy as np
    >>> from model.stain import synthetic_he_tile
    >>> rng = np.random.default_rng(0)
    >>> pixels = np.stack([synthetic_he_tile(rng) for _ in range(6)])
    >>> fitted = fit_fold_reference(pixels, np.array([0, 0, 0, 1, 1, 1]),
    ...                             np.array(list("aabbcc")), "macenko", seed=0, split="fold-1")
    >>> fitted.reference.fitted_on
    'fold-1: 6 training images of 3 patients (up to 32, balanced by class, one patient at a time)'
    >>> normalised = normalise_images(pixels, fitted.reference)
    >>> normalised.pixels.shape, normalised.skipped
    ((6, 96, 144, 3), 0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.stain import (
    StainReference,
    choose_reference_images,
    default_reference,
    estimate_stain_matrix,
    fit_reference,
    normalise_stain,
)

logger = logging.getLogger(__name__)

REFERENCE_IMAGES = 32
"""How many training images a fold's stain reference is fitted on."""


@dataclass(frozen=True)
class FittedReference:
    reference: StainReference
    rows: np.ndarray  # positions (within the training images) it was fitted on


@dataclass(frozen=True)
class NormalisedImages:
    pixels: np.ndarray  # uint8 (n, h, w, 3)
    skipped: int  # images passed unchanged (their stains could not be estimated)
    notes: tuple[str, ...]  # the distinct reasons, for the log and the card

    def describe(self, method: str) -> str:
        """One line for the card's training notes."""
        total = len(self.pixels)
        line = f"{method} stain normalisation applied to {total - self.skipped} of {total} images"
        return line + (f" ({self.skipped} passed unchanged)" if self.skipped else "")


def fit_fold_reference(
    train_pixels: np.ndarray,
    train_labels: np.ndarray,
    train_patients: np.ndarray,
    method: Literal["macenko", "reinhard"],
    seed: int,
    split: str,
) -> FittedReference:
    """A fold's stain reference, from representative images of its training part."""
    rows = choose_reference_images(train_labels, train_patients, REFERENCE_IMAGES, seed)
    patients = len(set(np.asarray(train_patients).astype(str)[rows]))
    fitted_on = (
        f"{split}: {len(rows)} training images of {patients} patients (up to "
        f"{REFERENCE_IMAGES}, balanced by class, one patient at a time)"
    )
    reference = fit_reference(train_pixels[rows], method, fitted_on=fitted_on)
    logger.info("%s: %s", split, reference.describe())
    return FittedReference(reference, rows)


def normalise_images(pixels: np.ndarray, reference: StainReference) -> NormalisedImages:
    """Every image through :func:`model.stain.normalise_stain` (about 3 ms each at 144x96:
    25 s for BreakHis's 7,909 images on one core; it serialises its BLAS calls, so threads
    would not help)."""
    outcomes = [normalise_stain(image, reference) for image in pixels]
    notes = [o.note for o in outcomes if o.note]
    if notes:
        logger.info(
            "stain normalisation passed %d of %d images unchanged (e.g. %s)",
            len(notes),
            len(outcomes),
            notes[0],
        )
    stacked = np.stack([o.pixels for o in outcomes]) if outcomes else pixels.copy()
    return NormalisedImages(stacked, len(notes), tuple(dict.fromkeys(notes)))


def stain_matrices(pixels: np.ndarray, fallback: StainReference | None = None) -> np.ndarray:
    """Each image's own Macenko stain vectors (n, 3, 2), float32, for Macenko augmentation.

    An image whose stains cannot be estimated gets ``fallback``'s (the fold's reference) or
    torchstain's default H&E vectors.
    """
    usable = fallback is not None and fallback.method == "macenko"
    default = np.asarray((fallback if usable else default_reference("macenko")).stain_matrix)
    matrices = np.empty((len(pixels), 3, 2), np.float32)
    for row, image in enumerate(pixels):
        estimate = estimate_stain_matrix(image)
        matrices[row] = estimate[0] if estimate is not None else default
    return matrices
