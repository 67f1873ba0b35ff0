"""The app's plain-Python layer: model resolution, card reading, tables, CSV, cases, names."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import services
from app.services import ImageResult
from model.breakhis import read_breakhis_filename
from model.card import ModelCard, TrainingInfo
from model.errors import ArtifactNotFoundError
from tests.app.conftest import trained_card


# --- which model --------------------------------------------------------------------------
def _fake_run(runs: Path, name: str, mtime: int) -> Path:
    (runs / name / "model").mkdir(parents=True)
    card = runs / name / "model" / "model_card.json"
    card.write_text(ModelCard(name=name).to_json(), encoding="utf-8")
    os.utime(card, (mtime, mtime))
    return runs / name


def test_command_line_beats_environment_beats_newest_run(tmp_path: Path) -> None:
    _fake_run(tmp_path, "run-a", 1_000)
    environ = {"BCD_MODEL": "/models/env", "BCD_RUNS_DIR": str(tmp_path)}
    argv = ["--model", "/models/cli"]
    assert services.resolve_model_source(argv, environ).detail == "--model /models/cli"
    from_env = services.resolve_model_source([], environ)
    assert (from_env.origin, str(from_env.path)) == ("environment", "/models/env")
    from_runs = services.resolve_model_source([], {"BCD_RUNS_DIR": str(tmp_path)})
    assert (from_runs.origin, from_runs.path.name) == ("newest run", "run-a")
    assert services.resolve_model_source([], {"BCD_RUNS_DIR": str(tmp_path / "none")}) is None


def test_unrelated_arguments_are_ignored() -> None:
    assert services.model_argument(["tests/app", "-x", "--mod", "x"]) is None
    assert services.model_argument(["--model=runs/a"]) == "runs/a"


def test_newest_run_skips_unfinished_and_hidden_runs(tmp_path: Path) -> None:
    _fake_run(tmp_path, "old", 1_000)
    _fake_run(tmp_path, "new", 2_000)
    _fake_run(tmp_path, ".staging", 3_000)
    (tmp_path / "still-training" / "checkpoints").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    assert services.find_newest_run(tmp_path).name == "new"


def test_fingerprint_changes_when_the_artifact_is_rewritten(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, "run", 1_000)
    before = services.artifact_fingerprint(run)
    os.utime(run / "model" / "model_card.json", (2_000, 2_000))
    assert services.artifact_fingerprint(run) != before


def test_failed_handle_reports_a_readable_message(tmp_path: Path) -> None:
    source = services.ModelSource(tmp_path / "missing", "environment", "BCD_MODEL=x")
    handle = services.start_model_handle(source)
    assert not handle.loading and not handle.ready
    assert "model artifact not found" in handle.error_message
    with pytest.raises(ArtifactNotFoundError):
        handle.wait(timeout=1)
    assert services.model_status(handle) == {
        "state": "failed",
        "model": None,
        "load_seconds": None,
        "error": f"model artifact not found: {tmp_path / 'missing'}",
    }


@pytest.mark.slow
def test_model_status_follows_a_real_load(trained_artifact: Path) -> None:
    source = services.ModelSource(trained_artifact, "environment", "BCD_MODEL=x")
    handle = services.start_model_handle(source)
    early = services.model_status(handle)
    # the card is read before loading starts, so the model is named while it loads
    assert early["model"] == "test-fixture-random-weights"
    assert early["state"] in {"loading", "ready"}
    handle.wait(timeout=180)
    status = services.model_status(handle)
    assert (status["state"], status["error"]) == ("ready", None)
    assert status["load_seconds"] == round(handle.load_seconds, 2) > 0
    assert services.model_status(None)["state"] == "none"


# --- tables -------------------------------------------------------------------------------
def _result(name: str, probability: float | None, **extra) -> ImageResult:
    if probability is None:
        return ImageResult(name, read_breakhis_filename(name), error=extra.pop("error", "bad"))
    return ImageResult(
        name,
        read_breakhis_filename(name),
        probability=probability,
        label="malignant" if probability >= 0.5 else "benign",
        threshold=0.5,
        cam=np.zeros((3, 5), np.float32),
        method="gradcam",
        layer="conv5_block3_out",
        target="malignant",
        **extra,
    )


def test_results_table_cases_and_csv() -> None:
    results = [
        _result("SOB_M_DC-14-2523-40-010.png", 0.9),
        _result("SOB_M_DC-14-2523-100-011.png", 0.6),
        _result("SOB_B_F-14-25197-40-023.png", 0.2, quality=("tiny image: 10x10 px",)),
        _result("scan.png", 0.4),
        _result("broken.png", None, error="empty file: it contains no bytes"),
    ]
    table = services.results_table(results, magnifications={3: "200X"}, default_case="")
    assert table["magnification"].tolist() == ["40X", "100X", "40X", "200X", "unknown"]
    assert table["case"].tolist() == ["14-2523", "14-2523", "14-25197", "", ""]
    assert table["warnings"].tolist()[2] == "tiny image: 10x10 px"
    assert table["error"].tolist()[4] == "empty file: it contains no bytes"
    assert table["warnings"].tolist()[4] == "not classified: empty file: it contains no bytes"

    cases = services.aggregate_cases(table, threshold=0.5).set_index("case")
    assert cases.loc["14-2523", "mean_probability"] == pytest.approx(0.75)
    assert cases.loc["14-2523", "label"] == "malignant"
    assert cases.loc["14-2523", "magnifications"] == "40X, 100X"
    assert cases.loc["14-2523", "malignant_images"] == "2/2"
    assert cases.loc["14-25197", "label"] == "benign"
    assert "" not in cases.index  # images without a case id are not lumped together

    typed = services.results_table(results, cases={0: "A"}, default_case="B")
    assert typed["case"].tolist() == ["A", "14-2523", "14-25197", "B", "B"]

    csv = pd.read_csv(io.BytesIO(services.results_csv(table)), keep_default_na=False)
    assert csv.columns.tolist() == list(services.RESULT_COLUMNS)
    assert pd.to_numeric(csv["probability"][:4]).tolist() == [0.9, 0.6, 0.2, 0.4]


def test_untrained_and_unstable_results_are_flagged() -> None:
    from model.predictor import TTAResult

    tta = TTAResult(np.array([[0.55, 0.3, 0.3, 0.3]]), ("a", "b", "c", "d"))
    result = _result("x.png", 0.55, tta=tta)
    warnings = services.result_warnings(result, untrained=True)
    assert warnings[0] == services.UNTRAINED_WARNING
    assert warnings[1].startswith("unstable: the flipped/rotated views average 0.36")
    assert services.result_warnings(_result("y.png", None), untrained=True) == [
        "not classified: bad"
    ]


def test_csv_defuses_spreadsheet_formulas() -> None:
    table = services.results_table([_result("=HYPERLINK(1).png", None, error="-oops")])
    text = services.results_csv(table).decode()
    assert "'=HYPERLINK(1).png" in text and "'-oops" in text


# --- describing the model -----------------------------------------------------------------
def test_metrics_side_by_side_patient_disjoint_first() -> None:
    table = services.metrics_table(trained_card())
    assert table.columns.tolist() == [
        "patient: patient-disjoint",
        "paper: test patients also in training",
    ]
    assert table.index.tolist() == [
        "Accuracy",
        "AUC (ROC)",
        "Sensitivity (malignant recall)",
    ]


def test_evaluation_summary_says_how_the_model_was_evaluated() -> None:
    assert services.evaluation_summary(trained_card()).startswith(
        "patient-disjoint test (patient): Accuracy 85.1%, AUC 0.912"
    )
    paper_only = ModelCard(
        name="p",
        training=TrainingInfo(trained=True),
        evaluation={"paper": {"patient_disjoint": False, "metrics": {"accuracy": 0.99}}},
    )
    assert "test patients also appear in training" in services.evaluation_summary(paper_only)
    assert services.evaluation_summary(ModelCard(name="n")).startswith("not evaluated")


def test_formatting_helpers() -> None:
    assert services.format_probability(0.0004) == "<0.1%"
    assert services.format_probability(0.9996) == ">99.9%"
    assert services.format_probability(0.4567) == "45.7%"
    assert services.format_metric("auc", 0.91234) == "0.912"
    assert services.format_metric("accuracy", 0.8512) == "85.1%"
    assert services.format_metric("patients", 16) == "16.000"
    assert services.format_metric("note", "n/a") == "n/a"
    assert services.short_date("2026-03-01T12:30:00+00:00") == "2026-03-01 12:30 UTC"
    assert services.download_name("a/SOB_M_DC-14-2523-40-010.png", "overlay") == (
        "SOB_M_DC-14-2523-40-010_overlay.png"
    )
    assert services.input_description(trained_card()).startswith("144x96 px RGB")


def test_a_bare_model_flag_is_a_clear_error_not_an_exit() -> None:
    with pytest.raises(ValueError, match="--model needs a path"):
        services.resolve_model_source(["--model"], {})
    assert services.model_argument(["--model=runs/a", "--other"]) == "runs/a"
