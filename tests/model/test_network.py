"""The network: the paper's architecture as one flat graph, freezing, weights, compilation."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from model.config import InputSpec, ModelConfig
from model.errors import WeightsUnavailableError
from model.network import (
    FREEZE_CHOICES,
    IMAGENET_NOTOP_FILE,
    IMAGENET_NOTOP_URL,
    LOGIT_LAYER,
    OUTPUT_LAYER,
    base_layers,
    build_model,
    compile_model,
    set_freeze,
    stage_of,
)

HEAD_PARAMS_AVG = 2048 * 1024 + 1024 + 1024 + 1  # Dense(1024) + Dense(1)


def _count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def test_shapes_and_head_match_the_paper(random_model):
    assert random_model.input_shape == (None, 96, 144, 3)
    assert random_model.output_shape == (None, 1)
    names = [layer.name for layer in random_model.layers]
    assert names[-6:] == [
        "head_pool",
        "head_dense",
        "head_dropout",
        "head_relu",
        LOGIT_LAYER,
        OUTPUT_LAYER,
    ]
    assert random_model.get_layer("head_dense").units == 1024
    assert random_model.get_layer("head_dropout").rate == pytest.approx(0.4)
    assert random_model.get_layer(OUTPUT_LAYER).activation.__name__ == "sigmoid"


def test_graph_is_flat_with_resnet_layer_names(random_model):
    # No nested Model layer: tf-keras-vis and Grad-CAM need to reach ResNet layers directly.
    assert not any(isinstance(layer, keras.Model) for layer in random_model.layers)
    assert random_model.get_layer("conv5_block3_out").output.shape == (None, 3, 5, 2048)
    assert random_model.get_layer("conv4_block6_out").output.shape == (None, 6, 9, 1024)
    assert len(base_layers(random_model)) == 174  # ResNet-50 without top, without its input
    assert {stage_of(layer.name) for layer in base_layers(random_model)} == {
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
    }


def test_parameter_counts(random_model):
    assert random_model.count_params() == 23_587_712 + HEAD_PARAMS_AVG  # ResNet-50 no-top + head


@pytest.mark.parametrize("freeze", FREEZE_CHOICES)
def test_freeze_modes(random_model, freeze):
    try:
        set_freeze(random_model, freeze)
        trainable = _count(random_model.trainable_weights)
        frozen_layers = [layer for layer in base_layers(random_model) if not layer.trainable]
        if freeze == "none":
            assert not frozen_layers
            assert trainable == 23_534_592 + HEAD_PARAMS_AVG  # BN moving stats never train
        elif freeze == "base":
            assert trainable == HEAD_PARAMS_AVG
            assert len(frozen_layers) == len(base_layers(random_model))
        else:
            frozen_stages = {stage_of(layer.name) for layer in frozen_layers}
            stages = ["conv1", "conv2", "conv3", "conv4"]
            assert frozen_stages == set(stages[: stages.index(freeze) + 1])
            assert HEAD_PARAMS_AVG < trainable < 23_534_592 + HEAD_PARAMS_AVG
    finally:
        set_freeze(random_model, "none")


def test_unknown_freeze_mode_is_refused(random_model):
    with pytest.raises(ValueError, match="freeze must be one of"):
        set_freeze(random_model, "conv9")


def test_flatten_pooling_is_the_other_reading_of_the_paper():
    model = build_model(ModelConfig(pooling="flatten"), weights=None)
    assert model.get_layer("head_flatten").output.shape == (None, 3 * 5 * 2048)
    assert model.get_layer("head_dense").count_params() == 30720 * 1024 + 1024


def test_seed_makes_the_head_reproducible():
    first = build_model(weights=None, seed=3).get_layer("head_dense").get_weights()[0]
    second = build_model(weights=None, seed=3).get_layer("head_dense").get_weights()[0]
    assert np.array_equal(first, second)


def test_compile_as_the_paper(random_model):
    model = compile_model(keras.models.clone_model(random_model), learning_rate=1e-4)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert model.loss == "mean_squared_error"
    x = np.random.default_rng(0).normal(0, 50, (2, 96, 144, 3)).astype("float32")
    logs = model.train_on_batch(x, np.array([0.0, 1.0]), return_dict=True)
    assert {"loss", "accuracy", "auc"} <= set(logs) and np.isfinite(logs["loss"])


# --- weights ------------------------------------------------------------------------------
def _reference_base() -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(96, 144, 3))


def _assert_base_weights_equal(model: keras.Model, reference: keras.Model) -> None:
    for name in ("conv1_conv", "conv3_block2_2_bn", "conv5_block3_3_conv"):
        for ours, theirs in zip(
            model.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            assert np.array_equal(ours, theirs), name


def test_weights_from_a_local_keras3_file(tmp_path):
    reference = _reference_base()
    path = tmp_path / "resnet50_notop.weights.h5"
    reference.save_weights(path)
    _assert_base_weights_equal(build_model(weights=path), reference)


def test_weights_from_a_legacy_h5_file_as_keras_publishes_it(tmp_path):
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    reference = _reference_base()
    path = tmp_path / IMAGENET_NOTOP_FILE
    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, reference)
    _assert_base_weights_equal(build_model(weights=path), reference)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        build_model(weights=tmp_path / "nowhere.h5")


def test_weights_file_of_another_network(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(WeightsUnavailableError, match="could not load ResNet-50 weights"):
        build_model(weights=path)


def test_imagenet_download_failure_says_which_file_and_where(tmp_path, monkeypatch):
    # An empty Keras cache and a proxy that refuses connections: the real download code runs
    # and fails the way it does on a machine without internet.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailableError) as caught:
        build_model(weights="imagenet")
    message = str(caught.value)
    assert IMAGENET_NOTOP_URL in message
    assert str(tmp_path / "keras-home" / "models" / IMAGENET_NOTOP_FILE) in message
    assert "--weights" in message


def test_input_size_follows_the_config():
    model = build_model(ModelConfig(input=InputSpec(height=64, width=64)), weights=None)
    assert model.input_shape == (None, 64, 64, 3)
