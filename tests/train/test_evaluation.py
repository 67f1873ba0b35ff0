"""Typed evaluations from finished folds: a fold's own numbers and CIs, a protocol's mean."""

from __future__ import annotations

import numpy as np
import pytest

from train.evaluation import fold_evaluation, protocol_evaluation
from train.metrics import ThresholdChoice, evaluate_predictions
from train.protocols import PROTOCOLS
from train.run_folder import FoldDocument


def _fold(name: str, seed: int, disjoint: bool = True) -> FoldDocument:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 20)
    probabilities = 1 / (1 + np.exp(-rng.normal(np.where(labels, 1.5, -1.5), 1.5)))
    patients = np.repeat([f"p{i}" for i in range(8)], 5)
    metrics = evaluate_predictions(
        labels, probabilities, patients=patients, threshold=0.4, n_bootstrap=50, seed=seed
    )
    audit = {
        "patient_disjoint": disjoint,
        "images": {"train": 80, "val": 10, "test": 40},
        "patients": {"train": 16, "val": 2, "test": 8},
    }
    return FoldDocument(name, ThresholdChoice(0.4, "youden", "best J"), metrics, audit, 0.1)


def test_a_fold_evaluation_carries_its_own_metrics_and_bootstrap_intervals():
    document = _fold("patient-fold1", 0)
    evaluation = fold_evaluation(PROTOCOLS["patient"], document)
    assert (evaluation.scope, evaluation.protocol, evaluation.patient_disjoint) == (
        "model",
        "patient",
        True,
    )
    image = document.metrics["image"]
    assert evaluation.metrics["accuracy"] == image["accuracy"]
    assert evaluation.metrics["auc"] == image["auc"]
    patient = document.metrics["patient"]
    assert evaluation.metrics["patient_vote_accuracy"] == patient["patient_vote_accuracy"]
    assert not any(name.startswith("patient_patient") for name in evaluation.metrics)
    auc = document.metrics["bootstrap"]["intervals"]["auc"]
    assert evaluation.intervals["auc"] == (auc["low"], auc["high"])
    assert "50 resamples" in evaluation.interval_method
    assert evaluation.threshold == 0.4 and evaluation.threshold_source == "youden: best J"
    assert evaluation.data.startswith("patient-fold1: 40 test images of 8 patients")


def test_a_protocol_evaluation_is_the_mean_and_sd_over_folds():
    folds = [_fold(f"patient-fold{k}", k) for k in (1, 2, 3)]
    evaluation = protocol_evaluation(PROTOCOLS["patient"], folds)
    accuracies = [fold.metrics["image"]["accuracy"] for fold in folds]
    assert evaluation.metrics["accuracy"] == pytest.approx(np.mean(accuracies))
    assert evaluation.spread["accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    assert (evaluation.scope, evaluation.folds, evaluation.patient_disjoint) == (
        "protocol",
        3,
        True,
    )
    leaky = protocol_evaluation(PROTOCOLS["patient"], [*folds, _fold("x", 4, disjoint=False)])
    assert not leaky.patient_disjoint  # one leaking split is enough
