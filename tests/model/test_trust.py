"""The quality gate: each level from the card's own evidence, and labels withheld per image."""

from __future__ import annotations

import pytest

from model.card import Evaluation, ModelCard, TrainingInfo
from model.trust import assess_image, assess_model


def _card(auc: float | None, interval: tuple[float, float] | None, **evaluation) -> ModelCard:
    entries = {}
    if interval is not None:
        entries["patient-fold1 (this model)"] = Evaluation(
            "patient",
            patient_disjoint=evaluation.pop("patient_disjoint", True),
            scope=evaluation.pop("scope", "model"),
            metrics={"auc": auc},
            intervals={"auc": interval},
        )
    return ModelCard(name="m", training=TrainingInfo(trained=True), evaluation=entries)


@pytest.mark.parametrize(
    ("auc", "interval", "level"),
    [
        (0.93, (0.85, 0.98), "evaluated"),
        (0.90, (0.80, 0.97), "evaluated"),  # the documented boundary
        (0.85, (0.62, 0.96), "weak"),
        (0.70, (0.45, 0.88), "unproven"),  # the interval includes chance
        (0.40, (0.20, 0.60), "unproven"),
    ],
)
def test_levels_follow_the_auc_interval(auc, interval, level):
    trust = assess_model(_card(auc, interval))
    assert trust.level == level
    assert trust.shows_labels == (level != "unproven")
    assert f"{auc:.3f}" in trust.reason


def test_no_patient_disjoint_evidence_means_unproven():
    assert assess_model(_card(None, None)).level == "unproven"
    leaky = _card(0.99, (0.97, 1.0), patient_disjoint=False)
    trust = assess_model(leaky)
    assert trust.level == "unproven" and "also training patients" in trust.reason
    mean_only = _card(0.95, (0.9, 1.0), scope="protocol")  # a recipe's mean, not this model
    assert assess_model(mean_only).level == "unproven"
    untrained = ModelCard(name="u")
    assert assess_model(untrained).reason == "its card says it was never trained"


def test_a_label_is_withheld_per_image_for_unlike_or_too_small_images():
    evaluated = assess_model(_card(0.95, (0.9, 0.99)))
    assert assess_image(evaluated, "typical", ()).shows_label
    assert assess_image(evaluated, "unusual", ("tiny",)).shows_label
    assert not assess_image(evaluated, "unlike", ()).shows_label
    assert not assess_image(evaluated, None, ("too_small",)).shows_label
    unproven = assess_model(_card(0.6, (0.3, 0.8)))
    assert not assess_image(unproven, "typical", ()).shows_label
