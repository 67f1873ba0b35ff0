"""The saliency sanity check (``train.sanity``): randomised weights really reach the traced
maps, the trained weights come back, and the result says what it compared."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.config import FINE_LAYER
from model.explainer import Explainer
from model.network import build_model
from train.sanity import STAGES, randomisation_check, randomised


@pytest.fixture(scope="module")
def network() -> keras.Model:
    return build_model(weights=None, seed=5)


@pytest.fixture(scope="module")
def inputs(network) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 40.0, (3, *network.input_shape[1:])).astype("float32")


def _gradcam(explainer: Explainer, inputs: np.ndarray) -> np.ndarray:
    return explainer.explain(inputs, "gradcam", FINE_LAYER, "malignant").heatmaps


def test_an_explainer_traced_before_sees_the_randomised_weights(network, inputs):
    """The check reuses one traced explainer: its maps under the in-place randomisation are
    those of a fresh explainer on a separate copy randomised the same way."""
    explainer = Explainer(network)
    trained = _gradcam(explainer, inputs)
    name, layers = STAGES[1]
    with randomised(network, layers, seed=3):
        copy = keras.models.clone_model(network)
        copy.set_weights(network.get_weights())
        in_place = _gradcam(explainer, inputs)
    expected = _gradcam(Explainer(copy), inputs)
    assert not np.allclose(in_place, trained, atol=1e-3), f"{name}: the maps did not change"
    assert np.allclose(in_place, expected, atol=1e-5)


def test_the_trained_weights_come_back_even_after_an_error(network):
    before = [np.array(w) for w in network.get_weights()]
    with pytest.raises(RuntimeError), randomised(network, STAGES[1][1], seed=1):
        assert not np.array_equal(network.get_layer("logit").get_weights()[0], before[-2])
        raise RuntimeError("interrupted")
    after = network.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_frozen_base_still_has_its_conv5_redrawn():
    """The quick and smoke presets freeze the base: its conv5 weights are not trainable, and
    the "head + conv5" stage must redraw them all the same (once it redrew only the head)."""
    frozen = build_model(weights=None, freeze="base", seed=2)
    layer = frozen.get_layer("conv5_block3_3_conv")
    assert not layer.trainable_weights  # frozen, as the presets serve it
    before = layer.kernel.numpy()
    with randomised(frozen, STAGES[1][1], seed=0):
        assert not np.allclose(layer.kernel.numpy(), before)
    assert np.array_equal(layer.kernel.numpy(), before)


def test_the_check_reports_each_stage_and_leaves_the_model_as_it_was(network, inputs):
    before = [np.array(w) for w in network.get_weights()]
    check = randomisation_check(network, inputs, seed=0)
    assert [stage["name"] for stage in check["stages"]] == [name for name, _ in STAGES]
    assert check["images"] == len(inputs) and check["layer"] == FINE_LAYER
    head = check["stages"][0]["mean_spearman"]
    expected = (
        "undetermined"
        if head is None
        else "not model-dependent"
        if head > check["threshold"]
        else "model-dependent"
    )
    assert check["verdict"] == expected
    for stage in check["stages"]:
        assert stage["compared"] + stage["empty_maps"] <= len(inputs)
        if stage["compared"]:
            assert -1.0 <= stage["mean_spearman"] <= 1.0
    assert all(np.array_equal(a, b) for a, b in zip(before, network.get_weights(), strict=True))
    again = randomisation_check(network, inputs, seed=0)
    assert again["stages"] == check["stages"]  # seeded: the same draws every time
