"""Turn finished folds into the typed evaluations a model card carries: built here, once.

A fold's model gets the :class:`~model.card.Evaluation` of its own test split
(:func:`fold_evaluation`, scope ``"model"``, with the patient-clustered bootstrap CIs); a
protocol gets the mean and standard deviation over its folds (:func:`protocol_evaluation`,
scope ``"protocol"``: it describes the recipe, since each fold trained its own model). The
run's ``summary.json`` files, the served model's card and the report all use these.

Example:
    >>> from train.metrics import ThresholdChoice, evaluate_predictions
    >>> from train.protocols import PROTOCOLS
    >>> from train.run_folder import FoldDocument
    >>> metrics = evaluate_predictions([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.9],
    ...                                patients=["a", "b", "c", "d"], n_bootstrap=0)
    >>> audit = {"patient_disjoint": True, "images": {"train": 8, "val": 2, "test": 4},
    ...          "patients": {"train": 4, "val": 1, "test": 4}}
    >>> fold = FoldDocument("patient-fold1", ThresholdChoice(0.5, "default", "no validation"),
    ...                     metrics, audit)
    >>> evaluation = fold_evaluation(PROTOCOLS["patient"], fold)
    >>> evaluation.scope, evaluation.patient_disjoint, evaluation.metrics["accuracy"]
    ('model', True, 0.75)
    >>> evaluation.data
    'patient-fold1: 4 test images of 4 patients; trained on 8 images of 4 patients'
    >>> protocol_evaluation(PROTOCOLS["patient"], [fold, fold]).spread["accuracy"]
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.card import Evaluation
from train.console import counted
from train.metrics import mean_sd
from train.protocols import ProtocolSpec
from train.run_folder import FoldDocument

IMAGE_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "auc",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
)
"""Image-level metrics an evaluation carries (see :func:`train.metrics.image_metrics`)."""
PATIENT_METRICS: tuple[str, ...] = (
    "patient_recognition_rate",
    "patient_vote_accuracy",
    "patient_vote_sensitivity",
    "patient_vote_specificity",
    "patient_vote_auc",
)
"""Patient-level metrics (see :func:`train.metrics.patient_metrics`)."""
SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "auc",
    "sensitivity",
    "specificity",
    "f1",
    "patient_recognition_rate",
    "patient_vote_accuracy",
)
"""The metrics averaged over a protocol's folds."""


def scalar_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The scalar image- and patient-level metrics of an ``evaluate_predictions`` report.

    Example:
        >>> from train.metrics import evaluate_predictions
        >>> report = evaluate_predictions([0, 1], [0.2, 0.7], patients=["a", "b"],
        ...                               n_bootstrap=0)
        >>> metrics = scalar_metrics(report)
        >>> metrics["accuracy"], metrics["patient_vote_accuracy"]
        (1.0, 1.0)
    """
    image, patient = report["image"], report.get("patient", {})
    values = {name: image.get(name) for name in IMAGE_METRICS}
    values |= {name: patient[name] for name in PATIENT_METRICS if name in patient}
    return values


def fold_evaluation(
    spec: ProtocolSpec, document: FoldDocument, validation_fraction: float = 0.2
) -> Evaluation:
    """A fold's model on its own test split, with the bootstrap CIs of that split."""
    audit = document.audit
    bootstrap = document.metrics.get("bootstrap")
    intervals: dict[str, tuple[float | None, float | None]] = {}
    interval_method = None
    if bootstrap is not None:
        intervals = {
            name: (interval.get("low"), interval.get("high"))
            for name, interval in bootstrap["intervals"].items()
        }
        interval_method = (
            f"{round(100 * bootstrap['confidence'])}% {bootstrap['method']}, "
            f"{bootstrap['n_resamples']} resamples of the test patients"
        )
    threshold = document.threshold
    return Evaluation(
        protocol=spec.name,
        title=spec.title,
        patient_disjoint=document.patient_disjoint,
        scope="model",
        description=(
            f"this model on its own test split ({document.split}); threshold "
            f"{threshold.threshold:.3g} chosen by {threshold.method}. "
            + spec.describe(1, validation_fraction, bool(audit["images"].get("val")))
        ),
        data=_split_data(document.split, audit),
        metrics=scalar_metrics(document.metrics),
        intervals=intervals,
        interval_method=interval_method,
        folds=1,
        threshold=threshold.threshold,
        threshold_source=f"{threshold.method}: {threshold.reason}",
    )


def protocol_evaluation(
    spec: ProtocolSpec, documents: Sequence[FoldDocument], validation_fraction: float = 0.2
) -> Evaluation:
    """Mean and sample standard deviation of the key metrics over a protocol's folds."""
    means: dict[str, float | None] = {}
    spread: dict[str, float | None] = {}
    for name in SUMMARY_METRICS:
        mean, sd = mean_sd([scalar_metrics(d.metrics).get(name) for d in documents])
        if mean is not None:
            means[name], spread[name] = mean, sd
    has_validation = any(d.audit["images"].get("val") for d in documents)
    tests = [d.audit["images"]["test"] for d in documents]
    data = (
        f"{counted(len(documents), 'split')}, {min(tests)}-{max(tests)} test images each"
        if len(set(tests)) > 1
        else f"{counted(len(documents), 'split')}, {tests[0] if tests else 0} test images each"
    )
    return Evaluation(
        protocol=spec.name,
        title=spec.title,
        patient_disjoint=bool(documents) and all(d.patient_disjoint for d in documents),
        scope="protocol",
        description=(
            f"mean over {counted(len(documents), 'separately trained split')}. "
            + spec.describe(len(documents), validation_fraction, has_validation)
        ),
        data=data,
        metrics=means,
        spread=spread,
        folds=len(documents),
    )


def _split_data(name: str, audit: dict[str, Any]) -> str:
    images, patients = audit["images"], audit["patients"]
    return (
        f"{name}: {images['test']} test images of {patients['test']} patients; trained on "
        f"{images['train']} images of {patients['train']} patients"
    )
