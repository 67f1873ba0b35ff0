"""The analyzer: bytes in, probability + label + original-size overlay out."""

from __future__ import annotations

import numpy as np
import pytest

from model.analysis import Analyzer
from model.errors import NotAnImageError
from model.preprocessing import decode_image
from tests.model.conftest import png_bytes, tissue_like


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


def test_tta_added_later_equals_tta_at_once(analyzer):
    """Turning TTA on for analyses made without it (what the app does) gives the same
    numbers as analysing with TTA from the start; the rest of each analysis is kept."""
    images = [png_bytes(tissue_like(seed=seed)) for seed in (3, 4, 5)]
    prepared = [analyzer.prepare(data) for data in images]
    plain = analyzer.analyze_many(prepared, explain=False)
    added = analyzer.with_tta(prepared, plain)
    at_once = analyzer.analyze_many(prepared, explain=False, tta=True)
    for later, together, before in zip(added, at_once, plain, strict=True):
        assert before.tta is None
        assert later.tta.views == together.tta.views
        assert np.allclose(later.tta.probabilities, together.tta.probabilities, atol=1e-6)
        assert later.tta.probabilities[0, 0] == before.probability
        assert later.probability == before.probability and later.label == before.label
    with pytest.raises(ValueError, match="3 images but 2 analyses"):
        analyzer.with_tta(prepared, plain[:2])


def test_warm_up_traces_every_map_control(artifact_dir):
    """After the warm-up every (method, layer) single-pass map is traced, and its maps are
    the ones a fresh explainer computes."""
    from model.config import CAM_LAYERS, CAM_METHODS

    warm = Analyzer.from_path(artifact_dir)
    assert warm.explainer.traced() == frozenset()
    warm.warm_up_controls()
    pairs = {(method, layer) for method in CAM_METHODS for layer in CAM_LAYERS}
    assert warm.explainer.traced() == pairs
    inputs = np.stack([analyzer_input(warm, seed) for seed in (1, 2)])
    cold = Analyzer.from_path(artifact_dir)
    for method, layer in sorted(pairs):
        assert np.allclose(
            warm.explainer.explain(inputs, method, layer).heatmaps,
            cold.explainer.explain(inputs, method, layer).heatmaps,
            atol=1e-5,
        )


def analyzer_input(analyzer: Analyzer, seed: int) -> np.ndarray:
    return analyzer.prepare(png_bytes(tissue_like(seed=seed))).inputs


def test_bad_bytes_raise_the_typed_error(analyzer):
    with pytest.raises(NotAnImageError):
        analyzer.analyze(b"GIF89a? no")
