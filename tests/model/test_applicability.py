"""The applicability summary: typical images pass, shifted and foreign ones are flagged."""

from __future__ import annotations

import numpy as np

from model.applicability import FeatureSummary, fit_feature_summary


def _features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    mixing = np.random.default_rng(99).normal(size=(6, 64))  # the same structure for all
    return latent @ mixing + 0.1 * rng.normal(size=(n, 64)) + shift


def test_held_out_images_of_the_same_kind_are_typical():
    summary = fit_feature_summary(_features(300, 0), _features(100, 1), n_components=8)
    verdicts = summary.verdicts(_features(500, 2))
    assert (verdicts == "typical").mean() >= 0.95


def test_shifted_and_foreign_features_are_flagged():
    summary = fit_feature_summary(_features(300, 0), _features(100, 1), n_components=8)
    assert set(summary.verdicts(_features(50, 3, shift=5.0))) <= {"unusual", "unlike"}
    noise = np.random.default_rng(4).normal(0, 10, size=(20, 64))
    assert set(summary.verdicts(noise)) == {"unlike"}
    assert summary.verdict(float("nan")) == "unlike"


def test_round_trip_and_a_tiny_training_set():
    summary = fit_feature_summary(_features(17, 0), _features(7, 1))
    assert len(summary.components) == 5  # at most a third of the images: residuals stay honest
    again = FeatureSummary.from_dict(summary.to_dict())
    assert again == summary
    probe = _features(5, 5)
    assert np.allclose(again.scores(probe), summary.scores(probe), rtol=1e-4)
