"""The analyzer: bytes in, probability + label + original-size overlay out."""

from __future__ import annotations

import numpy as np
import pytest

from model.analysis import Analyzer
from model.errors import NotAnImageError
from model.preprocessing import decode_image


@pytest.fixture(scope="module")
def analyzer(artifact_dir) -> Analyzer:
    return Analyzer.from_path(artifact_dir)


def test_real_image_end_to_end(analyzer, breakhis_sample_images):
    image = decode_image(breakhis_sample_images[0].read_bytes())
    result = analyzer.analyze(image)
    assert 0.0 < result.probability < 1.0
    assert result.threshold == pytest.approx(0.42)  # from the model card
    assert result.label == ("malignant" if result.probability >= 0.42 else "benign")
    assert result.cam.shape == (3, 5)
    assert result.heatmap((image.height, image.width)).shape == (460, 700)
    assert result.heatmap_rgb((image.height, image.width), "viridis").shape == (460, 700, 3)
    overlay = result.overlay(image.pixels, opacity=0.5, colormap="jet")
    assert overlay.shape == (460, 700, 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, image.pixels)
    assert np.array_equal(result.overlay(image.pixels, opacity=0.0), image.pixels)
    assert not hasattr(result, "image")  # the result holds no pixels


def test_probability_agrees_with_predictor(analyzer, breakhis_sample_images):
    data = breakhis_sample_images[-1].read_bytes()
    fused = analyzer.analyze(data).probability  # from the Grad-CAM pass
    assert fused == pytest.approx(analyzer.predictor.predict_one(data), abs=1e-6)
    plus = analyzer.analyze(data, method="gradcam++", layer="conv4_block6_out", tta=True)
    assert plus.probability == pytest.approx(fused, abs=1e-6)
    assert plus.cam.shape == (6, 9)
    assert plus.tta.probabilities.shape == (1, 4)


def test_bad_bytes_raise_the_typed_error(analyzer):
    with pytest.raises(NotAnImageError):
        analyzer.analyze(b"GIF89a? no")
