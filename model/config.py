"""What the network is and what input it expects, as plain data.

Like timm's ``pretrained_cfg``, the configuration travels with a trained model (inside its
model card), so serving always resizes and normalises exactly as training did.

Example:
    >>> cfg = ModelConfig()
    >>> cfg.input.height, cfg.input.width   # the paper's 144x96 (width x height)
    (96, 144)
    >>> cfg.input.shape
    (96, 144, 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from model.stain import StainMethod, StainReference

LABELS: dict[int, str] = {0: "benign", 1: "malignant"}
"""Label encoding of the paper: benign 0, malignant 1."""


def label_of(probability: float, threshold: float, labels: Mapping[int, str] | None = None) -> str:
    """The label a probability of class 1 gets at a decision threshold (at it: class 1),
    named by ``labels`` (a model card's; default benign/malignant).

    Example:
        >>> label_of(0.5, 0.5), label_of(0.49, 0.5), label_of(0.7, 0.5, {0: "neg", 1: "pos"})
        ('malignant', 'benign', 'pos')
    """
    return (labels or LABELS)[int(probability >= threshold)]


# ImageNet channel means in BGR order, as keras.applications.resnet50.preprocess_input
# ("caffe" mode) subtracts them. Written out so the contract is visible and framework-free.
IMAGENET_BGR_MEAN: tuple[float, float, float] = (103.939, 116.779, 123.68)

Pooling = Literal["avg", "flatten"]
LOGIT_LAYER = "logit"  # the pre-sigmoid score: Dense(1)
OUTPUT_LAYER = "malignancy"  # sigmoid(logit): the malignancy probability

COARSE_LAYER = "conv5_block3_out"  # 3x5 feature map at 96x144 input
FINE_LAYER = "conv4_block6_out"  # 6x9 feature map at 96x144 input
APPLICABILITY_LAYER = COARSE_LAYER  # its global average: the features the head classifies
CAM_LAYERS: dict[str, str] = {
    COARSE_LAYER: "coarse (conv5_block3_out, 3x5 cells)",
    FINE_LAYER: "fine (conv4_block6_out, 6x9 cells)",
}
CamMethod = Literal["gradcam", "gradcam++", "layercam"]
"""A class-activation method of :mod:`model.explainer`."""
CAM_METHODS: dict[CamMethod, str] = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
}
"""Class-activation methods of :mod:`model.explainer` (key -> display name). Plain data here,
so a UI can offer them without importing TensorFlow."""

Target = Literal["predicted", "malignant", "benign"]
"""Whose evidence a map shows: the predicted class (per image, by the threshold) or always the
malignant / benign one (the benign score is the negated logit)."""
CAM_TARGETS: tuple[Target, ...] = ("predicted", "malignant", "benign")


@dataclass(frozen=True)
class InputSpec:
    """How an RGB image becomes the network input.

    Attributes:
        height, width: network input size in pixels (the paper resizes to 144x96, w x h).
        interpolation: Pillow resampling filter used to resize. ``"bilinear"`` is Pillow's
            antialiased bilinear filter (its support grows with the downscale factor), so a
            700x460 image is averaged, not aliased, down to 144x96.
        normalisation: ``"resnet50_caffe"``: RGB to BGR, then subtract the ImageNet BGR mean
            (no scaling), exactly ``keras.applications.resnet50.preprocess_input``.
        stain_norm: stain normalisation of the resized image before that (:mod:`model.stain`):
            ``"none"`` (the default, and what every model trained before it had),
            ``"macenko"`` or ``"reinhard"``.
        stain_reference: the reference fitted on training images (needed unless ``"none"``).
    """

    height: int = 96
    width: int = 144
    channels: int = 3
    interpolation: Literal["bilinear", "bicubic", "lanczos", "nearest"] = "bilinear"
    normalisation: Literal["resnet50_caffe"] = "resnet50_caffe"
    channel_mean_bgr: tuple[float, float, float] = IMAGENET_BGR_MEAN
    stain_norm: StainMethod = "none"
    stain_reference: StainReference | None = None

    def __post_init__(self) -> None:
        if self.stain_norm not in ("none", "macenko", "reinhard"):
            raise ValueError(f"unknown stain_norm {self.stain_norm!r}: none, macenko or reinhard")
        reference = self.stain_reference
        if reference is not None and reference.method != self.stain_norm:
            raise ValueError(
                f"stain_norm {self.stain_norm!r} with a {reference.method!r} stain reference"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Input tensor shape without the batch axis: (height, width, channels)."""
        return (self.height, self.width, self.channels)

    def with_stain_reference(self, reference: StainReference) -> InputSpec:
        """The same contract with a fitted stain reference (its method becomes ``stain_norm``)."""
        return replace(self, stain_norm=reference.method, stain_reference=reference)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the classifier: ResNet-50 base and the paper's head.

    Attributes:
        input: the input contract (size, resize filter, normalisation).
        pooling: how the 3x5x2048 ResNet output becomes a vector before the head.
            ``"avg"`` (global average pooling, the default) is the usual transfer-learning
            reading of the paper; ``"flatten"`` (30,720 features) is the literal other reading
            of its "Flatten" step and gives a 31M-parameter first Dense layer.
        dense_units, dropout: the head, Dense(1024) -> Dropout(0.4) -> ReLU -> Dense(1, sigmoid).
    """

    input: InputSpec = field(default_factory=InputSpec)
    pooling: Pooling = "avg"
    dense_units: int = 1024
    dropout: float = 0.4

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        data = dict(data)
        spec = dict(data.pop("input", {}))
        if "channel_mean_bgr" in spec:
            spec["channel_mean_bgr"] = tuple(spec["channel_mean_bgr"])
        if spec.get("stain_reference") is not None:
            spec["stain_reference"] = StainReference.from_dict(spec["stain_reference"])
        return cls(input=InputSpec(**spec), **data)
