"""The run folder: one owner of its layout, typed round trips, older folders still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from model.card import Evaluation
from train.config import resolve_config
from train.metrics import ThresholdChoice
from train.run_folder import (
    CONFIG_JSON,
    FOLD_METRICS_JSON,
    HISTORY_CSV,
    PREDICTIONS_CSV,
    PROTOCOL_SUMMARY_JSON,
    RUN_SUMMARY_JSON,
    SKIPPED_CSV,
    SPLITS_CSV,
    SPLITS_JSON,
    FoldDocument,
    RunFolder,
    RunSummary,
)

REPO = Path(__file__).resolve().parents[2]


def test_layout(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "quick")
    fold = run.protocol("patient").fold("patient-fold2")
    assert fold.path == tmp_path / "quick" / "patient" / "patient-fold2"
    assert fold.model_dir == fold.path / "model"
    assert run.served_model_dir == tmp_path / "quick" / "model"
    assert run.cache_dir == tmp_path / ".cache"  # shared by the runs beside it
    assert run.features_cache("abc").name == "features-abc.npy"


def test_config_summary_and_fold_documents_round_trip(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    config = resolve_config("smoke")
    run.start(config, str(tmp_path / "data"))
    assert run.is_started and not run.is_complete
    assert run.read_config() == config
    assert run.read_data_source() == str((tmp_path / "data").resolve())

    fold = run.protocol("patient").fold("patient-fold1")
    document = FoldDocument(
        "patient-fold1",
        ThresholdChoice(0.3, "youden", "best J", 0.8, 0.9, 0.9, (0.25, 0.35)),
        {"image": {"accuracy": 0.9}},
        {"patient_disjoint": True},
        0.07,
    )
    assert not fold.is_complete
    fold.write_document(document)
    assert fold.is_complete and fold.read_document() == document

    evaluation = Evaluation("patient", patient_disjoint=True, metrics={"accuracy": 0.9})
    run.protocol("patient").write_summary(evaluation)
    assert run.protocol("patient").read_summary() == evaluation
    summary = RunSummary("patient", "patient-fold1", {"patient": evaluation})
    run.write_summary(summary)
    assert run.read_summary() == summary
    run.mark_complete()
    assert run.is_complete
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == []  # every write went through a temporary file that was renamed


def test_a_run_folder_of_an_earlier_version_is_still_read(tmp_path: Path) -> None:
    """Before run_summary.json, the run's summary was a second metrics.json with flat
    protocol summaries; and config.json had a max_images field."""
    run = RunFolder(tmp_path / "old")
    run.path.mkdir()
    config = json.loads(resolve_config("quick").to_json()) | {"max_images": None}
    run.config_json.write_text(json.dumps(config))
    legacy = {
        "served_model": {"protocol": "patient", "fold": "patient-fold1"},
        "protocols": {
            "paper": {"folds": 1, "accuracy": 0.98, "accuracy_sd": 0.0, "patient_disjoint": False},
            "patient": {
                "folds": 5,
                "accuracy": 0.85,
                "accuracy_sd": 0.04,
                "patient_disjoint": True,
            },
        },
    }
    (run.path / "metrics.json").write_text(json.dumps(legacy))
    assert run.read_config().preset == "quick"
    summary = run.read_summary()
    assert (summary.served_protocol, summary.served_fold) == ("patient", "patient-fold1")
    patient = summary.protocols["patient"]
    assert (patient.patient_disjoint, patient.folds) == (True, 5)
    assert patient.metrics == {"accuracy": 0.85} and patient.spread == {"accuracy": 0.04}
    assert not summary.protocols["paper"].patient_disjoint


def test_no_run_summary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RunFolder(tmp_path).read_summary()


OWNED_NAMES = (
    CONFIG_JSON,
    FOLD_METRICS_JSON,
    HISTORY_CSV,
    PREDICTIONS_CSV,
    PROTOCOL_SUMMARY_JSON,
    RUN_SUMMARY_JSON,
    SKIPPED_CSV,
    SPLITS_CSV,
    SPLITS_JSON,
    "data.txt",
    "COMPLETE",
)


def test_only_the_run_folder_module_names_the_run_folder_files() -> None:
    """One owner: no other module of train/, app/ or model/ spells a run-folder file name
    (they ask train.run_folder, or model.runs for the served model)."""
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in OWNED_NAMES))
    offenders = [
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for room in ("train", "app", "model")
        for path in sorted((REPO / room).rglob("*.py"))
        if path.name != "run_folder.py"
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []
