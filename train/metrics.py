"""Evaluation metrics for benign (0) / malignant (1) predictions, JSON-ready.

Conventions used throughout:

* ``y_prob`` is the predicted probability of *malignant*; an image is called malignant when
  ``y_prob >= threshold`` (the rule of ``model.predictor`` and of ``sklearn.metrics.roc_curve``).
* Every function returns plain ``dict``/``list``/``float``/``int``/``None`` (no numpy scalars,
  no NaN), so ``json.dumps(result, allow_nan=False)`` works. A metric that is undefined for
  the data (e.g. AUC when only one class is present) is ``None`` and its reason is listed under
  ``"undefined"``.

Patient-level accuracy comes in the two definitions found in the BreakHis literature:

* ``patient_recognition_rate`` (Spanhol et al. 2016): per patient the fraction of its images
  classified correctly, averaged over patients;
* ``patient_vote_accuracy``: per patient the mean malignancy probability of its images is
  thresholded, and the fraction of patients so classified correctly is reported.

Example:
    >>> report = evaluate_predictions([0, 1, 1], [0.2, 0.7, 0.4], patients=["a", "b", "b"])
    >>> report["image"]["accuracy"], report["patient"]["patient_recognition_rate"]
    (0.6666666666666666, 0.75)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from train.console import summarise_names, warn_once

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_CALIBRATION_BINS = 10
BOOTSTRAP_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "auc",
    "brier",
    "patient_recognition_rate",
    "patient_vote_accuracy",
)

ArrayLike = Sequence[float] | np.ndarray | pd.Series


# --- input handling -----------------------------------------------------------------------
def _inputs(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true)
    probabilities = np.asarray(y_prob, dtype=float)
    if labels.ndim != 1 or probabilities.ndim != 1 or len(labels) != len(probabilities):
        raise ValueError(
            f"y_true and y_prob must be 1-D and of equal length; got shapes {labels.shape} "
            f"and {probabilities.shape}"
        )
    if len(labels) and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"y_true must hold 0 (benign) / 1 (malignant); got {np.unique(labels)}")
    if not np.isfinite(probabilities).all() or ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError("y_prob must hold probabilities in [0, 1]")
    return labels.astype(int), probabilities


def _number(value: Any) -> float | None:
    """A plain float, or None for NaN/None (undefined)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _one_class_reason(labels: np.ndarray) -> str | None:
    present = set(labels.tolist())
    if len(labels) == 0:
        return "no images"
    if present == {0}:
        return "only benign images (class 1 absent): needs both classes"
    if present == {1}:
        return "only malignant images (class 0 absent): needs both classes"
    return None


# --- image level --------------------------------------------------------------------------
def image_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Image-level accuracy, balanced accuracy, AUC, sensitivity, specificity, precision, F1
    and the confusion matrix.

    Example:
        >>> metrics = image_metrics([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.4])
        >>> metrics["accuracy"], metrics["sensitivity"], metrics["auc"]
        (0.5, 0.5, 0.75)
    """
    labels, probabilities = _inputs(y_true, y_prob)
    predictions = (probabilities >= threshold).astype(int)
    undefined: dict[str, str] = {}
    n_benign, n_malignant = int((labels == 0).sum()), int((labels == 1).sum())

    def guarded(name: str, reason: str | None, compute: Any) -> float | None:
        if reason is not None:
            undefined[name] = reason
            return None
        return _number(compute())

    one_class = _one_class_reason(labels)
    tn, fp, fn, tp = (
        confusion_matrix(labels, predictions, labels=[0, 1]).ravel().tolist()
        if len(labels)
        else (0, 0, 0, 0)
    )
    result = {
        "n_images": len(labels),
        "n_benign": n_benign,
        "n_malignant": n_malignant,
        "threshold": float(threshold),
        "accuracy": guarded(
            "accuracy",
            "no images" if not len(labels) else None,
            lambda: accuracy_score(labels, predictions),
        ),
        "balanced_accuracy": guarded(
            "balanced_accuracy", one_class, lambda: balanced_accuracy_score(labels, predictions)
        ),
        "auc": guarded("auc", one_class, lambda: roc_auc_score(labels, probabilities)),
        "sensitivity": guarded(
            "sensitivity",
            None if n_malignant else "no malignant images",
            lambda: recall_score(labels, predictions, pos_label=1),
        ),
        "specificity": guarded(
            "specificity",
            None if n_benign else "no benign images",
            lambda: recall_score(labels, predictions, pos_label=0),
        ),
        "precision": guarded(
            "precision",
            None if tp + fp else "no image predicted malignant",
            lambda: precision_score(labels, predictions, pos_label=1),
        ),
        "f1": guarded(
            "f1",
            None if tp + fp + fn else "no malignant image, none predicted malignant",
            lambda: f1_score(labels, predictions, pos_label=1),
        ),
        "confusion_matrix": {
            "tn": tn,
            "fp": fp,
            "fn": fn,
            "tp": tp,
            "matrix": [[tn, fp], [fn, tp]],
            "rows": "true benign, true malignant",
            "columns": "predicted benign, predicted malignant",
        },
        "undefined": undefined,
    }
    return result


# --- patient level ------------------------------------------------------------------------
def _patient_table(
    labels: np.ndarray, probabilities: np.ndarray, patients: ArrayLike, threshold: float
) -> pd.DataFrame:
    patient_ids = pd.Series(np.asarray(patients, dtype=object), name="patient")
    if len(patient_ids) != len(labels):
        raise ValueError("patients must have one entry per image")
    if patient_ids.isna().any():
        raise ValueError("every image needs a patient id for patient-level metrics")
    frame = pd.DataFrame(
        {
            "patient": patient_ids.astype(str),
            "label": labels,
            "probability": probabilities,
            "correct": (probabilities >= threshold).astype(int) == labels,
        }
    )
    table = frame.groupby("patient", sort=True).agg(
        label=("label", "mean"),
        n_images=("label", "size"),
        fraction_correct=("correct", "mean"),
        mean_probability=("probability", "mean"),
    )
    mixed = table.index[(table["label"] > 0) & (table["label"] < 1)]
    if len(mixed):
        warn_once(
            logger,
            "patients with images of both classes get their majority label: %s",
            summarise_names(list(mixed)),
        )
    # Majority label per patient; a tie counts as malignant (the cautious call).
    table["label"] = (table["label"] >= 0.5).astype(int)
    table["vote"] = (table["mean_probability"] >= threshold).astype(int)
    return table


def patient_metrics(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    patients: ArrayLike,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Patient-level accuracy in both definitions, plus vote-level sensitivity/specificity/AUC
    and a per-patient table.

    Example:
        >>> result = patient_metrics([0, 1, 1], [0.2, 0.7, 0.4], ["a", "b", "b"])
        >>> result["patient_recognition_rate"], result["patient_vote_accuracy"]
        (0.75, 1.0)
    """
    labels, probabilities = _inputs(y_true, y_prob)
    table = _patient_table(labels, probabilities, patients, threshold)
    votes = image_metrics(
        table["label"].to_numpy(), table["mean_probability"].to_numpy(), threshold
    )
    return {
        "n_patients": len(table),
        "patient_recognition_rate": _number(table["fraction_correct"].mean()),
        "patient_vote_accuracy": votes["accuracy"],
        "patient_vote_sensitivity": votes["sensitivity"],
        "patient_vote_specificity": votes["specificity"],
        "patient_vote_auc": votes["auc"],
        "undefined": {f"patient_vote_{key}": reason for key, reason in votes["undefined"].items()},
        "per_patient": [
            {
                "patient": str(patient),
                "label": int(row.label),
                "n_images": int(row.n_images),
                "fraction_correct": float(row.fraction_correct),
                "mean_probability": float(row.mean_probability),
                "vote": int(row.vote),
            }
            for patient, row in table.iterrows()
        ],
    }


def per_magnification_metrics(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    magnifications: ArrayLike,
    patients: ArrayLike | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """``image_metrics`` (and patient metrics when ``patients`` is given) per magnification,
    keyed ``"40X"``, ``"100X"``...; images with unknown magnification are left out.

    Example:
        >>> per_mag = per_magnification_metrics([0, 1], [0.2, 0.9], [40, 100])
        >>> sorted(per_mag), per_mag["40X"]["n_images"]
        (['100X', '40X'], 1)
    """
    labels, probabilities = _inputs(y_true, y_prob)
    magnification_series = pd.Series(magnifications, dtype="Int64")
    patient_array = None if patients is None else np.asarray(patients, dtype=object)
    result: dict[str, dict[str, Any]] = {}
    for magnification in sorted(magnification_series.dropna().unique()):
        mask = (magnification_series == magnification).fillna(False).to_numpy(dtype=bool)
        entry = image_metrics(labels[mask], probabilities[mask], threshold)
        if patient_array is not None:
            patient_level = patient_metrics(
                labels[mask], probabilities[mask], patient_array[mask], threshold
            )
            patient_level.pop("per_patient")
            entry["patient"] = patient_level
        result[f"{int(magnification)}X"] = entry
    return result


# --- calibration and ROC ------------------------------------------------------------------
def calibration(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = DEFAULT_CALIBRATION_BINS
) -> dict[str, Any]:
    """Brier score, expected calibration error and reliability-diagram data.

    ECE uses ``n_bins`` equal-width bins of the malignancy probability: bin ``k`` holds
    ``k/n <= p < (k+1)/n`` (``p = 1`` in the last bin); ECE is the image-weighted mean over
    bins of ``|fraction malignant - mean predicted probability|``.

    Example:
        >>> result = calibration([0, 1], [0.25, 0.75], n_bins=2)
        >>> result["brier"], result["ece"]
        (0.0625, 0.25)
    """
    labels, probabilities = _inputs(y_true, y_prob)
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if not len(labels):
        return {
            "brier": None,
            "ece": None,
            "n_bins": n_bins,
            "bins": [],
            "undefined": {"brier": "no images", "ece": "no images"},
        }
    bin_ids = np.minimum((probabilities * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for bin_id in range(n_bins):
        in_bin = bin_ids == bin_id
        count = int(in_bin.sum())
        mean_predicted = float(probabilities[in_bin].mean()) if count else None
        fraction_malignant = float(labels[in_bin].mean()) if count else None
        if count:
            ece += count / len(labels) * abs(fraction_malignant - mean_predicted)
        bins.append(
            {
                "lower": bin_id / n_bins,
                "upper": (bin_id + 1) / n_bins,
                "count": count,
                "mean_predicted": mean_predicted,
                "fraction_malignant": fraction_malignant,
            }
        )
    return {
        "brier": float(brier_score_loss(labels, probabilities, pos_label=1)),
        "ece": float(ece),
        "n_bins": n_bins,
        "binning": "equal-width bins of the malignancy probability on [0, 1]",
        "bins": bins,
        "undefined": {},
    }


def roc_points(y_true: ArrayLike, y_prob: ArrayLike) -> dict[str, Any]:
    """ROC curve points (``sklearn.metrics.roc_curve``) and AUC; the first threshold, +inf in
    scikit-learn, is written as None. Empty lists and a reason when only one class is present.

    Example:
        >>> roc = roc_points([0, 1], [0.3, 0.8])
        >>> roc["fpr"], roc["tpr"], roc["thresholds"]
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [None, 0.8, 0.3])
    """
    labels, probabilities = _inputs(y_true, y_prob)
    reason = _one_class_reason(labels)
    if reason is not None:
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": None, "undefined": {"roc": reason}}
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    return {
        "fpr": [float(value) for value in fpr],
        "tpr": [float(value) for value in tpr],
        "thresholds": [float(value) if np.isfinite(value) else None for value in thresholds],
        "auc": float(roc_auc_score(labels, probabilities)),
        "undefined": {},
    }


# --- threshold choice ---------------------------------------------------------------------
# Probabilities are clipped this far from 0 and 1 before taking logits: a saturated float32
# sigmoid gives exactly 1.0 (logit +inf), which would push the logit midpoint to infinity.
LOGIT_CLIP = 1e-12


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold picked on validation data, and why.

    ``optimal_interval`` is ``(low, high)``: every threshold ``t`` with ``low < t <= high``
    reaches the best Youden's J on validation (``None`` for the default fallback).

    Example:
        >>> choice = select_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
        >>> choice.threshold, choice.method, choice.optimal_interval
        (0.5, 'youden', (0.2, 0.8))
    """

    threshold: float
    method: str  # "youden" or "default"
    reason: str
    youden_j: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    optimal_interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdChoice:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> choice = select_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
            >>> ThresholdChoice.from_dict(choice.to_dict()) == choice
            True
        """
        data = dict(data)
        if data.get("optimal_interval") is not None:
            data["optimal_interval"] = tuple(data["optimal_interval"])
        return cls(**data)


def _logit(probability: float) -> float:
    clipped = min(max(probability, LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(clipped) - math.log1p(-clipped)


def logit_midpoint(low: float, high: float) -> float:
    """A threshold ``t`` with ``low < t <= high``: the midpoint of the two in logit space.

    In logit space the midpoint is the probability whose odds are the geometric mean of the
    two odds, so it sits "between" 1e-8 and 0.01 (at about 1e-5) as much as between 0.6 and
    0.7. When rounding leaves no room (scores a few ulps apart, or beyond ``LOGIT_CLIP``), the
    arithmetic midpoint or ``high`` itself is returned, so the inequality always holds.

    Example:
        >>> round(logit_midpoint(0.7, 0.9), 5)   # odds sqrt(7/3 * 9) = sqrt(21)
        0.82087
    """
    log_odds = (_logit(low) + _logit(high)) / 2
    candidates = (1.0 / (1.0 + math.exp(-log_odds)), (low + high) / 2, high)
    return next(value for value in candidates if low < value <= high)


def _optimal_intervals(
    scores: np.ndarray, youden: np.ndarray, best: float
) -> list[tuple[float, float]]:
    """Threshold intervals ``(low, high]`` on which J is maximal, from high to low scores.

    ``scores`` are the distinct validation scores in decreasing order (``roc_curve``'s finite
    thresholds) and ``youden[i]`` is J for ``t = scores[i]``; every ``t`` in
    ``(scores[i + 1], scores[i]]`` classifies validation the same way, so it has that J too.
    Neighbouring optimal points merge into one interval.
    """
    optimal = np.isclose(youden, best)
    intervals: list[tuple[float, float]] = []
    position = 0
    while position < len(scores):
        if not optimal[position]:
            position += 1
            continue
        first = position
        while position + 1 < len(scores) and optimal[position + 1]:
            position += 1
        # J > 0 is never reached at the lowest score (everything malignant: J = 0), so an
        # optimal point always has a lower score below it.
        low = float(scores[position + 1]) if position + 1 < len(scores) else 0.0
        intervals.append((low, float(scores[first])))
        position += 1
    return intervals


def select_threshold(
    y_true: ArrayLike, y_prob: ArrayLike, default: float = DEFAULT_THRESHOLD
) -> ThresholdChoice:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 on validation data.

    The best J is usually reached on a whole interval of thresholds, not at one point: with an
    overconfident model on a small validation set every threshold between the highest benign
    score (say 1e-8) and the lowest malignant score (say 0.99999) separates validation
    perfectly. Picking one of the observed scores (what ``roc_curve`` offers) would then put the
    threshold at an extreme and make test specificity or sensitivity collapse. So:

    1. if ``default`` (0.5) reaches the best J on validation, it is kept;
    2. otherwise the threshold is the midpoint, in logit space, of the optimal interval
       ``(low, high]``: ``low`` is the highest validation score on the benign side and
       ``high`` the lowest on the malignant side (:func:`logit_midpoint`). When several
       separate intervals tie, the one nearest ``default`` (in logit space) wins.

    Falls back to ``default`` when validation is degenerate: no images, one class only, or no
    threshold better than chance (J <= 0). The rule stays ``y_prob >= threshold``; the
    reported sensitivity and specificity are those of the chosen threshold on validation.

    Example:
        >>> select_threshold([0, 0, 1, 1], [1e-9, 2e-8, 0.99999, 1.0]).threshold
        0.5
        >>> round(select_threshold([0, 0, 1, 1], [0.6, 0.7, 0.9, 0.95]).threshold, 5)
        0.82087
        >>> select_threshold([1, 1], [0.3, 0.9]).threshold   # one class: default
        0.5
    """
    labels, probabilities = _inputs(y_true, y_prob)
    reason = _one_class_reason(labels)
    if reason is not None:
        return ThresholdChoice(default, "default", f"validation has {reason}")
    fpr, tpr, thresholds = roc_curve(labels, probabilities, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    youden = tpr - fpr
    best = float(youden.max())
    if best <= 0:
        return ThresholdChoice(
            default,
            "default",
            "no threshold beats chance on validation (Youden J <= 0)",
            youden_j=best,
        )
    intervals = _optimal_intervals(thresholds, youden, best)

    def rates(threshold: float) -> tuple[float, float]:
        predicted = probabilities >= threshold
        return float(predicted[labels == 1].mean()), float((~predicted)[labels == 0].mean())

    sensitivity, specificity = rates(default)
    if np.isclose(sensitivity + specificity - 1, best):
        # J(default) is maximal, so default lies in one of the optimal intervals.
        interval = next((iv for iv in intervals if iv[0] < default <= iv[1]), None)
        chosen, how = default, f"the default {default:g} reaches it"
    else:
        target = _logit(default)

        def distance(interval: tuple[float, float]) -> float:
            low, high = _logit(interval[0]), _logit(interval[1])
            return max(low - target, target - high, 0.0)

        interval = min(intervals, key=distance)
        chosen = logit_midpoint(*interval)
        how = (
            f"the default {default:g} does not, so the logit-space midpoint of the optimal "
            f"interval ({interval[0]:.6g}, {interval[1]:.6g}] is used"
        )
        sensitivity, specificity = rates(chosen)
    return ThresholdChoice(
        float(chosen),
        "youden",
        f"maximises Youden's J on validation (J = {best:.3f}); {how}",
        youden_j=sensitivity + specificity - 1,
        sensitivity=sensitivity,
        specificity=specificity,
        optimal_interval=interval,
    )


# --- patient-clustered bootstrap ----------------------------------------------------------
def _rates_from_counts(tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, tp: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        total = tn + fp + fn + tp
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        return {
            "accuracy": (tp + tn) / total,
            "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
        }


def resampled_auc(
    labels: np.ndarray,
    probabilities: np.ndarray,
    patient_codes: np.ndarray,
    multiplicity: np.ndarray,
) -> np.ndarray:
    """ROC AUC of every bootstrap resample at once: resample ``r`` counts each image of
    patient ``p`` ``multiplicity[r, p]`` times (NaN where a resample drew one class only).

    The AUC is the Mann-Whitney statistic (ties count one half), which is what
    ``sklearn.metrics.roc_auc_score`` computes with these sample weights; here it comes from
    per-patient counts at each distinct probability, so 1000 resamples cost a few matrix
    products instead of 1000 calls (the test checks it against scikit-learn).

    Example:
        >>> resampled_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.8, 0.9]),
        ...               np.array([0, 1, 2, 3]), np.array([[1.0, 1, 1, 1], [2, 0, 1, 1]]))
        array([0.875, 1.   ])
    """
    levels, level_of = np.unique(probabilities, return_inverse=True)
    n_patients = multiplicity.shape[1]
    positives = np.zeros((n_patients, len(levels)))
    negatives = np.zeros((n_patients, len(levels)))
    np.add.at(positives, (patient_codes[labels == 1], level_of[labels == 1]), 1.0)
    np.add.at(negatives, (patient_codes[labels == 0], level_of[labels == 0]), 1.0)
    drawn_positives, drawn_negatives = multiplicity @ positives, multiplicity @ negatives
    # Negatives strictly below each level, plus half of those tied with it.
    below = np.cumsum(drawn_negatives, axis=1) - drawn_negatives / 2
    pairs = drawn_positives.sum(axis=1) * drawn_negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (drawn_positives * below).sum(axis=1) / pairs
    return np.where(pairs > 0, auc, np.nan)


def patient_bootstrap_ci(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    patients: ArrayLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Patient-clustered percentile bootstrap confidence intervals of ``BOOTSTRAP_METRICS``.

    Each resample draws as many patients as there are, with replacement, and keeps all images
    of every drawn patient (a patient drawn twice counts twice), because images of one patient
    are not independent. Resamples where a metric is undefined (e.g. AUC with one class) are
    left out of that metric's interval; ``n_valid`` says how many remained.

    Example:
        >>> ci = patient_bootstrap_ci([0, 0, 1, 1], [0.2, 0.4, 0.6, 0.3], ["a", "b", "c", "d"],
        ...                           n_resamples=200, seed=1)
        >>> sorted(ci["intervals"]["accuracy"])
        ['estimate', 'high', 'low', 'n_valid']
    """
    labels, probabilities = _inputs(y_true, y_prob)
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    patient_codes, patient_ids = pd.factorize(pd.Series(np.asarray(patients, dtype=object)))
    if len(patient_codes) != len(labels) or (patient_codes < 0).any():
        raise ValueError("patients must give one non-missing id per image")
    n_patients = len(patient_ids)
    predictions = (probabilities >= threshold).astype(int)

    # Per-patient sufficient statistics: metrics of a resample are sums of these.
    def per_patient(values: np.ndarray) -> np.ndarray:
        return np.bincount(patient_codes, weights=values, minlength=n_patients)

    counts = {
        "tn": per_patient(((labels == 0) & (predictions == 0)).astype(float)),
        "fp": per_patient(((labels == 0) & (predictions == 1)).astype(float)),
        "fn": per_patient(((labels == 1) & (predictions == 0)).astype(float)),
        "tp": per_patient(((labels == 1) & (predictions == 1)).astype(float)),
    }
    n_images = per_patient(np.ones(len(labels)))
    squared_error = per_patient((probabilities - labels) ** 2)
    table = _patient_table(labels, probabilities, patients, threshold)
    table = table.loc[[str(patient) for patient in patient_ids]]  # align with the codes
    fraction_correct = table["fraction_correct"].to_numpy()
    vote_correct = (table["vote"] == table["label"]).to_numpy(dtype=float)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    # multiplicity[r, p]: how often patient p was drawn in resample r.
    multiplicity = np.zeros((n_resamples, n_patients))
    np.add.at(multiplicity, (np.arange(n_resamples)[:, None], draws), 1.0)

    resampled = _rates_from_counts(
        *(multiplicity @ counts[key] for key in ("tn", "fp", "fn", "tp"))
    )
    resampled["brier"] = (multiplicity @ squared_error) / (multiplicity @ n_images)
    resampled["patient_recognition_rate"] = (multiplicity @ fraction_correct) / n_patients
    resampled["patient_vote_accuracy"] = (multiplicity @ vote_correct) / n_patients
    auc = resampled_auc(labels, probabilities, patient_codes, multiplicity)
    resampled["auc"] = auc

    point = {
        **image_metrics(labels, probabilities, threshold),
        "brier": float(np.mean((probabilities - labels) ** 2)),
        "patient_recognition_rate": float(fraction_correct.mean()),
        "patient_vote_accuracy": float(vote_correct.mean()),
    }
    tail = (1 - confidence) / 2
    intervals = {}
    for name in BOOTSTRAP_METRICS:
        values = resampled[name][np.isfinite(resampled[name])]
        low, high = (
            (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
            if len(values)
            else (None, None)
        )
        intervals[name] = {
            "estimate": _number(point[name]),
            "low": low,
            "high": high,
            "n_valid": len(values),
        }
    return {
        "method": "patient-clustered percentile bootstrap",
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": confidence,
        "n_patients": n_patients,
        "threshold": float(threshold),
        "intervals": intervals,
    }


# --- everything ---------------------------------------------------------------------------
def evaluate_predictions(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    *,
    patients: ArrayLike | None = None,
    magnifications: ArrayLike | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
) -> dict[str, Any]:
    """The full JSON-ready evaluation report of one set of predictions.

    Keys: ``image``, ``calibration``, ``roc``, and when given the data, ``patient``,
    ``per_magnification`` and ``bootstrap`` (patients needed; ``n_bootstrap=0`` skips it).

    Example:
        >>> report = evaluate_predictions(test.label, probs, patients=test.patient,
        ...                               magnifications=test.magnification)  # doctest: +SKIP
        >>> json.dumps(report, allow_nan=False)                              # doctest: +SKIP
    """
    report: dict[str, Any] = {
        "threshold": float(threshold),
        "image": image_metrics(y_true, y_prob, threshold),
        "calibration": calibration(y_true, y_prob, n_bins),
        "roc": roc_points(y_true, y_prob),
    }
    if patients is not None:
        report["patient"] = patient_metrics(y_true, y_prob, patients, threshold)
    if magnifications is not None:
        report["per_magnification"] = per_magnification_metrics(
            y_true, y_prob, magnifications, patients, threshold
        )
    if patients is not None and n_bootstrap > 0:
        report["bootstrap"] = patient_bootstrap_ci(
            y_true,
            y_prob,
            patients,
            threshold=threshold,
            n_resamples=n_bootstrap,
            seed=seed,
            confidence=confidence,
        )
    return report


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the defined values (sd 0 for one value), as the
    run's summaries compute them.

    Example:
        >>> mean_sd([0.9, 1.0, None])
        (0.95, 0.07071067811865474)
    """
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return None, None
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return float(np.mean(defined)), sd
