"""The model card: everything needed to use and to judge a trained model, as JSON.

A card travels with the weights (see :mod:`model.artifact`). Serving reads the input size,
preprocessing and threshold from it; people read how the model was trained and evaluated.

Example:
    >>> card = ModelCard(name="demo")
    >>> card.is_trained
    False
    >>> ModelCard.from_json(card.to_json()) == card
    True
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from model.config import LABELS, ModelConfig

CARD_SCHEMA_VERSION = 1
ARCHITECTURE = (
    "ResNet-50 (ImageNet-pretrained, include_top=False) -> pooling -> Dense(1024) -> "
    "Dropout(0.4) -> ReLU -> Dense(1, sigmoid)"
)
INTENDED_USE = (
    "Research and education only. Not a medical device; not for diagnosis or treatment "
    "decisions. Trained on BreakHis H&E breast-tumour microscopy images (700x460 px, 40X-400X)."
)


@dataclass
class TrainingInfo:
    """How the weights came about.

    ``trained`` is False for a network whose head was never fitted (random or ImageNet-only):
    its outputs are meaningless and the app must say so.
    """

    trained: bool = False
    initial_weights: str = "random"
    protocol: str | None = None
    dataset: str | None = None
    preset: str | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    loss: str | None = None
    freeze: str | None = None
    augmentation: str | None = None
    seed: int | None = None
    notes: str | None = None


@dataclass
class ModelCard:
    """Metadata saved beside a model's weights.

    Attributes:
        name: short identifier (e.g. the run folder's name).
        config: architecture and input contract (size, resize filter, normalisation).
        labels: label encoding, ``{0: "benign", 1: "malignant"}``.
        threshold: decision threshold on the malignancy probability.
        threshold_source: how the threshold was chosen (e.g. "Youden J on validation").
        training: :class:`TrainingInfo`.
        evaluation: results by protocol name (``"patient"``, ``"paper"``...), each a dict with
            at least ``description``, ``patient_disjoint`` (bool) and ``metrics``.
        software: versions of the libraries that wrote the model.
        created: ISO-8601 UTC time of writing.
        model_sha256: checksum of the weights file (set by :func:`model.artifact.save_artifact`).
    """

    name: str
    config: ModelConfig = field(default_factory=ModelConfig)
    labels: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    threshold: float = 0.5
    threshold_source: str = "default 0.5 (not tuned)"
    training: TrainingInfo = field(default_factory=TrainingInfo)
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)
    architecture: str = ARCHITECTURE
    intended_use: str = INTENDED_USE
    software: dict[str, str] = field(default_factory=lambda: software_versions())
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    model_sha256: str | None = None
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def is_trained(self) -> bool:
        """False when the card says the head was never fitted: outputs mean nothing."""
        return bool(self.training.trained)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from its dictionary; raises ``KeyError``/``TypeError``/``ValueError``."""
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TypeError(f"unknown model card fields: {sorted(unknown)}")
        for name, kind in (
            ("labels", dict),
            ("training", dict),
            ("evaluation", dict),
            ("config", dict),
            ("software", dict),
        ):
            if name in data and not isinstance(data[name], kind):
                raise TypeError(f"{name} must be a JSON object, not {type(data[name]).__name__}")
        threshold = data.get("threshold", 0.5)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not (0.0 < threshold < 1.0)
        ):
            raise ValueError(f"threshold must be a number strictly between 0 and 1: {threshold!r}")
        if not all(isinstance(v, dict) for v in data.get("evaluation", {}).values()):
            raise TypeError("each evaluation entry must be a JSON object")
        data["config"] = ModelConfig.from_dict(data.get("config", {}))
        data["labels"] = {int(k): str(v) for k, v in data.get("labels", LABELS).items()}
        data["training"] = TrainingInfo(**data.get("training", {}))
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(json.loads(text))


def software_versions() -> dict[str, str]:
    """Versions of the libraries that matter for reproducing a model's numbers."""
    import keras
    import numpy
    import PIL

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }
    if versions["keras_backend"] == "tensorflow":
        import tensorflow

        versions["tensorflow"] = tensorflow.__version__
    return versions
