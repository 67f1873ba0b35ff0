"""The model card's typed evaluations: round trip, older untyped cards, malformed entries."""

from __future__ import annotations

import json

import pytest

from model.card import Evaluation, ModelCard

# The evaluation entries of a card as `python -m train.run` wrote them before Evaluation
# existed (schema 1, untyped dicts): they must still load, with the same numbers.
LEGACY_CARD_EVALUATION = {
    "paper": {
        "description": "paper protocol: trained on 100X/200X/400X, tested on 40X",
        "patient_disjoint": False,
        "metrics": {"folds": 1, "accuracy": 0.97, "accuracy_sd": 0.0, "auc": 0.99},
    },
    "patient": {
        "description": "patient-disjoint (Spanhol et al. 2016): mean over 5 splits",
        "patient_disjoint": True,
        "metrics": {"folds": 5, "accuracy": 0.84, "accuracy_sd": 0.05, "auc": 0.9},
    },
    "patient-fold1 (this model)": {
        "description": "this model on its own test split (patient-fold1)",
        "patient_disjoint": True,
        "metrics": {"accuracy": 0.86, "auc": 0.91, "confusion_matrix": {"tn": 3}},
    },
}


def test_evaluations_round_trip_typed() -> None:
    evaluation = Evaluation(
        protocol="patient",
        title="Patient-disjoint protocol (Spanhol et al. 2016)",
        patient_disjoint=True,
        scope="model",
        metrics={"accuracy": 0.86, "auc": None},
        intervals={"auc": (0.8, 0.95)},
        interval_method="95% patient-clustered percentile bootstrap, 1000 resamples",
        threshold=0.42,
    )
    card = ModelCard(name="demo", evaluation={"patient-fold1 (this model)": evaluation})
    text = card.to_json()
    assert json.loads(text)["evaluation"]["patient-fold1 (this model)"]["intervals"] == {
        "auc": [0.8, 0.95]
    }
    again = ModelCard.from_json(text)
    assert again == card
    assert again.evaluation["patient-fold1 (this model)"].intervals["auc"] == (0.8, 0.95)


def test_a_card_written_before_typed_evaluations_still_loads() -> None:
    data = json.loads(ModelCard(name="old").to_json())
    data["evaluation"] = LEGACY_CARD_EVALUATION
    card = ModelCard.from_dict(data)
    patient = card.evaluation["patient"]
    assert isinstance(patient, Evaluation)
    assert (patient.protocol, patient.patient_disjoint, patient.folds) == ("patient", True, 5)
    assert patient.metrics == {"accuracy": 0.84, "auc": 0.9}
    assert patient.spread == {"accuracy": 0.05}
    assert patient.description.startswith("patient-disjoint (Spanhol")
    own = card.evaluation["patient-fold1 (this model)"]
    assert own.metrics == {"accuracy": 0.86, "auc": 0.91}  # nested values are not metrics
    assert [name for name, _ in card.ordered_evaluations()] == [
        "patient",
        "patient-fold1 (this model)",
        "paper",
    ]
    assert card.evaluation["paper"].heading == "paper: test patients also in training"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"metrics": [0.9]}, "metrics must be a JSON object"),
        ({"scope": "somewhere"}, "scope must be"),
        ({"accuracy": 0.9}, "unknown evaluation fields"),
    ],
)
def test_malformed_evaluation_entries_are_refused(entry: dict, message: str) -> None:
    data = json.loads(ModelCard(name="bad").to_json())
    data["evaluation"] = {"patient": entry}
    with pytest.raises((TypeError, ValueError), match=message):
        ModelCard.from_dict(data)
