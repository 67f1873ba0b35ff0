"""model.display: display copies are at most DISPLAY_MAX_SIDE on the long side, own their
memory, keep the picture, and say when they are smaller than the upload."""

from __future__ import annotations

import numpy as np
import pytest

from model.display import DISPLAY_MAX_SIDE, display_copy, display_size
from model.preprocessing import decode_image


def test_a_breakhis_image_is_shown_at_its_own_size(breakhis_sample_images) -> None:
    decoded = decode_image(breakhis_sample_images[0].read_bytes())
    shown = display_copy(decoded.pixels)
    assert (shown.width, shown.height) == (700, 460)
    assert not shown.downscaled and shown.note is None
    assert np.array_equal(shown.pixels, decoded.pixels)
    assert not np.shares_memory(shown.pixels, decoded.pixels)


def test_a_large_image_is_downscaled_keeps_the_picture_and_says_so(breakhis_sample_images):
    from PIL import Image

    original = decode_image(breakhis_sample_images[0].read_bytes()).pixels
    big = np.asarray(Image.fromarray(original).resize((2800, 1840), Image.Resampling.BICUBIC))
    shown = display_copy(big)
    assert (shown.width, shown.height) == (DISPLAY_MAX_SIDE, 920)
    assert not np.shares_memory(shown.pixels, big)
    assert shown.note == "shown downscaled from 2800x1840 to 1400x920 for display"
    # Back at the original's size it is the same picture (within resampling error).
    back = np.asarray(Image.fromarray(shown.pixels).resize((700, 460), Image.Resampling.LANCZOS))
    assert np.abs(back.astype(int) - original.astype(int)).mean() < 4


def test_source_size_of_an_image_decoded_smaller_is_what_the_note_says() -> None:
    shown = display_copy(np.zeros((1500, 2000, 3), np.uint8), source_size=(8000, 6000))
    assert (shown.width, shown.height) == (1400, 1050)
    assert shown.note == "shown downscaled from 8000x6000 to 1400x1050 for display"
    # Decoded already at display size: no resize, but still smaller than the upload.
    reduced = display_copy(np.zeros((700, 1400, 3), np.uint8), source_size=(2800, 1400))
    assert reduced.downscaled and reduced.note.startswith("shown downscaled from 2800x1400")


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))],
)
def test_anything_but_uint8_rgb_is_refused_with_its_type_and_shape(pixels) -> None:
    with pytest.raises(ValueError, match=rf"expected uint8 RGB pixels .*{pixels.dtype}"):
        display_copy(pixels)


def test_display_size_never_enlarges_and_refuses_a_zero_cap() -> None:
    assert display_size(10, 20) == (10, 20)
    assert display_size(5000, 1) == (1400, 1)
    with pytest.raises(ValueError, match="max_side must be at least 1, got 0"):
        display_size(10, 10, max_side=0)
