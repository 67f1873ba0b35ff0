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
    >>> result.label, round(result.probability, 3), result.cam.shape, result.applicability
    ('malignant', 0.973, (3, 5), 'typical')
    >>> result.overlay(image.pixels, opacity=0.4).shape   # original size
    (460, 700, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from model.applicability import Verdict
from model.artifact import LoadedArtifact, load_artifact
from model.card import ModelCard
from model.config import CAM_METHODS, COARSE_LAYER, CamMethod, Target, label_of
from model.explainer import Explainer
from model.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY, colorize, overlay, upsample_heatmap
from model.predictor import Predictor, TTAResult
from model.preprocessing import DecodedImage, PreparedInput, decode_image, prepare_input
from model.quality import QualityReport, assess_quality, thresholds_for
from model.trust import TrustLevel, assess_image, assess_model


@dataclass(frozen=True)
class ImageAnalysis:
    """The model's result for one image, without the uploaded image (at most the 144x96 copy
    the network saw, when the contract stain-normalises), and how far to trust it.

    ``cam`` is at the layer's resolution (e.g. 3x5), values in [0, 1]; the drawing methods
    bring it to the size of the image they are given. It is None when no map was asked for
    (:meth:`Analyzer.analyze_many` with ``explain=False``); ``empty_map`` is then False.

    Attributes:
        probability: the malignancy probability the model serves (calibrated when its card
            has a calibration, see ``calibrated``).
        raw_probability: the network's own sigmoid output.
        label: ``"benign"``/``"malignant"``, or None when the evidence does not support a
            label (``withheld`` says why): the model is not shown to be better than chance,
            the image is unlike the training images, or too small.
        decision: the class at the threshold, whatever the evidence (for the research view).
        trust: the model's level (:mod:`model.trust`).
        empty_map: the map was zero or constant everywhere: no region raises the explained
            class's score at this layer, and there is nothing to draw.
        applicability, applicability_score: how the image's features compare with the
            training images' (None when the card has no feature summary).
        quality, quality_warnings: what the pixel checks found (codes, and one sentence
            each), relative to the training images when the card describes them.
        notes: what decoding did (alpha flattened, 16-bit rescaled...) and, when stain
            normalisation was skipped, why.
        stain_norm: the stain normalisation the model's contract applies (``"none"``,
            ``"macenko"``, ``"reinhard"``); ``stain_applied`` whether it changed this image.
        seen: what the network saw when the contract stain-normalises: the ``uint8`` image at
            the network's input size after normalisation (``None`` without stain
            normalisation: the network saw the resized upload).
    """

    probability: float
    label: str | None
    threshold: float
    cam: np.ndarray | None
    method: CamMethod
    layer: str
    target: str
    tta: TTAResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    raw_probability: float | None = None
    calibrated: bool = False
    decision: str = ""
    trust: TrustLevel = "unproven"
    withheld: tuple[str, ...] = ()
    empty_map: bool = False
    applicability: Verdict | None = None
    applicability_score: float | None = None
    quality: tuple[str, ...] = ()
    quality_warnings: tuple[str, ...] = ()
    stain_norm: str = "none"
    stain_applied: bool = False
    seen: np.ndarray | None = field(default=None, repr=False, compare=False)

    def heatmap(self, size: tuple[int, int]) -> np.ndarray:
        """The map upsampled to ``size`` = (height, width), values in [0, 1]."""
        return upsample_heatmap(self._map(), size)

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
        return overlay(pixels, self._map(), opacity, colormap)

    def _map(self) -> np.ndarray:
        if self.cam is None:
            raise ValueError("this result has no map: it was analysed with explain=False")
        return self.cam

    @property
    def empty_map_message(self) -> str | None:
        """What to say instead of drawing an empty map (None when the map has content)."""
        if not self.empty_map:
            return None
        # Without a label, naming the explained class would give the decision away.
        whose = f"the {self.target}" if self.label is not None else "the explained class's"
        other = (
            "the fine layer (conv4_block6_out)"
            if self.layer == COARSE_LAYER
            else ("the coarse layer (conv5_block3_out)")
        )
        return (
            f"Empty map: no region raises {whose} score at {self.layer} "
            f"({CAM_METHODS.get(self.method, self.method)} is zero everywhere). Try {other} "
            "or LayerCAM."
        )


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the network: the decoded pixels, their checks and the network
    input (:meth:`Analyzer.prepare`, the part of an analysis before the network)."""

    image: DecodedImage
    quality: QualityReport
    network_input: PreparedInput  # the network input, what it was made from, stain notes

    @property
    def inputs(self) -> np.ndarray:
        return self.network_input.model_input


class Analyzer:
    """Probability + class-activation map for images, from one loaded model artifact.

    Everything the model's card says about trusting a result is applied here, once, for the
    app and any other caller: the calibration, the quality gate, the applicability check and
    the pixel checks relative to the training images.
    """

    def __init__(self, artifact: LoadedArtifact, fast_gradcam: bool = True) -> None:
        self.artifact = artifact
        card = artifact.card
        calibration = card.calibration
        self.predictor = Predictor(
            artifact.model, card.config.input, card.threshold, calibration=calibration
        )
        logit_threshold = (
            calibration.raw_logit_at(card.threshold) if calibration is not None else None
        )
        self.explainer = Explainer(
            artifact.model,
            card.threshold,
            fast_gradcam=fast_gradcam,
            logit_threshold=logit_threshold,
        )
        self.trust = assess_model(card)
        self.quality_thresholds = thresholds_for(card.config.input, card.training_images)

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
        """Decode (when given bytes), check, classify and explain one image:
        :meth:`analyze_many` on a batch of one, so the app and batch scoring share one path.

        Raises the :class:`~model.errors.ImageError` subclasses of
        :func:`~model.preprocessing.decode_image` for bad input.
        """
        return self.analyze_many([image], method, layer, target, tta)[0]

    def analyze_many(
        self,
        images: Sequence[bytes | DecodedImage | PreparedImage],
        method: CamMethod = "gradcam",
        layer: str = COARSE_LAYER,
        target: Target = "predicted",
        tta: bool = False,
        explain: bool = True,
        batch_size: int | None = None,
    ) -> list[ImageAnalysis]:
        """:meth:`analyze` for several images, with one network call per ``batch_size``
        images (default ``predictor.batch_size``); the batch CLI (:mod:`model.batch`) runs it.

        ``explain=False`` skips the map: the probability, applicability features and checks
        come from the forward pass alone (no gradient), and each result's ``cam`` is None.
        Images may come :meth:`prepare`-d (the batch CLI prepares the next batch in threads
        while the network scores this one). The first bad image raises (decode them
        beforehand to keep going past bad files).

        Example:
            >>> results = analyzer.analyze_many([image_a, image_b], explain=False)
            >>> [result.cam is None for result in results]
            [True, True]
        """
        prepared = [self.prepare(image) for image in images]
        results: list[ImageAnalysis] = []
        step = max(1, batch_size or self.predictor.batch_size)
        for start in range(0, len(prepared), step):
            results += self._analyze_batch(
                prepared[start : start + step], method, layer, target, tta, explain
            )
        return results

    def with_tta(
        self, prepared: Sequence[PreparedImage], analyses: Sequence[ImageAnalysis]
    ) -> list[ImageAnalysis]:
        """``analyses`` (of ``prepared``, computed without test-time augmentation) with it
        added: only the flipped views run, each image's own probability is the original
        view's. What turning TTA on costs a batch that was already classified.

        Example:
            >>> plain = analyzer.analyze_many([image], explain=False)
            >>> analyzer.with_tta([analyzer.prepare(image)], plain)[0].tta.views
            ('original', 'flip left-right', 'flip up-down', 'rotate 180')
        """
        if len(prepared) != len(analyses):
            raise ValueError(f"{len(prepared)} images but {len(analyses)} analyses")
        if not analyses:
            return []
        inputs = np.stack([entry.inputs for entry in prepared])
        original = np.array([analysis.probability for analysis in analyses], np.float64)
        result = self.predictor.predict_tta(inputs, original=original)
        return [
            replace(analysis, tta=result.for_image(index))
            for index, analysis in enumerate(analyses)
        ]

    def warm_up_controls(self) -> None:
        """Trace the maps of every layer (each graph gives all three methods) and the
        test-time augmentation pass, once, on a blank input: a server runs this in the
        background after loading, so a visitor's first change of layer or TTA costs only the
        computation (tracing each graph takes seconds on a CPU)."""
        self.explainer.warm_up()
        self.predictor.predict_batch(np.zeros((1, *self.predictor.spec.shape), np.float32))

    def prepare(self, image: bytes | DecodedImage | PreparedImage) -> PreparedImage:
        """Decode (when given bytes), check the pixels and make the network input: the
        per-image work before the network, safe to run in several threads at once.

        Raises the :class:`~model.errors.ImageError` subclasses of
        :func:`~model.preprocessing.decode_image` for bad input.
        """
        if isinstance(image, PreparedImage):
            return image
        decoded = image if isinstance(image, DecodedImage) else decode_image(image)
        card = self.card
        return PreparedImage(
            image=decoded,
            quality=assess_quality(decoded, self.quality_thresholds, card.training_images),
            network_input=prepare_input(decoded, card.config.input),
        )

    def _analyze_batch(
        self,
        prepared: Sequence[PreparedImage],
        method: CamMethod,
        layer: str,
        target: Target,
        tta: bool,
        explain: bool,
    ) -> list[ImageAnalysis]:
        card = self.card
        inputs = np.stack([entry.inputs for entry in prepared])
        explanation = (
            self.explainer.explain(inputs, method, layer, target)
            if explain
            else self.explainer.forward(inputs, target)
        )
        probabilities = self.predictor.probabilities_from_logits(explanation.logits)
        scores = None
        if card.applicability is not None and explanation.features is not None:
            scores = card.applicability.scores(explanation.features)
        tta_result = self.predictor.predict_tta(inputs, original=probabilities) if tta else None
        results = []
        for index, entry in enumerate(prepared):
            quality, stain = entry.quality, entry.network_input.stain
            probability = float(probabilities[index])
            verdict = score = None
            if scores is not None:
                score = float(scores[index])
                verdict = card.applicability.verdict(score)
                if "too_small" in quality.codes:
                    verdict = "unlike"  # no training image was anything like that small
            image_trust = assess_image(self.trust, verdict, quality.codes)
            decision = label_of(probability, card.threshold, card.labels)
            results.append(
                ImageAnalysis(
                    probability=probability,
                    label=decision if image_trust.shows_label else None,
                    threshold=card.threshold,
                    cam=explanation.heatmaps[index] if explanation.heatmaps is not None else None,
                    method=method,
                    layer=layer,
                    target=explanation.targets[index],
                    tta=None if tta_result is None else tta_result.for_image(index),
                    notes=entry.image.notes + entry.network_input.notes,
                    raw_probability=float(explanation.probabilities[index]),
                    calibrated=card.calibration is not None,
                    decision=decision,
                    trust=self.trust.level,
                    withheld=image_trust.reasons,
                    empty_map=bool(explanation.empty[index])
                    if explanation.empty is not None
                    else False,
                    applicability=verdict,
                    applicability_score=score,
                    quality=quality.codes,
                    quality_warnings=quality.warnings,
                    stain_norm=card.config.input.stain_norm,
                    stain_applied=stain is not None and stain.applied,
                    seen=entry.network_input.seen if stain is not None else None,
                )
            )
        return results
