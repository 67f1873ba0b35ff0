"""Post-hoc calibration: it fixes overconfidence, leaves a calibrated model alone, and never
inverts a model that is worse than chance."""

from __future__ import annotations

import numpy as np
import pytest

from model.calibration import Calibration, fit_calibration, sigmoid


def _ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    return float(
        sum(
            abs(labels[which == b].mean() - probabilities[which == b].mean()) * (which == b).mean()
            for b in range(bins)
            if (which == b).any()
        )
    )


def _calibrated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(logit): these logits are calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, n)
    labels = (rng.random(n) < sigmoid(logits)).astype(int)
    return logits, labels


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_an_overconfident_model_is_clearly_improved_on_held_out_data(method):
    logits, labels = _calibrated_logits(4000, seed=1)
    overconfident = 8.0 * logits  # the same ranking, far too sure of itself
    fit = fit_calibration(overconfident[:2000], labels[:2000], method)
    held_out = slice(2000, None)
    before = _ece(labels[held_out], sigmoid(overconfident[held_out]))
    after = _ece(labels[held_out], fit.apply(overconfident[held_out]))
    assert before > 0.08
    assert after < before / 2
    assert fit.temperature == pytest.approx(8.0, rel=0.25)


def test_a_calibrated_model_is_left_about_as_it_is():
    logits, labels = _calibrated_logits(4000, seed=2)
    fit = fit_calibration(logits[:2000], labels[:2000], "temperature")
    assert fit.slope == pytest.approx(1.0, abs=0.15)
    held_out = slice(2000, None)
    assert _ece(labels[held_out], fit.apply(logits[held_out])) <= (
        _ece(labels[held_out], sigmoid(logits[held_out])) + 0.02
    )


def test_a_model_without_signal_is_flattened_not_inverted():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 10, 200)  # confident noise
    labels = rng.integers(0, 2, 200)
    for method in ("temperature", "platt"):
        fit = fit_calibration(logits, labels, method)
        assert 0 <= fit.slope < 0.1
        # close to the base rate: the network's confident 0s and 1s are gone
        assert np.quantile(np.abs(fit.apply(logits) - labels.mean()), 0.9) < 0.2
    inverted = fit_calibration(
        np.r_[-np.ones(50), np.ones(50)] * 5, np.r_[np.ones(50), np.zeros(50)], "platt"
    )
    assert inverted.slope < 0.05  # worse than chance on validation: flattened, not inverted


def test_a_perfectly_separated_tiny_validation_set_does_not_give_infinite_confidence():
    logits = np.array([-3.0, -2.0, 2.0, 3.0])
    fit = fit_calibration(logits, np.array([0, 0, 1, 1]), "temperature")
    assert np.isfinite(fit.slope) and fit.apply(np.array([3.0]))[0] < 0.99


def test_threshold_in_raw_terms_and_round_trip():
    fit = Calibration("platt", slope=0.5, intercept=-1.0, fitted_on="validation")
    raw = fit.raw_logit_at(0.3)
    assert fit.apply(np.array([raw]))[0] == pytest.approx(0.3)
    assert Calibration.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match="slope"):
        Calibration.from_dict({**fit.to_dict(), "slope": -1.0})
    flat = Calibration("temperature", slope=0.0, intercept=0.0)
    assert flat.raw_logit_at(0.6) == float("inf") and flat.raw_logit_at(0.4) == float("-inf")
