"""One call from image bytes to probability, label and Grad-CAM: the service the app uses.

:class:`Analyzer` holds a loaded artifact with its :class:`~model.predictor.Predictor` and
:class:`~model.explainer.Explainer`; it is built once per model and shared by every session.
With plain Grad-CAM the probability and the map come from the same forward pass.

Example:
    >>> analyzer = Analyzer(load_artifact("runs/paper-2026/model"))
    >>> result = analyzer.analyze(open("SOB_M_DC-14-2523-40-010.png", "rb").read())
    >>> result.label, round(result.probability, 3), result.cam.shape
    ('malignant', 0.973, (3, 5))
    >>> result.overlay(opacity=0.4).shape   # original size
    (460, 700, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.artifact import LoadedArtifact, load_artifact
from model.card import ModelCard
from model.config import COARSE_LAYER, label_of
from model.explainer import CamMethod, Explainer, Target
from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY, colorize, overlay, upsample_heatmap
from model.predictor import Predictor, TTAResult
from model.preprocessing import DecodedImage, decode_image, to_model_input


@dataclass(frozen=True)
class ImageAnalysis:
    """The result for one image. ``cam`` is at the layer's resolution; the overlay methods
    bring it to the original image size."""

    image: DecodedImage
    probability: float
    label: str
    threshold: float
    cam: np.ndarray
    method: str
    layer: str
    target: str
    tta: TTAResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def heatmap(self) -> np.ndarray:
        """The map upsampled to the original image size, values in [0, 1]."""
        return upsample_heatmap(self.cam, (self.image.height, self.image.width))

    def heatmap_rgb(self, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
        """The upsampled map as a colour image (uint8)."""
        return colorize(self.heatmap(), colormap)

    def overlay(
        self, opacity: float = DEFAULT_OPACITY, colormap: str = DEFAULT_COLORMAP
    ) -> np.ndarray:
        """The map blended over the original image (uint8, original size)."""
        return overlay(self.image.pixels, self.cam, opacity, colormap)


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
            image=decoded,
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
