"""Can a result be shown as a diagnosis-like label? The quality gate, from the card's own
evidence, and the per-image rules that withhold a label.

Every model gets one of three levels, from its own patient-disjoint evaluation (the served
model on test patients it never saw, with the patient-clustered bootstrap 95% CI of its AUC):

``evaluated``
    The AUC's CI lower bound is at least :data:`EVALUATED_MIN_AUC_LOW` (0.80): results are
    shown as they are.
``weak``
    Better than chance (the CI's lower bound is above 0.5) but below that: every result
    carries a prominent warning.
``unproven``
    Not shown to be better than chance: the CI includes 0.5 (or lies below it), there is no
    patient-disjoint evaluation with a CI (e.g. only the paper's leaky protocol), or the card
    says the model was never trained. No benign/malignant label is given anywhere, and the
    probability is "not meaningful" (shown only behind an explicit research toggle).

Per image, the label is also withheld when the image is unlike the training images
(:mod:`model.applicability`) or too small to classify (:mod:`model.quality`).

Example:
    >>> from model.card import Evaluation, ModelCard, TrainingInfo
    >>> card = ModelCard(name="demo", training=TrainingInfo(trained=True), evaluation={
    ...     "patient-fold1 (this model)": Evaluation(
    ...         "patient", patient_disjoint=True, scope="model",
    ...         metrics={"auc": 0.88}, intervals={"auc": (0.71, 0.97)})})
    >>> trust = assess_model(card)
    >>> trust.level, trust.shows_labels
    ('weak', True)
    >>> trust.reason.startswith("its AUC on patients it never saw is 0.880 (95% CI 0.710-0.970)")
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from model.card import Evaluation, ModelCard

TrustLevel = Literal["evaluated", "weak", "unproven"]
EVALUATED_MIN_AUC_LOW = 0.80
"""The AUC CI lower bound at or above which a model counts as *evaluated*."""
CHANCE_AUC = 0.5
LEVEL_TITLES: dict[str, str] = {
    "evaluated": "Evaluated on unseen patients",
    "weak": "Weak: better than chance, not by much",
    "unproven": "Not shown to be better than chance",
}
WITHHELD_LABEL = "not shown"
"""What stands where a label would be when the evidence does not support one."""
LABEL_WITHHOLDING_CODES = frozenset({"too_small"})
"""Quality checks (:mod:`model.quality`) whose image gets no label."""


@dataclass(frozen=True)
class ModelTrust:
    """How much the model's numbers can be trusted, and why, in plain words."""

    level: TrustLevel
    reason: str
    evidence: str | None = None  # the card's evaluation the level rests on

    @property
    def shows_labels(self) -> bool:
        """Whether benign/malignant labels may be shown at all."""
        return self.level != "unproven"

    @property
    def title(self) -> str:
        return LEVEL_TITLES[self.level]


def own_patient_disjoint_evaluation(card: ModelCard) -> tuple[str, Evaluation] | None:
    """The served model's own patient-disjoint evaluation that has an AUC interval."""
    for name, evaluation in card.evaluation.items():
        if (
            evaluation.scope == "model"
            and evaluation.patient_disjoint
            and "auc" in evaluation.intervals
        ):
            return name, evaluation
    return None


def assess_model(card: ModelCard) -> ModelTrust:
    """The model's trust level from its card (see the module docstring)."""
    if not card.is_trained:
        return ModelTrust("unproven", "its card says it was never trained")
    found = own_patient_disjoint_evaluation(card)
    if found is None:
        leaky = any(not e.patient_disjoint for e in card.evaluation.values())
        reason = (
            "it has no evaluation on patients it never saw (its only test patients were also "
            "training patients)"
            if leaky
            else "it has no evaluation on patients it never saw, with a confidence interval"
        )
        return ModelTrust("unproven", reason)
    name, evaluation = found
    low, high = evaluation.intervals["auc"]
    auc = evaluation.metrics.get("auc")
    if low is None or high is None or auc is None:
        return ModelTrust("unproven", f"its AUC on unseen patients is undefined ({name})", name)
    measured = f"its AUC on patients it never saw is {auc:.3f} (95% CI {low:.3f}-{high:.3f})"
    if low >= EVALUATED_MIN_AUC_LOW:
        return ModelTrust("evaluated", f"{measured}", name)
    if low > CHANCE_AUC:
        return ModelTrust(
            "weak",
            f"{measured}: better than chance, but the lower bound is below "
            f"{EVALUATED_MIN_AUC_LOW:.2f}",
            name,
        )
    return ModelTrust("unproven", f"{measured}: the interval includes chance (0.5)", name)


@dataclass(frozen=True)
class ImageTrust:
    """Whether one result's label may be shown, and why not."""

    shows_label: bool
    reasons: tuple[str, ...] = ()


def assess_image(
    model: ModelTrust, applicability: str | None, quality_codes: Iterable[str]
) -> ImageTrust:
    """Combine the model's level with one image's applicability verdict and quality checks.

    Example:
        >>> evaluated = ModelTrust("evaluated", "AUC CI 0.85-0.95")
        >>> assess_image(evaluated, "typical", []).shows_label
        True
        >>> assess_image(evaluated, "unlike", []).reasons
        ('the image is unlike the training images',)
    """
    reasons = []
    if not model.shows_labels:
        reasons.append(f"the model is not shown to be better than chance: {model.reason}")
    if applicability == "unlike":
        reasons.append("the image is unlike the training images")
    if LABEL_WITHHOLDING_CODES & set(quality_codes):
        reasons.append("the image is too small to classify")
    return ImageTrust(shows_label=not reasons, reasons=tuple(reasons))
