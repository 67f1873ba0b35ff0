"""``train.report`` on a run folder written with the real splits, metrics, evaluation and
run-folder code.

The folder is written through :mod:`train.run_folder`, the writer ``train.run`` uses, so it
has exactly the run's layout, but the "model" is a seeded random score, so the module needs
no training and runs in seconds. (``tests/train/test_run.py`` covers the report written at
the end of a real run.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from train.config import resolve_config
from train.dataset import index_dataset
from train.evaluation import protocol_evaluation
from train.metrics import ThresholdChoice, evaluate_predictions, select_threshold
from train.protocols import PROTOCOLS
from train.report import (
    PAPER_ACCURACY,
    choose_samples,
    fmt,
    main,
    percent,
    read_run,
    write_report,
)
from train.run_folder import FoldDocument, RunFolder, RunSummary
from train.synthetic import make_synthetic_breakhis

EPOCHS = 6


def _fake_probabilities(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A decent but imperfect model: logits around +-2 with noise."""
    logits = rng.normal(np.where(labels == 1, 2.0, -2.0), 1.8)
    return 1 / (1 + np.exp(-logits))


def _history(has_val: bool, rng: np.random.Generator) -> pd.DataFrame:
    epochs = np.arange(1, EPOCHS + 1)
    decay = np.exp(-epochs / 2)
    frame = {
        "epoch": epochs,
        "accuracy": 1 - 0.4 * decay,
        "auc": 1 - 0.3 * decay,
        "loss": 0.25 * decay + 0.01,
    }
    prefixes = ("val_", "test_") if has_val else ("test_",)
    for prefix in prefixes:
        frame[f"{prefix}accuracy"] = 0.9 - 0.3 * decay + rng.normal(0, 0.01, EPOCHS)
        frame[f"{prefix}auc"] = 0.95 - 0.2 * decay
        frame[f"{prefix}loss"] = 0.2 * decay + 0.05
    return pd.DataFrame(frame)


def build_run(
    run_dir: Path,
    data: Path,
    folds: int = 2,
    seed: int = 7,
    protocols: tuple[str, ...] = ("paper", "patient", "kfold"),
) -> Path:
    """Write a complete run folder (paper, patient and k-fold protocols) as ``train.run``
    would."""
    config = resolve_config(
        "smoke", {"protocols": list(protocols), "folds": folds, "bootstrap": 200}
    )
    run = RunFolder(run_dir)
    run.start(config, str(data))
    index = index_dataset(data)
    run.write_skipped(index.skipped)
    rng = np.random.default_rng(seed)
    summaries = {}
    for protocol in config.protocols:
        spec = PROTOCOLS[protocol]
        folder = run.protocol(protocol)
        splits = folder.load_or_make_splits(index, protocol, **spec.split_options(config))
        documents = []
        for split in splits:
            fold = folder.fold(split.name)
            probabilities = {
                part: _fake_probabilities(split.part(part)["label"].to_numpy(), rng)
                for part in ("val", "test")
            }
            threshold = (
                select_threshold(split.val["label"], probabilities["val"])
                if len(split.val)
                else ThresholdChoice(0.5, "default", "no validation part: default 0.5")
            )
            metrics = evaluate_predictions(
                split.test["label"],
                probabilities["test"],
                patients=split.test["patient"].astype(str).to_numpy(),
                magnifications=split.test["magnification"].to_numpy(),
                threshold=threshold.threshold,
                n_bootstrap=config.bootstrap,
                seed=config.seed,
            )
            fold.write_history(_history(len(split.val) > 0, rng).to_dict("records"))
            fold.write_predictions(
                pd.concat(
                    [
                        split.part(part)[["path", "label", "patient", "magnification"]].assign(
                            part=part, probability=probabilities[part]
                        )
                        for part in ("val", "test")
                    ],
                    ignore_index=True,
                )
            )
            document = FoldDocument(split.name, threshold, metrics, split.audit.to_dict())
            fold.write_document(document)
            documents.append(document)
        summary = protocol_evaluation(spec, documents, config.validation_fraction)
        folder.write_summary(summary)
        summaries[protocol] = summary
    run.write_summary(RunSummary("patient", "patient-fold1", summaries))
    return run_dir


@pytest.fixture(scope="module")
def report_run(small_synthetic_breakhis, tmp_path_factory) -> Path:
    run_dir = build_run(tmp_path_factory.mktemp("report") / "run", small_synthetic_breakhis)
    write_report(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def report_text(report_run) -> str:
    return (report_run / "report.md").read_text()


def _summaries(run_dir: Path) -> dict:
    return RunFolder(run_dir).read_summary().protocols


def _fold(run_dir: Path, protocol: str, name: str) -> dict:
    return json.loads(RunFolder(run_dir).protocol(protocol).fold(name).metrics_json.read_text())


# --- figures ------------------------------------------------------------------------------
EXPECTED_FIGURES = (
    "samples.png",
    "curves-paper.png",
    "curves-patient.png",
    "roc-paper.png",
    "roc-patient.png",
    "calibration-paper.png",
    "calibration-patient.png",
)


@pytest.mark.parametrize("name", EXPECTED_FIGURES)
def test_figures_are_valid_pngs_of_reasonable_size(report_run, name):
    path = report_run / "figures" / name
    assert path.stat().st_size > 15_000  # a plot with content, not an empty canvas
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 450 <= width <= 2500 and 400 <= height <= 2500


def test_figures_are_linked_from_the_report(report_text):
    for name in EXPECTED_FIGURES:
        assert f"](figures/{name})" in report_text


# --- report.md ----------------------------------------------------------------------------
def _row(text: str, starts_with: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {starts_with}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_comparison_table_has_the_paper_row_and_ours_matching_metrics_json(report_run, report_text):
    assert "## Comparison with the paper (Table II)" in report_text
    paper_row = _row(report_text, "Abu Al-Haija & Adebanjo 2020, Table II")
    assert paper_row[3] == "99.1%" == percent(PAPER_ACCURACY)
    assert paper_row[2] == "no"

    summaries = _summaries(report_run)
    paper = summaries["paper"].metrics
    ours_paper = _row(report_text, "this run (smoke preset), paper protocol")
    assert ours_paper[2] == "no"
    assert ours_paper[3] == f"{100 * paper['accuracy']:.1f}%"  # one split: no sd
    assert ours_paper[4] == f"{paper['auc']:.3f}"

    patient, spread = summaries["patient"].metrics, summaries["patient"].spread
    ours_patient = _row(report_text, "this run (smoke preset), patient protocol")
    assert ours_patient[2] == "yes"
    assert ours_patient[3] == (f"{100 * patient['accuracy']:.1f}% ± {100 * spread['accuracy']:.1f}")
    assert ours_patient[5] == (
        f"{100 * patient['patient_recognition_rate']:.1f}% ± "
        f"{100 * spread['patient_recognition_rate']:.1f}"
    )
    assert ours_patient[6].startswith(f"{100 * patient['patient_vote_accuracy']:.1f}%")

    context = _row(report_text, "context: Spanhol et al. 2016")
    assert context[3] == "~80–93%" and "context" in context[-1]


def test_paper_protocol_states_the_patient_leakage_with_the_audit_numbers(report_run, report_text):
    audit = json.loads((report_run / "paper" / "splits.json").read_text())["splits"][0]["audit"]
    n_test = audit["patients"]["test"]
    assert audit["test_patients_in_train"] == n_test == 10
    assert (
        f"Every one of the {n_test} patients of the 40X test set also appears in training"
        in report_text
    )
    assert f"{n_test} of {n_test} test patients with training images" in report_text
    assert "**Patient-disjoint: yes.**" in report_text  # the patient protocol's verdict


def test_per_fold_rows_and_mean_sd_match_the_metrics(report_run, report_text):
    fold = _fold(report_run, "patient", "patient-fold2")
    row = _row(report_text, "patient-fold2 |")
    image = fold["metrics"]["image"]
    assert row[2:8] == [
        fmt(image[key])
        for key in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")
    ]
    assert row[8] == fmt(fold["metrics"]["patient"]["patient_recognition_rate"])
    assert row[9] == fmt(fold["metrics"]["patient"]["patient_vote_accuracy"])
    assert row[10] == fmt(fold["metrics"]["calibration"]["brier"])
    assert row[11] == fmt(fold["metrics"]["calibration"]["ece"])
    summary = _summaries(report_run)["patient"]
    mean_row = _row(report_text, "**mean ± sd (2)**")
    assert mean_row[2] == f"{summary.metrics['accuracy']:.3f} ± {summary.spread['accuracy']:.3f}"


def test_kfold_protocol_is_reported_like_the_patient_one(report_run, report_text):
    summary = _summaries(report_run)["kfold"]
    row = _row(report_text, "this run (smoke preset), kfold protocol")
    assert row[1] == "Patient k-fold protocol (every patient tested once)" and row[2] == "yes"
    assert row[3] == (
        f"{100 * summary.metrics['accuracy']:.1f}% ± {100 * summary.spread['accuracy']:.1f}"
    )
    assert row[-1] == "mean ± sd over 2 splits"
    section = report_text.split("## Patient k-fold protocol", 1)[1].split("\n## ", 1)[0]
    assert "every patient is tested exactly once, in one of the 2 disjoint test folds" in section
    assert (
        "**Every patient is tested exactly once:** the 2 test folds hold 10 patients, "
        "all 10 of the dataset." in section
    )
    mean_row = _row(section, "**mean ± sd (2)**")
    assert mean_row[2] == f"{summary.metrics['accuracy']:.3f} ± {summary.spread['accuracy']:.3f}"
    assert _row(section, "kfold-fold1 |") and _row(section, "kfold-fold2 |")
    # The patient protocol's random splits make no such claim.
    assert report_text.count("tested exactly once:**") == 1


def test_both_patient_level_definitions_are_explained_and_reported(report_text):
    assert "**patient recognition rate** (Spanhol et al. 2016)" in report_text
    assert "**patient vote accuracy** thresholds each patient's mean" in report_text
    header = _row(report_text, "split |")
    assert "patient recognition rate" in header and "patient vote accuracy" in header


def test_bootstrap_confidence_intervals_are_reported(report_run, report_text):
    intervals = _fold(report_run, "patient", "patient-fold1")["metrics"]["bootstrap"]["intervals"]
    accuracy = intervals["accuracy"]
    expected = f"{accuracy['estimate']:.3f} [{accuracy['low']:.3f}, {accuracy['high']:.3f}]"
    assert expected in report_text
    assert "patient-clustered percentile bootstrap, 200 resamples" in report_text
    vote = intervals["patient_vote_accuracy"]
    assert f"[{vote['low']:.3f}, {vote['high']:.3f}]" in report_text


def test_threshold_and_how_it_was_chosen(report_run, report_text):
    assert "- paper: **0.5** (default): no validation part: default 0.5." in report_text
    choice = _fold(report_run, "patient", "patient-fold1")["threshold"]
    assert f"- patient-fold1: **{choice['threshold']:.4g}** ({choice['method']})" in report_text
    assert choice["reason"] in report_text


def test_confusion_matrix_magnifications_calibration_and_config(report_run, report_text):
    folds = [_fold(report_run, "patient", f"patient-fold{k}") for k in (1, 2)]
    summed = np.sum([f["metrics"]["image"]["confusion_matrix"]["matrix"] for f in folds], axis=0)
    assert f"| **true benign** | {summed[0, 0]} | {summed[0, 1]} |" in report_text
    assert f"| **true malignant** | {summed[1, 0]} | {summed[1, 1]} |" in report_text
    for magnification in ("40X", "100X", "200X", "400X"):
        assert re.search(rf"^\| {magnification} \| \d+ \|", report_text, re.MULTILINE)
    assert "ECE" in report_text and "Brier" in report_text
    assert '"preset": "smoke"' in report_text
    assert "these numbers mean nothing clinically" in report_text
    assert "not BreakHis's 7,909" in report_text
    assert "they are monitoring only" in report_text


# --- robustness and helpers ---------------------------------------------------------------
def test_a_moved_dataset_still_gives_a_report_without_samples(tmp_path):
    data = make_synthetic_breakhis(tmp_path / "data", patients_per_class=3, size=(70, 46))
    # One fold: the k-fold protocol needs two.
    run_dir = build_run(tmp_path / "run", data, folds=1, protocols=("paper", "patient"))
    for png in data.rglob("*.png"):
        png.unlink()
    text = write_report(run_dir).read_text()
    assert not (run_dir / "figures" / "samples.png").exists()
    assert "samples.png" not in text
    assert (run_dir / "figures" / "roc-patient.png").is_file()
    assert read_run(run_dir).protocols[1].folds[0].name == "patient-fold1"


def test_samples_cover_both_classes_and_every_magnification():
    table = pd.DataFrame(
        [
            (f"{label}-{subtype}-{magnification}-{n}", label, subtype, magnification)
            for label, subtypes in ((0, ("A", "F")), (1, ("DC", "LC")))
            for subtype in subtypes
            for magnification in (40, 100, 200, 400)
            for n in range(3)
        ],
        columns=["path", "label", "subtype", "magnification"],
    )
    chosen = choose_samples(table, 12, seed=1)
    assert len(chosen) == 12 and chosen["path"].is_unique
    assert set(chosen["magnification"]) == {40, 100, 200, 400}
    assert chosen["label"].value_counts().to_dict() == {0: 6, 1: 6}
    assert set(chosen["subtype"]) == {"A", "F", "DC", "LC"}
    assert choose_samples(table, 12, seed=1).equals(chosen)  # deterministic


def test_command_line(report_run, tmp_path, capsys):
    assert main([str(report_run)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    assert main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
