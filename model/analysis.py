"""One call from an image to probability, label and Grad-CAM: the service the app uses.

:class:`Analyzer` holds a loaded artifact with its :class:`~model.predictor.Predictor` and
:class:`~model.explainer.Explainer`; it is built once per model and shared by every session.
With plain Grad-CAM the probability and the map come from the same forward pass.

The result (:class:`ImageAnalysis`) holds no pixels: the caller already has the decoded image
and draws the map over it (:meth:`ImageAnalysis.overlay`), so a session with many results
keeps only their small maps.

Example:
    >>> analyzer = Analyzer(load_artifact("runs/paper-2026/model"))
    >>> image = decode_image(open("SOB_M_DC-14-2523-40-010.png", "rb").read())
    >>> result = analyzer.analyze(image)
    >>> result.label, round(result.probability, 3), result.cam.shape
    ('malignant', 0.973, (3, 5))
    >>> result.overlay(image.pixels, opacity=0.4).shape   # original size
    (460, 700, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.artifact import LoadedArtifact, load_artifact
from model.card import ModelCard
from model.config import COARSE_LAYER, CamMethod, Target, label_of
from model.explainer import Explainer
from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY, colorize, overlay, upsample_heatmap
from model.predictor import Predictor, TTAResult
from model.preprocessing import DecodedImage, decode_image, to_model_input


@dataclass(frozen=True)
class ImageAnalysis:
    """The model's result for one image, without the image itself.

    ``cam`` is at the layer's resolution (e.g. 3x5), values in [0, 1]; the drawing methods
    bring it to the size of the image they are given.
    """

    probability: float
    label: str
    threshold: float
    cam: np.ndarray
    method: CamMethod
    layer: str
    target: str
    tta: TTAResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def heatmap(self, size: tuple[int, int]) -> np.ndarray:
        """The map upsampled to ``size`` = (height, width), values in [0, 1]."""
        return upsample_heatmap(self.cam, size)

    def heatmap_rgb(self, size: tuple[int, int], colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
        """The upsampled map as a colour image (uint8)."""
        return colorize(self.heatmap(size), colormap)

    def overlay(
        self,
        pixels: np.ndarray,
        opacity: float = DEFAULT_OPACITY,
        colormap: str = DEFAULT_COLORMAP,
    ) -> np.ndarray:
        """The map blended over ``pixels`` (the analysed image, uint8 RGB), at their size."""
        return overlay(pixels, self.cam, opacity, colormap)


class Analyzer:
    """Probability + class-activation map for images, from one loaded model artifact."""

    def __init__(self, artifact: LoadedArtifact, fast_gradcam: bool = True) -> None:
        self.artifact = artifact
        card = artifact.card
        self.predictor = Predictor(artifact.model, card.config.input, card.threshold)
        self.explainer = Explainer(artifact.model, card.threshold, fast_gradcam=fast_gradcam)

    @classmethod
    def from_path(cls, path: str | Path) -> Analyzer:
        """Load an artifact (folder, run folder or .zip) and wrap it."""
        return cls(load_artifact(path))

    @property
    def card(self) -> ModelCard:
        return self.artifact.card

    def analyze(
        self,
        image: bytes | DecodedImage,
        method: CamMethod = "gradcam",
        layer: str = COARSE_LAYER,
        target: Target = "predicted",
        tta: bool = False,
    ) -> ImageAnalysis:
        """Decode (when given bytes), classify and explain one image.

        Raises the :class:`~model.errors.ImageError` subclasses of
        :func:`~model.preprocessing.decode_image` for bad input.
        """
        decoded = image if isinstance(image, DecodedImage) else decode_image(image)
        inputs = to_model_input(decoded, self.card.config.input)[None]
        explanation = self.explainer.explain(inputs, method, layer, target)
        probability = float(explanation.probabilities[0])
        return ImageAnalysis(
            probability=probability,
            label=label_of(probability, self.card.threshold),
            threshold=self.card.threshold,
            cam=explanation.heatmaps[0],
            method=method,
            layer=layer,
            target=explanation.targets[0],
            tta=self.predictor.predict_tta(inputs) if tta else None,
            notes=decoded.notes,
        )
