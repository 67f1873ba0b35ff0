"""Image-quality checks: real BreakHis images pass, synthetic non-H&E images are flagged."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.preprocessing import DecodedImage, decode_image, load_image_file
from model.quality import QualityThresholds, assess_quality, quality_warnings

RNG = np.random.default_rng(0)


def _he_like(height: int = 460, width: int = 700) -> np.ndarray:
    """Noisy pink/purple pixels, colourful and structured like an H&E field."""
    pink = np.array([220, 150, 190], dtype=np.float32)
    purple = np.array([120, 60, 150], dtype=np.float32)
    mix = RNG.random((height, width, 1), dtype=np.float32)
    pixels = pink * mix + purple * (1 - mix) + RNG.normal(0, 8, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _decoded(pixels: np.ndarray, mode: str = "RGB") -> DecodedImage:
    return DecodedImage(pixels=pixels, format="PNG", original_mode=mode)


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_breakhis_images_give_no_warning(breakhis_sample_images: list[Path]) -> None:
    assert len(breakhis_sample_images) == 34
    for path in breakhis_sample_images:
        report = assess_quality(load_image_file(path))
        assert report.ok, f"{path.name}: {report.warnings}"


def test_synthetic_h_and_e_like_image_passes() -> None:
    assert quality_warnings(_decoded(_he_like())) == []


def test_white_slide_is_mostly_blank() -> None:
    pixels = np.full((460, 700, 3), 245, np.uint8)
    pixels[:40, :40] = _he_like(40, 40)  # a speck of tissue
    report = assess_quality(_decoded(pixels))
    assert report.codes == ("blank",)
    assert report.background_fraction > 0.9
    assert report.warnings[0].startswith("mostly blank")


def test_flat_colour_is_uniform() -> None:
    report = assess_quality(_decoded(np.full((460, 700, 3), (200, 120, 170), np.uint8)))
    assert report.codes == ("uniform",)


def test_grayscale_file_mode_is_flagged() -> None:
    decoded = decode_image(_png(_he_like(), mode="L"))
    report = assess_quality(decoded)
    assert "grayscale" in report.codes
    assert "file mode L" in report.warnings[report.codes.index("grayscale")]


def test_colourless_rgb_pixels_are_flagged() -> None:
    gray = np.asarray(Image.fromarray(_he_like()).convert("L"))
    report = assess_quality(_decoded(np.repeat(gray[:, :, None], 3, axis=2)))
    assert report.codes == ("grayscale",)
    assert report.coloured_fraction is not None and report.coloured_fraction < 0.02


def test_tiny_image_is_flagged_and_names_its_size() -> None:
    warnings = quality_warnings(_decoded(_he_like(50, 80)))
    assert len(warnings) == 1
    assert warnings[0].startswith("tiny image: 80x50 px")


@pytest.mark.parametrize(("height", "width"), [(96, 143), (95, 144)])
def test_tiny_is_either_dimension_below_the_model_input(height: int, width: int) -> None:
    assert assess_quality(_decoded(_he_like(height, width))).codes == ("tiny",)


def test_input_sized_image_is_not_tiny() -> None:
    assert assess_quality(_decoded(_he_like(96, 144))).ok


def test_dark_image_is_flagged() -> None:
    pixels = (_he_like() * 0.15).astype(np.uint8)
    assert "dark" in assess_quality(_decoded(pixels)).codes


def test_several_problems_are_all_reported() -> None:
    tiny_gray = decode_image(_png(np.full((40, 60, 3), 90, np.uint8), mode="L"))
    assert set(assess_quality(tiny_gray).codes) == {"tiny", "uniform", "grayscale"}


def test_thresholds_are_adjustable() -> None:
    pixels = _he_like()
    strict = QualityThresholds(min_height=1000)
    assert assess_quality(_decoded(pixels), strict).codes == ("tiny",)


def test_huge_image_is_subsampled_quickly() -> None:
    import time

    pixels = np.full((6000, 8000, 3), 250, np.uint8)
    start = time.perf_counter()
    report = assess_quality(_decoded(pixels))
    assert time.perf_counter() - start < 1.0
    assert report.codes == ("blank",)


def test_checks_are_relative_to_the_training_images() -> None:
    """A model trained on 50x50 patches does not call 50x50 inputs tiny; a 1x1 image is
    too small for any model; another stain's colours are flagged against the training
    images' colours."""
    from model.config import InputSpec
    from model.quality import ImageProfile, thresholds_for

    training = [_he_like(50, 50) for _ in range(20)]
    patches = ImageProfile.from_measurements(
        [(50, 50)] * 20, [image.reshape(-1, 3).mean(axis=0) for image in training]
    )
    relative = thresholds_for(InputSpec(), patches)
    patch = _decoded(_he_like(50, 50))
    assert "tiny" not in assess_quality(patch, relative, patches).codes
    assert "tiny" in assess_quality(patch).codes  # against BreakHis-sized defaults
    one_pixel = _decoded(_he_like(1, 1))
    assert "too_small" in assess_quality(one_pixel, relative, patches).codes
    assert "too_small" in assess_quality(one_pixel).codes
    restained = _decoded(
        np.clip(_he_like(50, 50).astype(int) - [0, 80, 0], 0, 255).astype(np.uint8)
    )
    assert "colour" in assess_quality(restained, relative, patches).codes
    assert "colour" not in assess_quality(_decoded(_he_like(50, 50)), relative, patches).codes
