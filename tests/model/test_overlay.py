"""Heatmap upsampling, colormaps and blending (pure NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from model.overlay import COLORMAPS, blend, colorize, colormap_table, overlay, upsample_heatmap


def test_upsample_to_original_size_keeps_range_and_orientation():
    cam = np.zeros((3, 5), np.float32)
    cam[0, 4] = 1.0  # hot top-right cell
    heat = upsample_heatmap(cam, (460, 700))
    assert heat.shape == (460, 700) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert np.unravel_index(np.argmax(heat), heat.shape)[1] > 560  # right fifth
    assert np.unravel_index(np.argmax(heat), heat.shape)[0] < 154  # top third
    assert heat[-1, 0] == pytest.approx(0.0, abs=1e-3)


def test_upsample_refuses_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        upsample_heatmap(np.zeros((1, 3, 5)), (10, 10))


@pytest.mark.parametrize("name", COLORMAPS)
def test_colormap_tables(name):
    table = colormap_table(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert not np.array_equal(table[0], table[-1])


def test_jet_endpoints():
    colours = colorize(np.array([[0.0, 1.0]]), "jet")
    assert colours[0, 0].tolist() == [0, 0, 128]  # dark blue
    assert colours[0, 1].tolist() == [128, 0, 0]  # dark red


def test_blend_extremes_and_errors():
    image = np.full((4, 6, 3), 200, np.uint8)
    heat = np.ones((4, 6), np.float32)
    assert np.array_equal(blend(image, heat, opacity=0.0), image)
    assert np.array_equal(blend(image, heat, opacity=1.0), colorize(heat))
    half = blend(image, heat, opacity=0.5, colormap="jet")
    assert half[0, 0].tolist() == [164, 100, 100]  # (200 + (128, 0, 0)) / 2
    with pytest.raises(ValueError, match="opacity"):
        blend(image, heat, opacity=1.5)
    with pytest.raises(ValueError, match="differ in size"):
        blend(image, heat[:2], opacity=0.5)
    with pytest.raises(ValueError, match="colormap must be one of"):
        blend(image, heat, colormap="rainbowish")


def test_overlay_is_original_size():
    image = np.zeros((460, 700, 3), np.uint8)
    assert overlay(image, np.random.default_rng(0).random((3, 5))).shape == (460, 700, 3)


# --- banded overlay (bounded memory on large images) --------------------------------------
def _image_and_cam(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, rng.random((3, 5)).astype(np.float32)


def test_banded_rows_of_the_map_equal_the_whole_map():
    cam = _image_and_cam(1, 1)[1]
    whole = upsample_heatmap(cam, (1037, 1533))
    for top, bottom in ((0, 1), (0, 37), (500, 537), (1000, 1037), (1036, 1037)):
        band = upsample_heatmap(cam, (1037, 1533), rows=(top, bottom))
        assert band.shape == (bottom - top, 1533)
        np.testing.assert_allclose(band, whole[top:bottom], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        upsample_heatmap(cam, (10, 10), rows=(5, 11))


@pytest.mark.parametrize("size", [(460, 700), (1037, 1533)])
def test_banded_overlay_equals_the_unbanded_blend(size):
    image, cam = _image_and_cam(*size)
    unbanded = blend(image, upsample_heatmap(cam, size), 0.4, "jet")
    banded = overlay(image, cam, 0.4, "jet", band_pixels=size[1] * 37)  # 37-row bands
    assert banded.shape == unbanded.shape and banded.dtype == np.uint8
    differing = banded != unbanded
    # float32 rounding of the map can move a colour index by one on a few pixels
    assert differing.mean() < 1e-5
    assert np.abs(banded.astype(int) - unbanded.astype(int)).max() <= 2


def test_overlay_of_a_large_image_needs_little_memory_beyond_its_result():
    import tracemalloc

    image, cam = _image_and_cam(4000, 6000)  # 24 megapixels (NumPy's memory is traced)
    result_bytes = image.nbytes
    tracemalloc.start()
    try:
        overlay(image, cam)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Blending all at once holds float32 copies of image, colours and mix (~14x the result);
    # in bands the result plus one band's temporaries.
    assert peak / result_bytes < 2.5, (
        f"peak {peak / 2**20:.0f} MiB for a {result_bytes / 2**20:.0f} MiB result"
    )
