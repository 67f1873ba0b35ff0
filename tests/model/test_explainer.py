"""Grad-CAM, Grad-CAM++ and LayerCAM; the traced single-pass maps agree with tf-keras-vis."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.config import COARSE_LAYER, FINE_LAYER, InputSpec
from model.errors import LayerNotFoundError
from model.explainer import CAM_METHODS, Explainer
from model.network import LOGIT_LAYER
from model.preprocessing import preprocess
from tests.model.conftest import png_bytes, tissue_like

SHAPES = {COARSE_LAYER: (3, 5), FINE_LAYER: (6, 9)}


@pytest.fixture(scope="module")
def explainer(random_model) -> Explainer:
    return Explainer(random_model, threshold=0.5)


@pytest.fixture(scope="module")
def synthetic_inputs() -> np.ndarray:
    return np.stack([preprocess(png_bytes(tissue_like(seed=s)), InputSpec()) for s in range(3)])


def _assert_useful_maps(heatmaps: np.ndarray, shape: tuple[int, int]) -> None:
    assert heatmaps.shape[1:] == shape
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0 + 1e-6
    for heatmap in heatmaps:
        assert heatmap.max() - heatmap.min() > 0.5, "map is (nearly) constant"


@pytest.mark.parametrize("inputs", ["synthetic_inputs", "sample_inputs"])
@pytest.mark.parametrize("method", list(CAM_METHODS))
@pytest.mark.parametrize("layer", [COARSE_LAYER, FINE_LAYER])
@pytest.mark.parametrize("target", ["predicted", "malignant", "benign"])
def test_fast_maps_agree_with_tf_keras_vis(explainer, request, inputs, method, layer, target):
    """Every method, layer and target: the traced pass gives tf-keras-vis's map and the same
    class. The synthetic inputs need no ../shared, so a flipped sign or a wrong weighting is
    caught everywhere; the real images add maps with real structure."""
    images = request.getfixturevalue(inputs)
    fast = explainer.explain(images, method, layer, target)
    reference = explainer.reference(images, method, layer, target)
    assert fast.method == reference.method == method
    assert fast.targets == reference.targets
    assert np.allclose(fast.probabilities, reference.probabilities, atol=1e-6)
    np.testing.assert_array_equal(fast.empty, reference.empty)
    expected = reference.heatmaps
    # Normalised maps in [0, 1]; float32 sums over 1,024-2,048 channels in another order.
    tolerance = np.full(len(images), 1e-4)
    if method == "gradcam++":
        # tf-keras-vis scales this map by exp(score) before normalising with an epsilon of
        # 1e-7 added to the range: for a small score the reference's maximum falls short of 1
        # (0.9998). The traced map leaves that factor out (see model.explainer); compare
        # both at maximum 1.
        expected = expected / np.maximum(expected.max(axis=(1, 2), keepdims=True), 1e-12)
        rounding = _gradcam_plus_plus_rounding(explainer, images, layer, fast.targets)
        tolerance = np.maximum(tolerance, rounding)
    for index, (ours, theirs) in enumerate(zip(fast.heatmaps, expected, strict=True)):
        np.testing.assert_allclose(ours, theirs, atol=tolerance[index], err_msg=f"image {index}")
    if target == "predicted":
        _assert_useful_maps(fast.heatmaps, SHAPES[layer])
    else:
        # Evidence for a fixed class may be absent altogether (ReLU leaves an empty map).
        assert fast.heatmaps.shape[1:] == SHAPES[layer] and np.isfinite(fast.heatmaps).all()


def _gradcam_plus_plus_rounding(
    explainer: Explainer, images: np.ndarray, layer: str, targets: tuple[str, ...]
) -> np.ndarray:
    """Per image, how far float32 rounding alone can move a normalised Grad-CAM++ map.

    Its weights divide by ``g^2 (2 + g * sum_xy A)``, which crosses zero where a gradient
    ``g`` is ``-2 / sum_xy A``: next to that crossing, a rounding of one part in 10^7 (another
    CPU's summation order: CI failed at 7e-4 on a map that agrees to 1e-6 here) is amplified
    by ``1 / |1 + g * sum_xy A / 2|``. This is the closed form's own conditioning, the same in
    tf-keras-vis, so the maps can only be compared to that precision: 20 float32 epsilons
    times that amplification (the inputs are fixed, so it is within 1e-6 of its value on
    any machine)."""
    grad_model = keras.Model(
        explainer.model.inputs,
        [explainer.model.get_layer(layer).output, explainer.model.get_layer(LOGIT_LAYER).output],
    )
    signs = np.array([1.0 if name == "malignant" else -1.0 for name in targets])
    with tf.GradientTape() as tape:
        activations, logits = grad_model(images, training=False)
        score = tf.reduce_sum(logits[:, 0] * signs)
    grads = tape.gradient(score, activations).numpy().astype(np.float64)
    sums = activations.numpy().astype(np.float64).sum(axis=(1, 2), keepdims=True)
    closeness = np.where(grads != 0.0, np.abs(1.0 + grads * sums / 2.0), np.inf)
    amplification = 1.0 / closeness.reshape(len(images), -1).min(axis=1)
    return 20.0 * np.finfo(np.float32).eps * amplification


def test_benign_and_malignant_maps_differ(explainer, synthetic_inputs):
    """The two targets' scores are each other's negation: their maps must not coincide (a
    sign ignored for one target would make them equal)."""
    for method in CAM_METHODS:
        malignant = explainer.explain(synthetic_inputs, method, FINE_LAYER, "malignant")
        benign = explainer.explain(synthetic_inputs, method, FINE_LAYER, "benign")
        assert malignant.targets == ("malignant",) * 3 and benign.targets == ("benign",) * 3
        assert not np.allclose(malignant.heatmaps, benign.heatmaps, atol=1e-3), method


@pytest.mark.parametrize("method", list(CAM_METHODS))
@pytest.mark.parametrize("layer", [COARSE_LAYER, FINE_LAYER])
def test_every_method_gives_useful_maps_on_real_images(explainer, sample_inputs, method, layer):
    explanation = explainer.explain(sample_inputs, method, layer)
    _assert_useful_maps(explanation.heatmaps, SHAPES[layer])
    assert explanation.method == method and explanation.layer == layer


def test_targets_follow_the_threshold(random_model, synthetic_inputs):
    probabilities = Explainer(random_model).explain(synthetic_inputs).probabilities
    low = Explainer(random_model, threshold=float(probabilities.min()) / 2)
    high = Explainer(random_model, threshold=min(0.999, float(probabilities.max()) * 2))
    assert set(low.explain(synthetic_inputs).targets) == {"malignant"}
    assert set(high.explain(synthetic_inputs).targets) == {"benign"}
    assert set(high.explain(synthetic_inputs, target="malignant").targets) == {"malignant"}


def test_saturated_sigmoid_still_gives_a_map(random_model, synthetic_inputs):
    # Scale the last layer so the sigmoid saturates (probability exactly 0 or 1 in float32):
    # the gradient of the probability vanishes, but the map uses the pre-sigmoid logit.
    saturated = keras.models.clone_model(random_model)
    saturated.set_weights(random_model.get_weights())
    kernel, bias = saturated.get_layer(LOGIT_LAYER).get_weights()
    saturated.get_layer(LOGIT_LAYER).set_weights([kernel * 1e4, bias])
    explainer = Explainer(saturated)
    fast = explainer.explain(synthetic_inputs)
    assert np.all((fast.probabilities == 0.0) | (fast.probabilities == 1.0))
    _assert_useful_maps(fast.heatmaps, SHAPES[COARSE_LAYER])
    reference = explainer.reference_gradcam(synthetic_inputs)
    assert np.allclose(fast.heatmaps, reference.heatmaps, atol=1e-4)


def test_unknown_and_non_convolutional_layers(explainer, synthetic_inputs):
    with pytest.raises(LayerNotFoundError, match="no layer named 'conv9_out'"):
        explainer.explain(synthetic_inputs, layer="conv9_out")
    with pytest.raises(LayerNotFoundError, match="not convolutional"):
        explainer.explain(synthetic_inputs, layer="head_dense")
    with pytest.raises(ValueError, match="method must be one of"):
        explainer.explain(synthetic_inputs, method="scorecam")


def test_shared_between_threads(explainer, random_model, synthetic_inputs):
    expected = {
        method: explainer.explain(synthetic_inputs, method).heatmaps for method in CAM_METHODS
    }
    fresh = Explainer(random_model)  # nothing traced or built yet: first uses race
    barrier = threading.Barrier(3)

    def first_use(method: str) -> np.ndarray:
        barrier.wait()
        return fresh.explain(synthetic_inputs, method).heatmaps

    with ThreadPoolExecutor(max_workers=3) as pool:
        for method, maps in zip(CAM_METHODS, pool.map(first_use, CAM_METHODS), strict=True):
            assert np.allclose(maps, expected[method], atol=1e-5), method
    expected = expected["gradcam"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        maps = list(
            pool.map(lambda i: explainer.explain(synthetic_inputs[i : i + 1]).heatmaps[0], range(3))
        )
    assert np.allclose(np.stack(maps), expected, atol=1e-5)
