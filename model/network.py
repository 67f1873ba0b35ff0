"""The network of the paper: ResNet-50 (ImageNet) + Dense(1024) -> Dropout(0.4) -> ReLU -> Dense(1).

Built as ONE flat functional graph that keeps ResNet-50's own layer names
(``conv5_block3_out``...), so Grad-CAM tools can address any layer (tf-keras-vis fails on a
base model nested as a single layer). Only Keras 3 is used here, so the network builds on
any Keras backend.

The final ``Dense(1, sigmoid)`` of the paper is written as ``Dense(1)`` named ``logit``
followed by a sigmoid ``Activation`` named ``malignancy``: the same function, but the
pre-sigmoid score is a named layer, which Grad-CAM needs (the gradient of a saturated sigmoid
is ~0) and calibration can use.

Example:
    >>> model = build_model(weights=None)
    >>> model.output_shape
    (None, 1)
    >>> model.get_layer("conv5_block3_out").output.shape
    (None, 3, 5, 2048)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras
import numpy as np

from model.config import LOGIT_LAYER, OUTPUT_LAYER, ModelConfig
from model.errors import WeightsUnavailableError

HEAD_LAYERS = ("head_pool", "head_flatten", "head_dense", "head_dropout", "head_relu")
BASE_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
FREEZE_CHOICES = ("none", "base", *BASE_STAGES[:-1])
"""``none``: everything trains (the paper's fine-tuning); ``base``: the whole ResNet-50 is
frozen (only the head trains); ``conv1``..``conv4``: ResNet-50 frozen up to and including
that stage, later stages train."""

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE
)


def build_model(
    config: ModelConfig | None = None,
    weights: str | Path | None = "imagenet",
    freeze: str = "none",
    seed: int | None = None,
) -> keras.Model:
    """Build the classifier (uncompiled).

    Args:
        config: architecture and input size; defaults to the paper's (96x144 input, avg pool).
        weights: ``"imagenet"`` (Keras downloads once and caches it under ``~/.keras/models``),
            a path to a ResNet-50 no-top weights file (``.h5`` as Keras publishes it, or a
            ``.weights.h5`` saved by Keras 3) for offline use, or ``None`` (random init).
        freeze: one of :data:`FREEZE_CHOICES`.
        seed: seeds the head's initialisers, for reproducible runs.

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be downloaded, or the local file is
            missing or does not fit ResNet-50.
    """
    config = config or ModelConfig()
    inputs = keras.Input(shape=config.input.shape, name="image")
    base = _resnet50_base(inputs, weights)
    x = base.output
    if config.pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif config.pooling == "flatten":
        x = keras.layers.Flatten(name="head_flatten")(x)
    else:
        raise ValueError(f"pooling must be 'avg' or 'flatten', got {config.pooling!r}")
    probability = add_head(x, config, seed)
    model = keras.Model(inputs, probability, name="breakhis_resnet50")
    set_freeze(model, freeze)
    return model


def add_head(features: keras.KerasTensor, config: ModelConfig, seed: int | None = None):
    """Dense(1024) -> Dropout -> ReLU -> Dense(1) ``logit`` -> sigmoid ``malignancy``.

    Applied to pooled features; used by :func:`build_model` and by :func:`build_head_model`
    (training the head on cached features), so both share layer names and weights layout.
    """
    init = keras.initializers.GlorotUniform(seed=seed)
    x = keras.layers.Dense(config.dense_units, kernel_initializer=init, name="head_dense")(features)
    x = keras.layers.Dropout(config.dropout, seed=seed, name="head_dropout")(x)
    x = keras.layers.Activation("relu", name="head_relu")(x)
    # float32 outputs keep the sigmoid and the loss stable under mixed precision.
    logit_init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + 1)
    logit = keras.layers.Dense(1, kernel_initializer=logit_init, dtype="float32", name=LOGIT_LAYER)(
        x
    )
    return keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_LAYER)(logit)


def build_head_model(
    feature_size: int, config: ModelConfig | None = None, seed: int | None = None
) -> keras.Model:
    """The head alone, on pooled ResNet-50 features of size ``feature_size``.

    Its trained weights move into a full model with :func:`copy_head_weights`.
    """
    config = config or ModelConfig()
    features = keras.Input(shape=(feature_size,), name="features")
    return keras.Model(features, add_head(features, config, seed), name="head")


def copy_head_weights(
    source: keras.Model,
    target: keras.Model,
    feature_mean: np.ndarray | None = None,
    feature_scale: np.ndarray | None = None,
) -> None:
    """Copy the trainable head layers' weights between models that share their names.

    When the source head was trained on standardised features ``(f - mean) / scale``, the
    standardisation is folded into the first Dense layer (``W / scale``,
    ``b - (mean / scale) @ W``), so the target computes exactly the same function on raw
    features and its architecture stays the paper's.
    """
    kernel, bias = source.get_layer("head_dense").get_weights()
    if feature_mean is not None and feature_scale is not None:
        scale = np.asarray(feature_scale, dtype=np.float64)[:, None]
        shift = np.asarray(feature_mean, dtype=np.float64)[:, None] / scale
        bias = (bias - (shift * kernel).sum(axis=0)).astype(kernel.dtype)
        kernel = (kernel / scale).astype(kernel.dtype)
    target.get_layer("head_dense").set_weights([kernel, bias])
    target.get_layer(LOGIT_LAYER).set_weights(source.get_layer(LOGIT_LAYER).get_weights())


def feature_extractor(model: keras.Model) -> keras.Model:
    """The model up to its pooled features (input of the head)."""
    pooled = (
        "head_pool" if "head_pool" in {layer.name for layer in model.layers} else "head_flatten"
    )
    return keras.Model(model.inputs, model.get_layer(pooled).output, name="features")


def _resnet50_base(inputs: keras.KerasTensor, weights: str | Path | None) -> keras.Model:
    """ResNet-50 without its top, built on ``inputs`` so its layers join the outer graph."""
    if weights is None:
        return keras.applications.ResNet50(include_top=False, weights=None, input_tensor=inputs)
    if weights == "imagenet":
        try:
            return keras.applications.ResNet50(
                include_top=False, weights="imagenet", input_tensor=inputs
            )
        except Exception as error:
            raise WeightsUnavailableError(imagenet_unavailable_message(error)) from error
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"ResNet-50 weights file not found: {path}. Pass 'imagenet' to download them, "
            f"or download {IMAGENET_NOTOP_URL} and pass its path."
        )
    base = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=inputs)
    # Keras 3 only *warns* when a weights file lacks some layers and leaves them random;
    # a partial load must fail loudly instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            base.load_weights(str(path))
        except Exception as error:
            raise WeightsUnavailableError(_wrong_weights_message(path, error)) from error
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise WeightsUnavailableError(_wrong_weights_message(path, skipped[0]))
    return base


def _wrong_weights_message(path: Path, reason: object) -> str:
    return (
        f"could not load ResNet-50 weights from {path}: {reason}. The file must hold "
        f"ResNet-50 no-top weights, such as {IMAGENET_NOTOP_FILE}."
    )


def imagenet_cache_path() -> Path:
    """Where Keras looks for (and caches) the ImageNet no-top weights file."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return keras_home / "models" / IMAGENET_NOTOP_FILE


def imagenet_unavailable_message(error: BaseException) -> str:
    """Say exactly which file to fetch and where to put it when the download fails."""
    return (
        f"the ImageNet weights for ResNet-50 could not be downloaded ({error}). On a machine "
        f"with internet, download {IMAGENET_NOTOP_URL} (94.7 MB) and either copy it to "
        f"{imagenet_cache_path()} (Keras's cache, where it is found without downloading) or "
        f"pass its path as the weights (e.g. `--weights /path/to/{IMAGENET_NOTOP_FILE}`)."
    )


def base_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The ResNet-50 layers of a model built by :func:`build_model` (no input, no head)."""
    head = {*HEAD_LAYERS, LOGIT_LAYER, OUTPUT_LAYER}
    return [
        layer
        for layer in model.layers
        if layer.name not in head and not isinstance(layer, keras.layers.InputLayer)
    ]


def stage_of(layer_name: str) -> str:
    """ResNet-50 stage of a layer: ``conv3_block2_out`` -> ``conv3``; ``pool1_pad`` -> ``conv1``."""
    prefix = layer_name.split("_", 1)[0]
    return "conv1" if prefix == "pool1" else prefix


def set_freeze(model: keras.Model, freeze: str) -> None:
    """Freeze none, all or the first stages of ResNet-50 (see :data:`FREEZE_CHOICES`).

    Frozen BatchNormalization layers also run in inference mode (Keras 3 semantics), which
    keeps their ImageNet statistics intact during fine-tuning.
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    if freeze == "none":
        frozen_stages: set[str] = set()
    elif freeze == "base":
        frozen_stages = set(BASE_STAGES)
    else:
        frozen_stages = set(BASE_STAGES[: BASE_STAGES.index(freeze) + 1])
    for layer in base_layers(model):
        layer.trainable = stage_of(layer.name) not in frozen_stages


OPTIMIZER = "RMSprop"
LOSS = "mean_squared_error"
"""The paper's optimizer and loss, as :func:`compile_model` sets them (and model cards say)."""


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-4,
    jit_compile: bool | str = "auto",
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compile as the paper: RMSprop, mean squared error; metrics accuracy and AUC.

    ``learning_rate`` is not given in the paper; 1e-4 is a safe fine-tuning rate for RMSprop
    (Keras's default 1e-3 disturbs the pretrained filters). ``steps_per_execution`` batches
    that many training steps into one call of the compiled function (same steps, less
    per-step host work; see ``train.config.TrainConfig``).
    """
    model.compile(
        optimizer=keras.optimizers.get(
            {"class_name": OPTIMIZER, "config": {"learning_rate": learning_rate}}
        ),
        loss=LOSS,
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model
