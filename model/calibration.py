"""Post-hoc calibration of the malignancy logit, fitted on validation data.

A network trained with a sigmoid output is often overconfident: its probabilities pile up at
0 and 1 whether or not it is right. Calibration maps the pre-sigmoid score ``z`` (the
``logit`` layer) to ``sigmoid(slope * z + intercept)``, fitted on the validation part of a
patient-disjoint split (never on test data) by minimising the log loss:

``temperature``
    One parameter: ``slope = 1 / T``, ``intercept = 0`` (Guo et al. 2017). Keeps the 0.5
    point, only softens (``T > 1``) or sharpens (``T < 1``) the probabilities.
``platt``
    Two parameters (Platt 1999): also moves the 0.5 point, which a model trained on
    imbalanced classes may need.

Both are fitted as maximum a posteriori estimates with weak priors: ``log(slope)`` normal
around 0 (sd 1, i.e. "the network's own confidence, within a factor of e") and the intercept
normal around 0 (sd 2). On a large validation set the data decide; on a small one that the
model separates perfectly, the prior keeps the network's own confidence instead of driving it
to infinity or softening it without evidence. The slope is positive by construction, so a
model that is worse than chance on validation is flattened towards the base rate rather than
inverted.

Example:
    >>> logits = np.array([-6.0, -5.0, -4.0, 4.0, 5.0, -3.0, 6.0, 3.0])
    >>> labels = np.array([0, 0, 1, 1, 1, 0, 0, 1])   # confident, and 2 of 8 wrong
    >>> calibration = fit_calibration(logits, labels, "temperature")
    >>> round(calibration.temperature, 1) > 1.0      # softened
    True
    >>> float(calibration.apply(np.array([6.0]))[0]) < float(sigmoid(np.array([6.0]))[0])
    True
    >>> Calibration.from_dict(calibration.to_dict()) == calibration
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

CalibrationMethod = Literal["temperature", "platt"]
CALIBRATION_METHODS: tuple[str, ...] = ("temperature", "platt")
_LOG_CLIP = 1e-12
LOG_SLOPE_PRIOR_SD = 1.0
INTERCEPT_PRIOR_SD = 2.0
_LOG_SLOPE_BOUNDS = (-15.0, float(np.log(100.0)))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64, stable for large |logits|."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def logit(probabilities: np.ndarray) -> np.ndarray:
    """The inverse of :func:`sigmoid`, clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _LOG_CLIP, 1 - _LOG_CLIP)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(slope * logit + intercept)``, and what it was fitted on.

    Attributes:
        method: ``"temperature"`` or ``"platt"``.
        slope, intercept: the map of the raw logit.
        fitted_on: what the fit saw (e.g. ``"validation of patient-fold1: 40 images of 8
            patients"``).
        n_images: how many validation images.
        log_loss_before, log_loss_after: mean log loss on those images, for the record.
    """

    method: CalibrationMethod
    slope: float
    intercept: float = 0.0
    fitted_on: str = ""
    n_images: int = 0
    log_loss_before: float | None = None
    log_loss_after: float | None = None

    @property
    def temperature(self) -> float:
        """``1 / slope`` (infinite for a model flattened to its base rate)."""
        return float("inf") if self.slope == 0 else 1.0 / self.slope

    def apply_logit(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits."""
        return self.slope * np.asarray(logits, dtype=np.float64) + self.intercept

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) from raw logits."""
        return sigmoid(self.apply_logit(logits))

    def raw_logit_at(self, probability: float) -> float:
        """The raw logit whose calibrated probability is ``probability`` (a threshold in raw
        terms); +-inf when the calibrated probability is constant (slope 0).

        Example:
            >>> Calibration("temperature", slope=0.5).raw_logit_at(0.5)
            0.0
        """
        target = float(logit(np.array([probability]))[0]) - self.intercept
        if self.slope == 0:
            return float("-inf") if target <= 0 else float("inf")
        return target / self.slope

    def describe(self) -> str:
        """One line for a model card page.

        Example:
            >>> Calibration("temperature", slope=0.25, fitted_on="validation").describe()
            'temperature scaling (T = 4), fitted on validation'
        """
        if self.method == "temperature":
            how = f"temperature scaling (T = {self.temperature:.3g})"
        else:
            how = f"Platt scaling (slope {self.slope:.3g}, intercept {self.intercept:.3g})"
        return f"{how}, fitted on {self.fitted_on}" if self.fitted_on else how

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; refuses an unknown method or a negative slope."""
        calibration = cls(**data)
        if calibration.method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {calibration.method!r}")
        if not (np.isfinite(calibration.slope) and calibration.slope >= 0):
            raise ValueError(f"calibration slope must be finite and >= 0: {calibration.slope}")
        return calibration


def _log_loss(labels: np.ndarray, calibrated_logits: np.ndarray) -> float:
    """Mean -[y log s(z) + (1 - y) log(1 - s(z))], written with logaddexp for stability."""
    return float(
        np.mean(
            labels * np.logaddexp(0.0, -calibrated_logits)
            + (1 - labels) * np.logaddexp(0.0, calibrated_logits)
        )
    )


def fit_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    method: CalibrationMethod = "temperature",
    fitted_on: str = "",
) -> Calibration:
    """Fit ``method`` on validation logits and labels (0 benign, 1 malignant).

    Raises:
        ValueError: no images, non-finite logits, or an unknown method.
    """
    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if len(logits) == 0 or len(logits) != len(labels):
        raise ValueError("calibration needs validation logits and labels of the same length")
    if not np.all(np.isfinite(logits)):
        raise ValueError("calibration needs finite logits")
    from scipy.optimize import minimize  # here: reading a card must not import SciPy

    labels = labels.astype(np.float64)
    before = _log_loss(labels, logits)
    n = len(logits)

    def objective(parameters: np.ndarray) -> float:
        log_slope = parameters[0]
        intercept = parameters[1] if method == "platt" else 0.0
        calibrated = np.exp(log_slope) * logits + intercept
        prior = (log_slope / LOG_SLOPE_PRIOR_SD) ** 2 / 2
        if method == "platt":
            prior += (intercept / INTERCEPT_PRIOR_SD) ** 2 / 2
        return n * _log_loss(labels, calibrated) + prior

    start = [0.0, 0.0] if method == "platt" else [0.0]
    bounds = [_LOG_SLOPE_BOUNDS, (None, None)] if method == "platt" else [_LOG_SLOPE_BOUNDS]
    result = minimize(objective, x0=start, bounds=bounds, method="L-BFGS-B")
    slope = float(np.exp(result.x[0]))
    intercept = float(result.x[1]) if method == "platt" else 0.0
    after = _log_loss(labels, slope * logits + intercept)
    return Calibration(
        method=method,
        slope=slope,
        intercept=intercept,
        fitted_on=fitted_on,
        n_images=len(logits),
        log_loss_before=before,
        log_loss_after=after,
    )
