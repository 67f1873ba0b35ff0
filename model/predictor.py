"""Malignancy probabilities from a model, fast and safe to share between threads.

The traced graph returns the raw logit; the probability is ``sigmoid(logit)``, or, for a model
whose card carries a calibration (:mod:`model.calibration`), the calibrated probability.

The inference function is traced once, on first use (a ``tf.function`` with a fixed input
signature), so each call runs a compiled graph instead of ``model.predict``'s per-call setup.
A traced concrete function is stateless, so one :class:`Predictor` serves all Streamlit
sessions.

Example:
    >>> predictor = Predictor(build_model(weights=None), InputSpec())
    >>> predictor.predict_batch(np.zeros((2, 96, 144, 3), "float32")).shape
    (2,)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from model.calibration import Calibration, sigmoid
from model.config import LOGIT_LAYER, InputSpec, label_of
from model.preprocessing import DecodedImage, decode_image, to_model_input


@dataclass(frozen=True)
class TTAResult:
    """Test-time augmentation: the probability under each flip/rotation, and their summary."""

    probabilities: np.ndarray  # (n_images, n_views)
    views: tuple[str, ...]

    @property
    def mean(self) -> np.ndarray:
        return self.probabilities.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return self.probabilities.std(axis=1)

    def for_image(self, index: int) -> TTAResult:
        """The result of image ``index`` alone (one row), as a per-image analysis holds it."""
        return TTAResult(self.probabilities[index : index + 1], self.views)


# Views that keep the (96, 144) shape: identity, flips and the half turn. Quarter turns would
# transpose the input to 144x96, a shape the network was not trained on.
TTA_VIEWS: dict[str, tuple[bool, bool]] = {
    "original": (False, False),
    "flip left-right": (False, True),
    "flip up-down": (True, False),
    "rotate 180": (True, True),
}


class Predictor:
    """Probabilities for preprocessed batches, decoded images or raw image bytes.

    Args:
        model: a network built by :func:`model.network.build_model` (or loaded artifact).
        spec: the input contract the model was trained with.
        threshold: decision threshold on the (calibrated) malignancy probability.
        batch_size: largest batch sent to the network at once (bounds memory).
        jit_compile: compile the graph with XLA (helps on GPU; measured in ``bench/``).
        calibration: maps raw logits to calibrated probabilities (None: plain sigmoid).
    """

    def __init__(
        self,
        model: keras.Model,
        spec: InputSpec,
        threshold: float = 0.5,
        batch_size: int = 32,
        jit_compile: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.threshold = float(threshold)
        self.calibration = calibration
        self.batch_size = int(batch_size)
        self.jit_compile = jit_compile
        self._lock = threading.Lock()
        self._traced: Callable | None = None

    @property
    def _infer(self) -> Callable:
        """The traced inference graph, built on first use, once, under a lock (concurrent
        first calls must not trace twice); later calls only run it."""
        with self._lock:
            if self._traced is None:
                signature = tf.TensorSpec((None, *self.spec.shape), tf.float32, name="images")
                logit_model = keras.Model(
                    self.model.inputs, self.model.get_layer(LOGIT_LAYER).output
                )
                infer = tf.function(
                    lambda images: logit_model(images, training=False)[:, 0],
                    jit_compile=self.jit_compile,
                )
                self._traced = infer.get_concrete_function(signature)
            return self._traced

    def predict_logits(self, inputs: np.ndarray) -> np.ndarray:
        """Raw logits (n,) float64 for preprocessed inputs of shape (n, *spec.shape)."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 4 or inputs.shape[1:] != self.spec.shape:
            raise ValueError(f"expected inputs (n, {self.spec.shape}), got {inputs.shape}")
        chunks = [
            self._infer(tf.constant(inputs[start : start + self.batch_size])).numpy()
            for start in range(0, len(inputs), self.batch_size)
        ]
        return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0,))

    def probabilities_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities when the model has a calibration, else the sigmoid."""
        if self.calibration is not None:
            return self.calibration.apply(logits)
        return sigmoid(logits)

    def predict_batch(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (n,) for preprocessed inputs of shape (n, *spec.shape)."""
        return self.probabilities_from_logits(self.predict_logits(inputs))

    def predict(self, images: Sequence[bytes | DecodedImage]) -> np.ndarray:
        """Probabilities for image files' bytes or decoded images (same order)."""
        inputs = np.stack([self._to_input(image) for image in images])
        return self.predict_batch(inputs)

    def predict_one(self, image: bytes | DecodedImage) -> float:
        """Probability for a single image."""
        return float(self.predict([image])[0])

    def predict_tta(self, inputs: np.ndarray, original: np.ndarray | None = None) -> TTAResult:
        """Probabilities of each image under every view in :data:`TTA_VIEWS`.

        ``original``: the probabilities (n,) of ``inputs`` as they are, when the caller has
        them already (the plain pass every analysis runs); the network then runs only the
        flipped views, three passes instead of four.
        """
        inputs = np.asarray(inputs, dtype=np.float32)
        if original is not None and np.shape(original) != (len(inputs),):
            raise ValueError(
                f"original must hold {len(inputs)} probabilities, got {np.shape(original)}"
            )
        to_run = {
            name: flips
            for name, flips in TTA_VIEWS.items()
            if original is None or any(flips)  # the unflipped view is ``original``
        }
        views = [_view(inputs, *flips) for flips in to_run.values()]
        stacked = self.predict_batch(np.concatenate(views)).reshape(len(to_run), len(inputs))
        by_view = dict(zip(to_run, stacked, strict=True))
        if original is not None:
            by_view["original"] = np.asarray(original, dtype=np.float64)
        per_view = np.stack([by_view[name] for name in TTA_VIEWS], axis=1)
        return TTAResult(probabilities=per_view, views=tuple(TTA_VIEWS))

    def label(self, probability: float) -> str:
        """``"malignant"`` at or above the threshold, else ``"benign"``."""
        return label_of(probability, self.threshold)

    def _to_input(self, image: bytes | DecodedImage) -> np.ndarray:
        decoded = image if isinstance(image, DecodedImage) else decode_image(image)
        return to_model_input(decoded, self.spec)


def _view(inputs: np.ndarray, flip_rows: bool, flip_columns: bool) -> np.ndarray:
    if flip_rows:
        inputs = inputs[:, ::-1]
    if flip_columns:
        inputs = inputs[:, :, ::-1]
    return inputs
