"""Metrics against values computed by hand (see the comments), and their edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.metrics import (
    BOOTSTRAP_METRICS,
    calibration,
    evaluate_predictions,
    image_metrics,
    patient_bootstrap_ci,
    patient_metrics,
    per_magnification_metrics,
    roc_points,
    select_threshold,
)

# Eight images; at threshold 0.5 the predictions are [0, 0, 0, 1, 1, 0, 1, 1]:
#   TN = images 0, 1, 2   FP = image 3   TP = images 4, 6, 7   FN = image 5
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 1]
Y_PROB = [0.1, 0.45, 0.35, 0.8, 0.7, 0.3, 0.9, 0.65]
PATIENTS = ["a", "b", "b", "b", "c", "c", "c", "d"]
MAGNIFICATIONS = [40, 40, 100, 100, 40, 40, 100, 100]


def assert_json_clean(result: object) -> None:
    json.dumps(result, allow_nan=False)  # raises on NaN/inf and on numpy scalars


# --- image level --------------------------------------------------------------------------
def test_image_metrics_by_hand() -> None:
    result = image_metrics(Y_TRUE, Y_PROB)
    assert result["confusion_matrix"]["matrix"] == [[3, 1], [1, 3]]
    assert (result["n_images"], result["n_benign"], result["n_malignant"]) == (8, 4, 4)
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["sensitivity"] == pytest.approx(3 / 4)  # TP / (TP + FN)
    assert result["specificity"] == pytest.approx(3 / 4)  # TN / (TN + FP)
    assert result["balanced_accuracy"] == pytest.approx(3 / 4)
    assert result["precision"] == pytest.approx(3 / 4)  # TP / (TP + FP)
    assert result["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # AUC = P(malignant score > benign score) over the 16 pairs:
    # 0.7 beats 0.1/0.45/0.35 (3), 0.3 beats 0.1 (1), 0.9 beats all (4), 0.65 beats 3 -> 11/16
    assert result["auc"] == pytest.approx(11 / 16)
    assert result["undefined"] == {}
    assert_json_clean(result)


def test_threshold_is_inclusive_and_changes_predictions() -> None:
    # p >= threshold is malignant: at exactly 0.65 image 7 (p = 0.65) is still a TP ...
    assert image_metrics(Y_TRUE, Y_PROB, threshold=0.65)["confusion_matrix"]["tp"] == 3
    # ... just above it, image 7 becomes a FN: TP 2 (images 4, 6), FN 2, FP 1 (image 3)
    assert image_metrics(Y_TRUE, Y_PROB, threshold=0.66)["confusion_matrix"]["matrix"] == [
        [3, 1],
        [2, 2],
    ]
    # at 0.75 images 4 (0.7) and 7 (0.65) are benign calls: TP 1 (image 6), FN 3, FP 1
    high = image_metrics(Y_TRUE, Y_PROB, threshold=0.75)
    assert high["confusion_matrix"]["matrix"] == [[3, 1], [3, 1]]
    assert high["sensitivity"] == pytest.approx(1 / 4)
    assert high["accuracy"] == pytest.approx(4 / 8)


def test_one_class_only_reports_none_with_reason() -> None:
    result = image_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert result["auc"] is None
    assert "only malignant" in result["undefined"]["auc"]
    assert result["specificity"] is None
    assert result["balanced_accuracy"] is None
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert_json_clean(result)

    benign_only = image_metrics([0, 0], [0.1, 0.2])
    assert benign_only["auc"] is None and "only benign" in benign_only["undefined"]["auc"]
    assert benign_only["precision"] is None and benign_only["f1"] is None
    assert benign_only["specificity"] == 1.0


def test_empty_input() -> None:
    result = image_metrics([], [])
    assert result["accuracy"] is None and result["auc"] is None
    assert result["confusion_matrix"]["matrix"] == [[0, 0], [0, 0]]
    assert_json_clean(result)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "message"),
    [
        ([0, 1], [0.5], "equal length"),
        ([0, 2], [0.1, 0.2], "0 \\(benign\\)"),
        ([0], [1.5], "\\[0, 1\\]"),
    ],
)
def test_bad_inputs_raise(y_true, y_prob, message) -> None:
    with pytest.raises(ValueError, match=message):
        image_metrics(y_true, y_prob)


# --- patient level ------------------------------------------------------------------------
def test_patient_metrics_both_definitions_by_hand() -> None:
    result = patient_metrics(Y_TRUE, Y_PROB, PATIENTS)
    # Fraction of correct images: a 1/1, b 2/3 (image 3 wrong), c 2/3 (image 5 wrong), d 1/1
    assert result["patient_recognition_rate"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 1) / 4)
    # Mean probabilities: a 0.1 -> benign (right), b 1.6/3 = 0.533 -> malignant (wrong),
    # c 1.9/3 = 0.633 -> malignant (right), d 0.65 -> malignant (right): 3 of 4
    assert result["patient_vote_accuracy"] == pytest.approx(3 / 4)
    assert result["patient_vote_sensitivity"] == 1.0
    assert result["patient_vote_specificity"] == pytest.approx(1 / 2)
    assert result["n_patients"] == 4
    by_patient = {row["patient"]: row for row in result["per_patient"]}
    assert by_patient["b"]["mean_probability"] == pytest.approx(1.6 / 3)
    assert by_patient["b"]["n_images"] == 3
    assert by_patient["b"]["vote"] == 1 and by_patient["b"]["label"] == 0
    assert_json_clean(result)


def test_a_patient_with_as_many_benign_as_malignant_images_counts_as_malignant() -> None:
    """The 50/50 patient's label is malignant (the cautious call), so its benign vote is
    a miss: patient vote accuracy 1/2, not 2/2."""
    result = patient_metrics([0, 1, 0, 0], [0.2, 0.3, 0.1, 0.2], ["tie", "tie", "b", "b"])
    by_patient = {row["patient"]: row for row in result["per_patient"]}
    assert by_patient["tie"]["label"] == 1 and by_patient["tie"]["vote"] == 0
    assert by_patient["b"]["label"] == 0
    assert result["patient_vote_accuracy"] == pytest.approx(1 / 2)


def test_patient_metrics_need_patient_ids() -> None:
    with pytest.raises(ValueError, match="one entry per image"):
        patient_metrics([0, 1], [0.1, 0.9], ["a"])
    with pytest.raises(ValueError, match="needs a patient id"):
        patient_metrics([0, 1], [0.1, 0.9], ["a", None])


def test_per_magnification_by_hand() -> None:
    result = per_magnification_metrics(Y_TRUE, Y_PROB, MAGNIFICATIONS, PATIENTS)
    assert list(result) == ["40X", "100X"]
    # 40X: images 0, 1, 4, 5 -> y [0, 0, 1, 1], p [0.1, 0.45, 0.7, 0.3], pred [0, 0, 1, 0]
    forty = result["40X"]
    assert forty["confusion_matrix"]["matrix"] == [[2, 0], [1, 1]]
    assert forty["accuracy"] == pytest.approx(3 / 4)
    assert forty["sensitivity"] == pytest.approx(1 / 2)
    assert forty["specificity"] == 1.0
    assert forty["auc"] == pytest.approx(3 / 4)  # 0.7 beats both, 0.3 beats 0.1
    # 100X: images 2, 3, 6, 7 -> y [0, 0, 1, 1], p [0.35, 0.8, 0.9, 0.65], pred [0, 1, 1, 1]
    hundred = result["100X"]
    assert hundred["confusion_matrix"]["matrix"] == [[1, 1], [0, 2]]
    assert hundred["specificity"] == pytest.approx(1 / 2)
    assert hundred["auc"] == pytest.approx(3 / 4)
    # 40X patients: a {0: right}, b {1: right}, c {4: right, 5: wrong} -> (1 + 1 + 0.5) / 3
    assert forty["patient"]["patient_recognition_rate"] == pytest.approx(2.5 / 3)
    assert_json_clean(result)


def test_per_magnification_skips_unknown() -> None:
    result = per_magnification_metrics([0, 1, 1], [0.2, 0.9, 0.1], [40, None, 40])
    assert list(result) == ["40X"]
    assert result["40X"]["n_images"] == 2


# --- calibration and ROC ------------------------------------------------------------------
def test_calibration_by_hand() -> None:
    result = calibration(Y_TRUE, Y_PROB, n_bins=5)
    # Squared errors 0.01 .2025 .1225 .64 .09 .49 .01 .1225 sum to 1.6875
    assert result["brier"] == pytest.approx(1.6875 / 8)
    # Bins of width 0.2: [0.1|y0] [0.35 y0, 0.3 y1] [0.45|y0] [0.7 y1, 0.65 y1] [0.8 y0, 0.9 y1]
    # |gap| x count: 0.1x1 + 0.175x2 + 0.45x1 + 0.325x2 + 0.35x2 = 2.25, over 8 images
    assert result["ece"] == pytest.approx(2.25 / 8)
    assert result["n_bins"] == 5
    assert [b["count"] for b in result["bins"]] == [1, 2, 1, 2, 2]
    assert result["bins"][1]["mean_predicted"] == pytest.approx(0.325)
    assert result["bins"][1]["fraction_malignant"] == pytest.approx(0.5)
    assert (result["bins"][4]["lower"], result["bins"][4]["upper"]) == (0.8, 1.0)
    assert_json_clean(result)


def test_calibration_edges_and_empty_bins() -> None:
    result = calibration([0, 1, 1], [0.0, 1.0, 0.5])  # default 10 bins
    counts = [b["count"] for b in result["bins"]]
    assert counts == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # 0.5 opens bin 5, 1.0 closes bin 9
    assert result["bins"][1]["mean_predicted"] is None
    # gaps: bin0 |0 - 0| = 0, bin5 |1 - 0.5| = 0.5, bin9 |1 - 1| = 0 -> 0.5 / 3
    assert result["ece"] == pytest.approx(0.5 / 3)
    assert_json_clean(result)


def test_roc_points_by_hand() -> None:
    roc = roc_points(Y_TRUE, Y_PROB)
    assert roc["thresholds"][0] is None  # scikit-learn's +inf start
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert roc["auc"] == pytest.approx(11 / 16)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(11 / 16)
    # At threshold 0.65: TP 3 of 4, FP 1 of 4
    at = roc["thresholds"].index(0.65)
    assert (roc["fpr"][at], roc["tpr"][at]) == (0.25, 0.75)
    assert_json_clean(roc)
    single = roc_points([1, 1], [0.2, 0.3])
    assert (
        single["auc"] is None
        and single["fpr"] == []
        and "only malignant" in single["undefined"]["roc"]
    )


# --- threshold selection ------------------------------------------------------------------
def test_youden_threshold_by_hand() -> None:
    # J (tpr - fpr) at each score: 0.9 .25, 0.8 0, 0.7 .25, 0.65 .5, 0.45 .25, 0.35 0, 0.3 .25
    # The best J = .5 holds for 0.45 < t <= 0.65, which contains the default 0.5: kept.
    choice = select_threshold(Y_TRUE, Y_PROB)
    assert choice.method == "youden"
    assert choice.threshold == 0.5
    assert choice.optimal_interval == (0.45, 0.65)
    assert choice.youden_j == pytest.approx(0.5)
    assert (choice.sensitivity, choice.specificity) == (0.75, 0.75)
    assert "default 0.5 reaches it" in choice.reason
    assert_json_clean(choice.to_dict())


def test_overconfident_separation_keeps_the_default_not_an_extreme_score() -> None:
    # Every t in (2e-7, 0.9999] separates perfectly; roc_curve alone would offer 0.9999 or
    # the saturated 1.0 (what smoke runs chose before), here 0.5 is as good on validation.
    choice = select_threshold([0, 0, 0, 1, 1, 1], [6e-9, 1e-8, 2e-7, 0.9999, 1.0, 1.0])
    assert choice.threshold == 0.5
    assert choice.optimal_interval == (2e-7, 0.9999)
    assert (choice.youden_j, choice.sensitivity, choice.specificity) == (1.0, 1.0, 1.0)


def test_logit_midpoint_when_the_default_is_outside_the_optimal_interval() -> None:
    # Optimal: 0.7 < t <= 0.9 (J = 1). Logit midpoint: odds sqrt(7/3 * 9/1) = sqrt(21),
    # t = sqrt(21) / (1 + sqrt(21)) = 0.820871...
    choice = select_threshold([0, 0, 1, 1], [0.6, 0.7, 0.9, 0.95])
    assert choice.threshold == pytest.approx(21**0.5 / (1 + 21**0.5))
    assert choice.optimal_interval == (0.7, 0.9)
    assert (choice.youden_j, choice.sensitivity, choice.specificity) == (1.0, 1.0, 1.0)
    assert "midpoint" in choice.reason
    # Below the default: 1e-9 < t <= 0.01; log-odds (ln(1e-9 / (1 - 1e-9)) + ln(1 / 99)) / 2.
    low = select_threshold([0, 0, 1, 1], [0.0, 1e-9, 0.01, 0.02])
    odds = (1e-9 / (1 - 1e-9) * (0.01 / 0.99)) ** 0.5
    assert low.threshold == pytest.approx(odds / (1 + odds))  # about 3.2e-6
    assert 1e-9 < low.threshold <= 0.01


def test_saturated_scores_give_a_threshold_strictly_inside_the_interval() -> None:
    # A float32 sigmoid saturates at exactly 1.0 (logit +inf): the midpoint stays finite and
    # the >= rule still classifies validation as on the best ROC point.
    choice = select_threshold([0, 0, 1, 1], [0.2, 0.9, 1.0, 1.0])
    assert choice.optimal_interval == (0.9, 1.0)
    assert 0.9 < choice.threshold < 1.0
    assert choice.youden_j == 1.0
    # Scores one ulp apart leave no room in logit space: high itself is used.
    high = float(np.nextafter(0.95, 1.0))
    tight = select_threshold([0, 1], [0.95, high])
    assert 0.95 < tight.threshold <= high
    assert tight.youden_j == 1.0


def test_youden_ties_go_to_the_interval_nearest_the_default() -> None:
    # J: 0.7 -> .5 - 0 = .5; 0.6 -> .5 - .5 = 0; 0.35 -> 1 - .5 = .5; 0.2 -> 0.
    # Optimal intervals (0.6, 0.7] and (0.2, 0.35]; 0.6 is nearer 0.5 (in logit space too:
    # 0.405 vs 0.619), so the midpoint of the first: odds sqrt(1.5 * 7/3) = sqrt(3.5).
    choice = select_threshold([0, 1, 0, 1], [0.2, 0.35, 0.6, 0.7])
    assert choice.optimal_interval == (0.6, 0.7)
    assert choice.threshold == pytest.approx(3.5**0.5 / (1 + 3.5**0.5))  # 0.651670
    assert (choice.sensitivity, choice.specificity) == (0.5, 1.0)


def test_neighbouring_optimal_points_merge_into_one_interval() -> None:
    # B 0.1, M 0.8, B 0.8, M 0.95: J at t=0.95 is .5 - 0, at t=0.8 1 - .5 = .5, at 0.1 0.
    # The two optimal points are neighbours, so one interval (0.1, 0.95], holding 0.5.
    choice = select_threshold([0, 1, 0, 1], [0.1, 0.8, 0.8, 0.95])
    assert choice.optimal_interval == (0.1, 0.95)
    assert choice.threshold == 0.5
    assert (choice.sensitivity, choice.specificity) == (1.0, 0.5)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "reason"),
    [
        ([1, 1, 1], [0.2, 0.6, 0.9], "only malignant"),
        ([0, 0], [0.2, 0.6], "only benign"),
        ([], [], "no images"),
        ([0, 1], [0.9, 0.1], "beats chance"),  # inverted scores: J <= 0 everywhere
    ],
)
def test_degenerate_validation_keeps_the_default(y_true, y_prob, reason) -> None:
    choice = select_threshold(y_true, y_prob)
    assert choice.threshold == 0.5
    assert choice.method == "default"
    assert reason in choice.reason


# --- bootstrap ----------------------------------------------------------------------------
def test_bootstrap_is_seeded_and_estimates_match_the_point_metrics() -> None:
    first = patient_bootstrap_ci(Y_TRUE, Y_PROB, PATIENTS, n_resamples=200, seed=3)
    again = patient_bootstrap_ci(Y_TRUE, Y_PROB, PATIENTS, n_resamples=200, seed=3)
    other = patient_bootstrap_ci(Y_TRUE, Y_PROB, PATIENTS, n_resamples=200, seed=4)
    assert first == again
    assert first != other
    assert set(first["intervals"]) == set(BOOTSTRAP_METRICS)
    intervals = first["intervals"]
    assert intervals["accuracy"]["estimate"] == pytest.approx(6 / 8)
    assert intervals["auc"]["estimate"] == pytest.approx(11 / 16)
    assert intervals["brier"]["estimate"] == pytest.approx(1.6875 / 8)
    assert intervals["patient_recognition_rate"]["estimate"] == pytest.approx(10 / 12)
    assert intervals["patient_vote_accuracy"]["estimate"] == pytest.approx(3 / 4)
    for name, interval in intervals.items():
        if interval["n_valid"]:
            assert interval["low"] <= interval["high"], name
    assert (first["n_patients"], first["n_resamples"], first["confidence"]) == (4, 200, 0.95)
    assert_json_clean(first)


def test_bootstrap_resamples_patients_not_images() -> None:
    # 10 patients x 50 images; each patient entirely right or entirely wrong (5 and 5).
    # Resampling images would give accuracy 0.5 +- ~0.04; resampling patients must give a
    # far wider interval (binomial over 10 patients: roughly 0.2 to 0.8).
    labels = np.repeat([0, 1] * 5, 50)
    wrong = np.repeat([True] * 5 + [False] * 5, 50)
    probabilities = np.where(wrong, 1 - labels, labels) * 0.8 + 0.1
    patients = np.repeat([f"p{k}" for k in range(10)], 50)
    result = patient_bootstrap_ci(labels, probabilities, patients, n_resamples=500, seed=0)
    accuracy = result["intervals"]["accuracy"]
    assert accuracy["estimate"] == pytest.approx(0.5)
    assert accuracy["high"] - accuracy["low"] > 0.4
    # Patient-level rates equal image accuracy here (equal sizes): intervals must agree.
    assert result["intervals"]["patient_recognition_rate"]["low"] == pytest.approx(accuracy["low"])


def test_bootstrap_perfect_predictions_and_undefined_resamples() -> None:
    result = patient_bootstrap_ci(
        [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], ["a", "a", "b", "b"], n_resamples=200
    )
    accuracy = result["intervals"]["accuracy"]
    assert (accuracy["low"], accuracy["high"]) == (1.0, 1.0)
    # With 2 patients, half the resamples draw one patient twice: one class, no AUC.
    auc = result["intervals"]["auc"]
    assert 50 < auc["n_valid"] < 150
    assert result["intervals"]["sensitivity"]["n_valid"] < 200


# --- the full report ----------------------------------------------------------------------
def test_evaluate_predictions_report_is_complete_and_json_clean() -> None:
    report = evaluate_predictions(
        Y_TRUE,
        Y_PROB,
        patients=PATIENTS,
        magnifications=MAGNIFICATIONS,
        threshold=0.5,
        n_bootstrap=100,
        n_bins=5,
    )
    assert set(report) == {
        "threshold",
        "image",
        "calibration",
        "roc",
        "patient",
        "per_magnification",
        "bootstrap",
    }
    assert report["image"]["accuracy"] == pytest.approx(0.75)
    assert report["calibration"]["ece"] == pytest.approx(2.25 / 8)
    assert_json_clean(report)
    minimal = evaluate_predictions([1, 1], [0.3, 0.9])
    assert set(minimal) == {"threshold", "image", "calibration", "roc"}
    assert_json_clean(minimal)


def test_resampled_auc_equals_scikit_learns_weighted_auc_per_resample() -> None:
    """The vectorised bootstrap AUC is scikit-learn's ``roc_auc_score`` with the resample's
    weights, ties included (probabilities rounded to create many), and NaN where a resample
    drew one class only."""
    from sklearn.metrics import roc_auc_score

    from train.metrics import resampled_auc

    rng = np.random.default_rng(3)
    patient_codes = rng.integers(0, 12, size=300)
    labels = (patient_codes % 3 == 0).astype(int)  # each patient of one class
    probabilities = np.round(np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1), 2)
    draws = rng.integers(0, 12, size=(200, 12))
    multiplicity = np.zeros((200, 12))
    np.add.at(multiplicity, (np.arange(200)[:, None], draws), 1.0)
    multiplicity[0] = 0
    multiplicity[0, 1] = 12  # one benign patient drawn 12 times: one class only
    auc = resampled_auc(labels, probabilities, patient_codes, multiplicity)
    assert np.isnan(auc[0])
    for resample in range(1, 200):
        weights = multiplicity[resample, patient_codes]
        if len(set(labels[weights > 0])) == 2:
            expected = roc_auc_score(labels, probabilities, sample_weight=weights)
            assert auc[resample] == pytest.approx(expected, abs=1e-12)
        else:
            assert np.isnan(auc[resample])
