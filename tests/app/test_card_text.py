"""What the app says about a model from its card (app/card_text.py)."""

from __future__ import annotations

from app.card_text import (
    evaluation_summary,
    format_metric,
    input_description,
    metrics_table,
    short_date,
)
from model.card import Evaluation, ModelCard, TrainingInfo
from tests.app.conftest import trained_card


def test_metrics_side_by_side_patient_disjoint_first() -> None:
    table = metrics_table(trained_card())
    assert table.columns.tolist() == [
        "patient: patient-disjoint",
        "patient (this model): patient-disjoint",
        "paper: test patients also in training",
    ]
    assert table.index.tolist() == [
        "Accuracy",
        "AUC (ROC)",
        "Sensitivity (malignant recall)",
    ]


def test_a_metric_one_protocol_lacks_or_left_undefined_is_marked() -> None:
    card = ModelCard(
        name="c",
        software={},
        evaluation={
            "patient": Evaluation("patient", patient_disjoint=True, metrics={"auc": None}),
            "paper": Evaluation("paper", metrics={"accuracy": 0.99}),
        },
    )
    assert metrics_table(card).to_dict("index") == {
        "Accuracy": {
            "patient: patient-disjoint": "-",
            "paper: test patients also in training": "99.0%",
        },
        "AUC (ROC)": {
            "patient: patient-disjoint": "n/a",
            "paper: test patients also in training": "-",
        },
    }


def test_evaluation_summary_says_how_the_model_was_evaluated() -> None:
    assert evaluation_summary(trained_card()).startswith(
        "patient-disjoint test (patient): Accuracy 85.1%, AUC 0.912"
    )
    paper_only = ModelCard(
        name="p",
        training=TrainingInfo(trained=True),
        evaluation={
            "paper": Evaluation("paper", patient_disjoint=False, metrics={"accuracy": 0.99})
        },
    )
    assert "test patients also appear in training" in evaluation_summary(paper_only)
    assert evaluation_summary(ModelCard(name="n")).startswith("not evaluated")


def test_formatting_helpers() -> None:
    assert format_metric("auc", 0.91234) == "0.912"
    assert format_metric("accuracy", 0.8512) == "85.1%"
    assert format_metric("patients", 16) == "16.000"
    assert format_metric("note", "n/a") == "n/a"
    assert short_date("2026-03-01T12:30:00+00:00") == "2026-03-01 12:30 UTC"
    assert input_description(trained_card()).startswith("144x96 px RGB")
