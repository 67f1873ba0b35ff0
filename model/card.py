"""The model card: everything needed to use and to judge a trained model, as JSON.

A card travels with the weights (see :mod:`model.artifact`). Serving reads the input size,
preprocessing and threshold from it; people read how the model was trained and evaluated.

An evaluation (:class:`Evaluation`) is one protocol's test result, typed: which protocol,
whether its test patients were unseen in training, the metrics with their confidence
intervals, the threshold and what the test data were. Training builds them
(:mod:`train.evaluation`); the app, the report and any other reader only read them.

Example:
    >>> card = ModelCard(name="demo")
    >>> card.is_trained
    False
    >>> ModelCard.from_json(card.to_json()) == card
    True
    >>> card.evaluation["patient"] = Evaluation(
    ...     protocol="patient", title="Patient-disjoint", patient_disjoint=True,
    ...     metrics={"accuracy": 0.86, "auc": 0.91}, intervals={"auc": (0.84, 0.96)})
    >>> ModelCard.from_json(card.to_json()).evaluation["patient"].intervals["auc"]
    (0.84, 0.96)
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from model.applicability import FeatureSummary
from model.calibration import Calibration
from model.config import LABELS, ModelConfig
from model.quality import ImageProfile

CARD_SCHEMA_VERSION = 1
ARCHITECTURE = (
    "ResNet-50 (include_top=False) -> pooling -> Dense(1024) -> Dropout(0.4) -> ReLU -> "
    "Dense(1, sigmoid)"
)
INTENDED_USE = (
    "Research and education only. Not a medical device; not for diagnosis or treatment decisions."
)


def describe_architecture(initial_weights: str | None) -> str:
    """The architecture line of a card, saying where ResNet-50's weights started from.

    Example:
        >>> describe_architecture("imagenet").startswith("ResNet-50 (ImageNet-pretrained")
        True
        >>> describe_architecture("none").startswith("ResNet-50 (random initial weights")
        True
    """
    if initial_weights == "imagenet":
        start = "ImageNet-pretrained"
    elif initial_weights in (None, "none", "random"):
        start = "random initial weights, no ImageNet pretraining"
    else:
        start = f"initial weights from {initial_weights}"
    return ARCHITECTURE.replace("ResNet-50 (", f"ResNet-50 ({start}, ", 1)


def describe_intended_use(dataset: str | None, profile: ImageProfile | None) -> str:
    """Intended use derived from what the model was trained on.

    Example:
        >>> describe_intended_use("BreakHis (7909 images)", None).endswith(
        ...     "Trained on BreakHis (7909 images); it has not been shown to work on other images.")
        True
    """
    trained_on = dataset or "an unrecorded dataset"
    if profile is not None:
        trained_on += f", images {profile.describe()}"
    return f"{INTENDED_USE} Trained on {trained_on}; it has not been shown to work on other images."


EvaluationScope = Literal["model", "protocol"]


@dataclass(frozen=True)
class Evaluation:
    """One protocol's test result, as it travels in the model card.

    Attributes:
        protocol: the protocol's registry name (``"patient"``, ``"paper"``...).
        title: how people name the protocol (``"Patient-disjoint protocol (Spanhol et al.
            2016)"``).
        patient_disjoint: True when no test patient has images in training: the only kind
            of number that estimates how the model does on a new patient.
        scope: ``"model"``: this very model on its own test split; ``"protocol"``: the mean
            over the protocol's separately trained folds (it describes the recipe).
        description: one sentence on how the numbers were obtained.
        data: what the test data were (images, patients, splits).
        metrics: scalar metrics by name (image level as ``accuracy``, ``auc``...; patient
            level prefixed ``patient_``); ``None`` where undefined.
        spread: sample standard deviation of a metric over folds (``"protocol"`` scope).
        intervals: ``(low, high)`` confidence interval of a metric (``"model"`` scope).
        interval_method: how the intervals were computed (e.g. a patient-clustered
            bootstrap).
        folds: how many separately trained splits the numbers summarise.
        threshold, threshold_source: the decision threshold the metrics used and how it
            was chosen (``"model"`` scope).
    """

    protocol: str
    title: str = ""
    patient_disjoint: bool = False
    scope: EvaluationScope = "protocol"
    description: str = ""
    data: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    spread: dict[str, float | None] = field(default_factory=dict)
    intervals: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    interval_method: str | None = None
    folds: int = 1
    threshold: float | None = None
    threshold_source: str | None = None

    @property
    def heading(self) -> str:
        """``"patient: patient-disjoint"`` / ``"paper: test patients also in training"``;
        the served model's own evaluation says ``"(this model)"``.

        Example:
            >>> Evaluation("paper").heading
            'paper: test patients also in training'
            >>> Evaluation("patient", patient_disjoint=True, scope="model").heading
            'patient (this model): patient-disjoint'
        """
        name = f"{self.protocol} (this model)" if self.scope == "model" else self.protocol
        if self.patient_disjoint:
            return f"{name}: patient-disjoint"
        return f"{name}: test patients also in training"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (intervals become two-element lists)."""
        data = asdict(self)
        data["intervals"] = {name: list(bounds) for name, bounds in self.intervals.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], protocol: str | None = None) -> Evaluation:
        """Inverse of :meth:`to_dict`; also reads the untyped entries of cards written before
        this class existed (``description``, ``patient_disjoint``, ``metrics`` whose ``*_sd``
        keys held the spread over folds and ``folds`` their number).

        Raises ``TypeError``/``ValueError`` for malformed entries.

        Example:
            >>> old = {"description": "mean of 5 splits", "patient_disjoint": True,
            ...        "metrics": {"folds": 5, "accuracy": 0.85, "accuracy_sd": 0.04}}
            >>> evaluation = Evaluation.from_dict(old, protocol="patient")
            >>> evaluation.metrics, evaluation.spread, evaluation.folds
            ({'accuracy': 0.85}, {'accuracy': 0.04}, 5)
        """
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TypeError(f"unknown evaluation fields: {sorted(unknown)}")
        data.setdefault("protocol", protocol or "")
        for name in ("metrics", "spread", "intervals"):
            if not isinstance(data.get(name, {}), dict):
                raise TypeError(f"evaluation {name} must be a JSON object")
        metrics = {
            key: value
            for key, value in data.get("metrics", {}).items()
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        }
        spread = dict(data.get("spread", {}))
        if "folds" in metrics and "folds" not in data:  # an untyped entry of an older card
            data["folds"] = int(metrics["folds"])
        for key in [key for key in metrics if key == "folds" or key.endswith("_sd")]:
            value = metrics.pop(key)
            if key != "folds":
                spread.setdefault(key[: -len("_sd")], value)
        data["metrics"], data["spread"] = metrics, spread
        data["intervals"] = {
            name: (bounds[0], bounds[1]) for name, bounds in data.get("intervals", {}).items()
        }
        if data.get("scope", "protocol") not in ("model", "protocol"):
            raise ValueError(f"evaluation scope must be 'model' or 'protocol': {data['scope']!r}")
        return cls(**data)


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
        evaluation: :class:`Evaluation` by name (``"patient"``, ``"paper"``, and the served
            model's own ``"patient-fold1 (this model)"``...).
        calibration: the post-hoc calibration of the logit, fitted on validation
            (:mod:`model.calibration`); None: the probabilities are uncalibrated.
        applicability: the training images' feature summary (:mod:`model.applicability`);
            None: no "is this image like the training images?" check is possible.
        training_images: the training images' sizes and colours (:mod:`model.quality`).
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
    evaluation: dict[str, Evaluation] = field(default_factory=dict)
    calibration: Calibration | None = None
    applicability: FeatureSummary | None = None
    training_images: ImageProfile | None = None
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

    @property
    def is_calibrated(self) -> bool:
        return self.calibration is not None

    def ordered_evaluations(self) -> list[tuple[str, Evaluation]]:
        """Evaluations with the patient-disjoint ones first (they are the ones to trust),
        then by name.

        Example:
            >>> card = ModelCard(name="demo", evaluation={
            ...     "paper": Evaluation("paper"),
            ...     "patient": Evaluation("patient", patient_disjoint=True)})
            >>> [name for name, _ in card.ordered_evaluations()]
            ['patient', 'paper']
        """
        return sorted(
            self.evaluation.items(), key=lambda item: (not item[1].patient_disjoint, item[0])
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        data["evaluation"] = {name: entry.to_dict() for name, entry in self.evaluation.items()}
        for name in ("calibration", "applicability", "training_images"):
            value = getattr(self, name)
            data[name] = None if value is None else value.to_dict()
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
        data["evaluation"] = {
            name: Evaluation.from_dict(entry, protocol=name)
            for name, entry in data.get("evaluation", {}).items()
        }
        for name, kind in (
            ("calibration", Calibration),
            ("applicability", FeatureSummary),
            ("training_images", ImageProfile),
        ):
            value = data.get(name)
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a JSON object or null")
            data[name] = None if value is None else kind.from_dict(value)
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
