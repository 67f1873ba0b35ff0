"""Class-activation maps (Grad-CAM, Grad-CAM++, LayerCAM) for the malignancy output.

All three are the maps tf-keras-vis computes on a named layer, with
``seek_penultimate_conv_layer=False`` (the layer is exactly the one asked for) and
``ReplaceToLinear`` (the score is the pre-sigmoid logit, so a saturated sigmoid does not give an
all-zero map). By default each runs as one traced ``tf.function`` that returns the map and the
probability from a single forward/backward pass (:func:`cam_graph`): the three methods differ
only in how they weigh the same gradients of the score with respect to the layer's
activations. tf-keras-vis itself stays as the reference (:meth:`Explainer.reference`); tests
check every method, layer and target agrees with it.

Maps come back at the layer's own resolution, normalised to [0, 1] per image as tf-keras-vis
does; :func:`model.overlay.upsample_heatmap` brings them to the original image size. A map
that is zero (or constant) everywhere before normalisation is flagged ``empty``: no region
raises the chosen class's score at that layer, and drawing it as a heatmap would mislead.

Each explanation also carries, from the same forward pass, the raw logits and the pooled
``conv5_block3_out`` features that :mod:`model.applicability` measures.
At the 96x144 input, ``conv5_block3_out`` gives a coarse 3x5 map and ``conv4_block6_out`` a
finer 6x9 one.

Score-CAM is left out on purpose: tf-keras-vis's Scorecam weighs each channel by a softmax
over the scores of the masked inputs, which for a single sigmoid/logit output is not the
class-discriminative weight of the method, and a faithful version needs one forward pass per
channel (2,048 at ``conv5_block3_out``): seconds per image on a CPU.

Example:
    >>> explainer = Explainer(build_model(weights=None), threshold=0.5)
    >>> result = explainer.explain(np.zeros((1, 96, 144, 3), "float32"))
    >>> result.heatmaps.shape
    (1, 3, 5)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from model.calibration import sigmoid
from model.config import (
    APPLICABILITY_LAYER,
    CAM_LAYERS,
    CAM_METHODS,
    COARSE_LAYER,
    LOGIT_LAYER,
    CamMethod,
    Target,
)
from model.errors import LayerNotFoundError

__all__ = [
    "CAM_LAYERS",
    "CAM_METHODS",
    "EMPTY_MAP_TOLERANCE",
    "NORMALISATION_EPSILON",
    "CamMethod",
    "Explainer",
    "Explanation",
    "Target",
    "cam_graph",
    "forward_graph",
    "gradcam_graph",
]

NORMALISATION_EPSILON = keras.config.epsilon()
"""Added to a map's range when normalising it, as tf-keras-vis does."""


EMPTY_MAP_TOLERANCE = 1e-7
"""A raw map whose maximum, or whose range relative to its maximum, is below this is empty."""

_FAST_METHODS: tuple[CamMethod, ...] = tuple(CAM_METHODS)  # order of cams_graph's maps


@dataclass(frozen=True)
class Explanation:
    """Maps (n, h, w) in [0, 1] at the layer's resolution, and what the same pass computed.

    Attributes:
        heatmaps: normalised maps (None from :meth:`Explainer.forward`, which draws none).
        probabilities: the network's own (uncalibrated) sigmoid output.
        logits: the pre-sigmoid scores (float64), which calibration maps.
        features: (n, 2048) global average of ``conv5_block3_out``.
        empty: per image, whether the raw map was zero or constant.
    """

    heatmaps: np.ndarray | None
    probabilities: np.ndarray
    method: str
    layer: str
    targets: tuple[str, ...]
    logits: np.ndarray | None = None
    features: np.ndarray | None = None
    empty: np.ndarray | None = None


class Explainer:
    """Computes class-activation maps of a classifier built by :mod:`model.network`.

    Args:
        model: the classifier (sigmoid output layer preceded by the ``logit`` layer).
        threshold: decides the predicted class when ``target="predicted"`` (on the network's
            own sigmoid output).
        fast_gradcam: use the traced single-pass maps (all three methods) instead of
            tf-keras-vis (the same maps from one traced pass; timings in docs/benchmarks.md).
        logit_threshold: the same decision as a raw logit; overrides ``threshold`` (a
            calibrated model's threshold, mapped back: see
            :meth:`model.calibration.Calibration.raw_logit_at`).

    The object is safe to share between threads: traced functions and tf-keras-vis objects
    are created once under a lock, and calling them keeps no state.
    """

    def __init__(
        self,
        model: keras.Model,
        threshold: float = 0.5,
        fast_gradcam: bool = True,
        logit_threshold: float | None = None,
    ):
        self.model = model
        self.threshold = float(threshold)
        if logit_threshold is None:
            with np.errstate(divide="ignore"):
                logit_threshold = float(np.log(self.threshold) - np.log1p(-self.threshold))
        self.logit_threshold = float(logit_threshold)
        self.fast_gradcam = fast_gradcam
        self._lock = threading.Lock()
        self._fast: dict[str, Callable] = {}  # by layer: every method's maps at once
        self._trace_locks: dict[str, threading.Lock] = {}
        self._visualizers: dict[str, object] = {}
        self._forward_fn: Callable | None = None

    # --- public --------------------------------------------------------------------------
    def explain(
        self,
        inputs: np.ndarray,
        method: CamMethod = "gradcam",
        layer: str = COARSE_LAYER,
        target: Target = "predicted",
        fast: bool | None = None,
    ) -> Explanation:
        """Maps for a preprocessed batch (n, h, w, 3).

        Args:
            method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"``.
            layer: a convolutional layer name (see :data:`CAM_LAYERS`).
            target: which class's evidence to show: the ``"predicted"`` one (per image, by
                the threshold), or always ``"malignant"`` / ``"benign"``. The benign score is
                the negated logit.
            fast: use the traced single-pass map (``None``: as set at construction);
                ``False`` runs tf-keras-vis.
        """
        if method not in CAM_METHODS:
            raise ValueError(f"method must be one of {tuple(CAM_METHODS)}, got {method!r}")
        self._check_layer(layer)
        inputs = np.asarray(inputs, dtype=np.float32)
        if self.fast_gradcam if fast is None else fast:
            return self._explain_fast(inputs, method, layer, target)
        logits, features = self._logits_and_features(inputs)
        signs = self._signs(logits, target)
        visualizer = self._visualizer(method)
        score_signs = tf.constant(signs, dtype=tf.float32)
        cams = visualizer(
            lambda output: output[:, 0] * score_signs,
            inputs,
            penultimate_layer=layer,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            normalize_cam=False,
        )
        raw = np.asarray(cams, dtype=np.float32).reshape(len(inputs), *cams.shape[-2:])
        return Explanation(
            _normalise(raw),
            sigmoid(logits).astype(np.float32),
            method,
            layer,
            _target_names(signs),
            logits=logits,
            features=features,
            empty=_is_empty(raw),
        )

    def reference(
        self,
        inputs: np.ndarray,
        method: CamMethod = "gradcam",
        layer: str = COARSE_LAYER,
        target: Target = "predicted",
    ) -> Explanation:
        """The map through tf-keras-vis, even when the fast path is on (for checks)."""
        return self.explain(inputs, method, layer, target, fast=False)

    def reference_gradcam(
        self, inputs: np.ndarray, layer: str = COARSE_LAYER, target: Target = "predicted"
    ) -> Explanation:
        """Plain Grad-CAM through tf-keras-vis (:meth:`reference` with ``"gradcam"``)."""
        return self.reference(inputs, "gradcam", layer, target)

    def forward(self, inputs: np.ndarray, target: Target = "predicted") -> Explanation:
        """The forward pass alone, without a map (no gradient): logits, the network's
        probabilities, pooled applicability features and the class a map would explain.

        For callers that need only the probability and the per-image checks (batch scoring
        without overlays); ``heatmaps`` and ``empty`` are None.

        Example:
            >>> explainer.forward(np.zeros((2, 96, 144, 3), "float32")).features.shape
            (2, 2048)
        """
        logits, features = self._logits_and_features(np.asarray(inputs, dtype=np.float32))
        return Explanation(
            None,
            sigmoid(logits).astype(np.float32),
            "",
            "",
            _target_names(self._signs(logits, target)),
            logits=logits,
            features=features,
        )

    # --- traced single-pass maps -----------------------------------------------------------
    def _explain_fast(
        self, inputs: np.ndarray, method: CamMethod, layer: str, target: Target
    ) -> Explanation:
        mode = {"predicted": 0.0, "malignant": 1.0, "benign": -1.0}[target]
        cams, logits, signs, features = self._fast_fn(layer)(
            tf.constant(inputs), tf.constant(mode, tf.float32)
        )
        raw = cams[_FAST_METHODS.index(method)].numpy()
        logits = logits.numpy().astype(np.float64)
        return Explanation(
            _normalise(raw),
            sigmoid(logits).astype(np.float32),
            method,
            layer,
            _target_names(signs.numpy()),
            logits=logits,
            features=features.numpy(),
            empty=_is_empty(raw),
        )

    def _fast_fn(self, layer: str) -> Callable:
        # One lock per traced function: tracing one (seconds on a CPU) never holds up a
        # caller of another, e.g. the first image's coarse map behind a warm-up's fine one.
        with self._lock:
            if layer in self._fast:
                return self._fast[layer]
            layer_lock = self._trace_locks.setdefault(layer, threading.Lock())
        with layer_lock:
            if layer not in self._fast:
                traced = self._trace_fast(layer)
                with self._lock:
                    self._fast[layer] = traced
        return self._fast[layer]

    def traced(self) -> frozenset[tuple[str, str]]:
        """The (method, layer) pairs whose single-pass map is traced already (one graph per
        layer gives every method)."""
        with self._lock:
            return frozenset((method, layer) for layer in self._fast for method in _FAST_METHODS)

    def warm_up(self, layers: Sequence[str] = tuple(CAM_LAYERS)) -> None:
        """Trace and run once, on one blank image, the single-pass maps of every layer, so
        that a visitor's first switch of layer costs only its maps (a switch of method never
        traces: one graph per layer gives all three).

        Tracing one ResNet-50 gradient graph takes seconds on a CPU; a server calls this in
        a background thread once its model is ready (:mod:`app.model_loading`).

        Example:
            >>> explainer.warm_up(layers=(FINE_LAYER,))
            >>> ("layercam", FINE_LAYER) in explainer.traced()
            True
        """
        blank = np.zeros((1, *self.model.input_shape[1:]), np.float32)
        for layer in layers:
            self._check_layer(layer)
            if (_FAST_METHODS[0], layer) not in self.traced():  # traced graphs have run once
                self._explain_fast(blank, _FAST_METHODS[0], layer, "predicted")

    def _trace_fast(self, layer: str) -> Callable:
        shape = (None, *self.model.input_shape[1:])
        traced = tf.function(cams_graph(self.model, layer, self.logit_threshold, _FAST_METHODS))
        return traced.get_concrete_function(
            tf.TensorSpec(shape, tf.float32), tf.TensorSpec((), tf.float32)
        )

    # --- tf-keras-vis --------------------------------------------------------------------
    def _visualizer(self, method: str) -> Callable:
        with self._lock:
            if method not in self._visualizers:
                self._visualizers[method] = _make_visualizer(self.model, method)
            return self._visualizers[method]

    def _logits_and_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass: raw logits (n,) and pooled applicability features (n, 2048)."""
        with self._lock:
            if self._forward_fn is None:
                shape = (None, *self.model.input_shape[1:])
                self._forward_fn = tf.function(forward_graph(self.model)).get_concrete_function(
                    tf.TensorSpec(shape, tf.float32)
                )
        logits, features = self._forward_fn(tf.constant(inputs))
        return logits.numpy().astype(np.float64), features.numpy()

    def _signs(self, logits: np.ndarray, target: Target) -> np.ndarray:
        if target == "malignant":
            return np.ones(len(logits), np.float32)
        if target == "benign":
            return -np.ones(len(logits), np.float32)
        return np.where(logits >= self.logit_threshold, 1.0, -1.0).astype(np.float32)

    def _check_layer(self, layer: str) -> None:
        try:
            found = self.model.get_layer(layer)
        except ValueError as error:
            raise LayerNotFoundError(
                f"no layer named {layer!r} in the network; use one of {tuple(CAM_LAYERS)}"
            ) from error
        if len(found.output.shape) != 4:
            raise LayerNotFoundError(f"layer {layer!r} is not convolutional (no spatial map)")


def forward_graph(model: keras.Model) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The forward pass as a function to trace: images -> (logits (n,), pooled (n, 2048)).

    The pooled features are the global average of ``conv5_block3_out``, the vector
    :mod:`model.applicability` measures. Shared by :class:`Explainer` and the serving export
    (:mod:`model.export`), so both compute exactly the same graph.
    """
    outputs = keras.Model(
        model.inputs,
        [model.get_layer(LOGIT_LAYER).output, model.get_layer(APPLICABILITY_LAYER).output],
    )

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits, pooled_from = outputs(images, training=False)
        pooled = tf.reduce_mean(tf.cast(pooled_from, tf.float32), axis=(1, 2))
        return logits[:, 0], pooled

    return forward


def gradcam_graph(
    model: keras.Model, layer: str, logit_threshold: float
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    """The single-pass Grad-CAM (:func:`cam_graph` with ``"gradcam"``); the serving export
    (:mod:`model.export`) traces it."""
    return cam_graph(model, layer, logit_threshold, "gradcam")


def cam_graph(
    model: keras.Model, layer: str, logit_threshold: float, method: CamMethod = "gradcam"
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    """A single-pass map as a function to trace: (images, mode) -> (raw maps (n, h, w),
    logits (n,), signs (n,), pooled features (n, 2048)): :func:`cams_graph` for one method.

    Example:
        >>> graph = cam_graph(build_model(weights=None), COARSE_LAYER, 0.0, "layercam")
        >>> maps, logits, signs, pooled = graph(tf.zeros((1, 96, 144, 3)), tf.constant(1.0))
        >>> tuple(maps.shape), tuple(pooled.shape)
        ((1, 3, 5), (1, 2048))
    """
    every = cams_graph(model, layer, logit_threshold, (method,))

    def cam(images: tf.Tensor, mode: tf.Tensor) -> tuple[tf.Tensor, ...]:
        cams, logits, signs, pooled = every(images, mode)
        return cams[0], logits, signs, pooled

    return cam


def cams_graph(
    model: keras.Model,
    layer: str,
    logit_threshold: float,
    methods: Sequence[CamMethod] = tuple(CAM_METHODS),
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    """The maps of several methods from one forward and backward pass, as a function to
    trace: (images, mode) -> (raw maps (len(methods), n, h, w), logits (n,), signs (n,),
    pooled features (n, 2048)).

    Every method weighs the same gradients, so the :class:`Explainer` traces this once per
    layer for all three: switching method then never traces a graph.

    ``mode`` is 0 for the predicted class (by ``logit_threshold``), 1 for malignant, -1 for
    benign: the score is the logit times that sign. The maps are not normalised (the
    :class:`Explainer` normalises per image). Each method weighs the gradients ``g`` of the
    score with respect to the layer's activations ``A`` as tf-keras-vis does:

    * ``gradcam``: ``relu(sum_c mean_xy(g) * A)``;
    * ``gradcam++``: ``relu(sum_c w_c * A)`` with ``w_c = sum_xy alpha * relu(g)``,
      ``alpha = g^2 / (2 g^2 + g^3 sum_xy A)``, normalised to sum 1 per channel;
    * ``layercam``: ``relu(sum_c relu(g) * A)`` (per position, not per channel).

    Example:
        >>> graph = cams_graph(build_model(weights=None), FINE_LAYER, 0.0)
        >>> maps, logits, signs, pooled = graph(tf.zeros((2, 96, 144, 3)), tf.constant(0.0))
        >>> tuple(maps.shape), tuple(logits.shape)
        ((3, 2, 6, 9), (2,))
    """
    unknown = [method for method in methods if method not in CAM_METHODS]
    if unknown or not methods:
        raise ValueError(f"method must be one of {tuple(CAM_METHODS)}, got {unknown or methods!r}")
    grad_model = keras.Model(
        model.inputs,
        [
            model.get_layer(layer).output,
            model.get_layer(LOGIT_LAYER).output,
            model.get_layer(APPLICABILITY_LAYER).output,
        ],
    )
    threshold_logit = float(logit_threshold)
    weighers = [_WEIGHERS[method] for method in methods]

    def cams(images: tf.Tensor, mode: tf.Tensor) -> tuple[tf.Tensor, ...]:
        with tf.GradientTape() as tape:
            activations, logits, pooled_from = grad_model(images, training=False)
            logits = logits[:, 0]
            predicted = tf.where(logits >= threshold_logit, 1.0, -1.0)
            signs = tf.stop_gradient(tf.where(mode == 0.0, predicted, mode))
            score = tf.reduce_sum(logits * signs)
        # The score is a sum over images and each image's logit depends only on its own
        # input, so one gradient gives every image's own gradient.
        grads = tf.cast(tape.gradient(score, activations), tf.float32)
        activations = tf.cast(activations, tf.float32)
        maps = tf.stack([tf.nn.relu(weigh(grads, activations)) for weigh in weighers])
        pooled = tf.reduce_mean(tf.cast(pooled_from, tf.float32), axis=(1, 2))
        return maps, logits, signs, pooled

    return cams


def _gradcam(grads: tf.Tensor, activations: tf.Tensor) -> tf.Tensor:
    """Channel weights are the spatially averaged gradients."""
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def _gradcam_plus_plus(grads: tf.Tensor, activations: tf.Tensor) -> tf.Tensor:
    """Chattopadhay et al. 2018's closed form, as tf-keras-vis's ``GradcamPlusPlus``.

    tf-keras-vis also multiplies every derivative by ``exp(score)``, which assumes an
    exponential output; it cancels in ``alpha`` and scales the map by a positive constant per
    image, which the per-image normalisation removes. It is left out: ``exp`` of a logit above
    ~88 overflows float32.
    """
    second = grads * grads
    third = second * grads
    activation_sums = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2.0 * second + third * activation_sums
    # Where the gradient is zero the numerator is too: alpha 0, not 0/0.
    denominator += tf.cast(tf.equal(second, 0.0), denominator.dtype)
    alphas = second / denominator
    alpha_sums = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
    alphas /= alpha_sums + tf.cast(tf.equal(alpha_sums, 0.0), alpha_sums.dtype)
    weights = tf.reduce_sum(tf.nn.relu(grads) * alphas, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def _layercam(grads: tf.Tensor, activations: tf.Tensor) -> tf.Tensor:
    """Jiang et al. 2021: each position's activations weighted by its positive gradients."""
    return tf.reduce_sum(tf.nn.relu(grads) * activations, axis=-1)


_WEIGHERS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcam_plus_plus,
    "layercam": _layercam,
}


def _make_visualizer(model: keras.Model, method: str) -> Callable:
    # Imported here: tf-keras-vis is only needed for these methods, not for the fast path.
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "layercam": Layercam}[method]
    return cls(model, model_modifier=ReplaceToLinear(), clone=True)


def _normalise(cams: np.ndarray) -> np.ndarray:
    """Per-image min-max to [0, 1], exactly as tf-keras-vis's ``normalize``."""
    axes = tuple(range(1, cams.ndim))
    low = cams.min(axis=axes, keepdims=True)
    high = cams.max(axis=axes, keepdims=True)
    return ((cams - low) / (high - low + NORMALISATION_EPSILON)).astype(np.float32)


def _is_empty(raw: np.ndarray) -> np.ndarray:
    """Per image: the raw map is zero, or constant, everywhere."""
    axes = tuple(range(1, raw.ndim))
    high = raw.max(axis=axes)
    spread = high - raw.min(axis=axes)
    return (high <= EMPTY_MAP_TOLERANCE) | (spread <= EMPTY_MAP_TOLERANCE * np.abs(high))


def _target_names(signs: np.ndarray) -> tuple[str, ...]:
    return tuple("malignant" if sign > 0 else "benign" for sign in np.asarray(signs))
