"""``python -m train.run`` end to end on synthetic BreakHis data: it learns, it writes a
complete run folder, it resumes after kill -9, and the GPU switches run on the CPU."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import slow_smoke_arguments
from train.run import main
from train.run_folder import RunFolder
from train.synthetic import make_synthetic_breakhis

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synthetic_700x460(tmp_path_factory) -> Path:
    """12 patients per class, one image per magnification, full BreakHis size (96 images).

    Many patients with few images each: patient-to-patient stain shifts are what a
    patient-disjoint test must generalise over."""
    root = tmp_path_factory.mktemp("synthetic-full-size")
    return make_synthetic_breakhis(
        root, patients_per_class=12, images_per_magnification=1, size=(700, 460), seed=3
    )


@pytest.fixture(scope="module")
def smoke_run(synthetic_700x460, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "--preset",
            "smoke",
            "--deterministic",
            "--data",
            str(synthetic_700x460),
            "--runs-dir",
            str(runs),
            "--quiet",
        ]
    )
    assert code == 0
    return runs / "smoke"


def test_smoke_preset_learns_on_held_out_patients(smoke_run):
    fold = json.loads((smoke_run / "patient" / "patient-fold1" / "metrics.json").read_text())
    assert fold["audit"]["patient_disjoint"]
    assert fold["audit"]["patients"]["test"] >= 4
    assert fold["metrics"]["image"]["accuracy"] >= 0.9
    summary = json.loads((smoke_run / "run_summary.json").read_text())
    assert summary["protocols"]["patient"]["patient_disjoint"] is True


def test_run_folder_holds_everything(smoke_run):
    for name in (
        "config.json",
        "run_summary.json",
        "COMPLETE",
        "model/model.keras",
        "model/model_card.json",
        "patient/splits.csv",
        "patient/splits.json",
        "patient/summary.json",
    ):
        assert (smoke_run / name).exists(), name
    fold = smoke_run / "patient" / "patient-fold1"
    for name in (
        "history.csv",
        "predictions.csv",
        "metrics.json",
        "model/model.keras",
        "checkpoint/latest.json",
    ):
        assert (fold / name).exists(), name
    assert any((fold / "tensorboard").rglob("events.out.tfevents.*"))
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 16))
    assert {"loss", "accuracy", "val_loss", "test_loss", "test_accuracy"} <= set(history)


def test_served_model_card_and_predictions(smoke_run):
    from model.analysis import Analyzer

    analyzer = Analyzer.from_path(smoke_run)
    card = analyzer.card
    assert card.is_trained and card.training.protocol == "patient"
    assert card.evaluation["patient"].patient_disjoint is True
    assert card.evaluation["patient"].metrics["accuracy"] >= 0.9
    assert "96 images, 24 patients" in card.training.dataset
    # The head trained on cached features was folded into the full network: the saved
    # network reproduces the probabilities the run recorded.
    predictions = pd.read_csv(smoke_run / "patient" / "patient-fold1" / "predictions.csv")
    test = predictions[predictions["part"] == "test"].head(6)
    again = analyzer.predictor.predict([Path(p).read_bytes() for p in test["path"]])
    assert np.allclose(again, test["probability"], rtol=1e-3, atol=1e-5)


def _served_validation_loss(fold: Path) -> float:
    """The MSE (the training loss) of the fold's saved model on its validation images, from
    the probabilities it recorded before calibration."""
    predictions = pd.read_csv(fold / "predictions.csv")
    val = predictions[predictions["part"] == "val"]
    return float(np.mean((val["raw_probability"] - val["label"]) ** 2))


def assert_best_epoch_served(fold: Path) -> None:
    """Model selection: the fold's model is the lowest-validation-loss epoch's, and
    ``best_val_loss`` in metrics.json is that minimum of history.csv."""
    history = pd.read_csv(fold / "history.csv")
    document = json.loads((fold / "metrics.json").read_text())
    best = history["val_loss"].min()
    assert document["best_val_loss"] == pytest.approx(best, rel=1e-6)
    # Only informative when the last epoch is not the best one (then serving the last
    # epoch's weights would show here).
    assert history["val_loss"].iloc[-1] > best * 1.01, "the last epoch is the best here"
    assert _served_validation_loss(fold) == pytest.approx(best, rel=1e-3)


def test_the_best_epoch_is_served_not_the_last(no_signal_manifest, tmp_path):
    """Labels scrambled by patient and a slow learning rate: the validation loss falls for a
    few epochs, then rises as the head fits the training patients. The served model must
    be the best epoch's (``best.weights.h5``), not the last one's."""
    args = [*slow_smoke_arguments(no_signal_manifest, tmp_path), "--protocols", "patient"]
    assert main([*args, "--quiet"]) == 0
    assert_best_epoch_served(tmp_path / "smoke" / "patient" / "patient-fold1")


def test_best_val_loss_is_the_minimum_of_the_history(smoke_run):
    fold = smoke_run / "patient" / "patient-fold1"
    history = pd.read_csv(fold / "history.csv")
    document = json.loads((fold / "metrics.json").read_text())
    assert document["best_val_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-6)


def test_a_complete_run_is_not_overwritten(smoke_run, synthetic_700x460, capsys):
    code = main(
        [
            "--preset",
            "smoke",
            "--deterministic",
            "--data",
            str(synthetic_700x460),
            "--runs-dir",
            str(smoke_run.parent),
        ]
    )
    assert code == 2
    assert "already complete" in capsys.readouterr().err


def test_other_settings_in_an_existing_run_folder_are_refused(smoke_run, synthetic_700x460, capsys):
    (smoke_run / "COMPLETE").rename(smoke_run / "COMPLETE.bak")
    try:
        code = main(
            [
                "--preset",
                "smoke",
                "--deterministic",
                "--epochs",
                "3",
                "--data",
                str(synthetic_700x460),
                "--runs-dir",
                str(smoke_run.parent),
            ]
        )
    finally:
        (smoke_run / "COMPLETE.bak").rename(smoke_run / "COMPLETE")
    assert code == 2
    assert "epochs: 15 -> 3" in capsys.readouterr().err


def test_missing_dataset_gives_a_clear_message(tmp_path, capsys):
    code = main(
        [
            "--preset",
            "smoke",
            "--data",
            str(tmp_path / "nowhere"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tuning_resumes_after_kill_9(small_synthetic_breakhis, tmp_path):
    """The paper's fine-tuning path, tiny: killed with SIGKILL after its first checkpoint,
    started again with the same command, it finishes with one continuous history, and its
    history and predictions are those of the same command run without interruption
    (shuffle, augmentation and dropout continue where they were, not from the start)."""
    command = [
        sys.executable,
        "-m",
        "train.run",
        "--preset",
        "paper",
        "--weights",
        "none",
        "--protocols",
        "paper",
        "--epochs",
        "3",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--bootstrap",
        "20",
        "--deterministic",
        "--data",
        str(small_synthetic_breakhis),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    uninterrupted = subprocess.run(
        [*command, "--name", "uninterrupted"],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    command += ["--name", "resume"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    fold = tmp_path / "runs" / "resume" / "paper" / "paper"
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (fold / "checkpoint" / "latest.json").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads((fold / "checkpoint" / "latest.json").read_text())
    killed_after = int(state["latest"].split("-")[1])
    assert killed_after < 3, "the run finished before it could be killed"
    assert not (fold / "metrics.json").exists()

    finished = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming after epoch {killed_after}" in finished.stderr
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert {"test_loss", "test_accuracy"} <= set(history)  # the paper's per-epoch test curves
    audit = json.loads((tmp_path / "runs" / "resume" / "paper" / "splits.json").read_text())
    assert audit["splits"][0]["audit"]["test_patients_in_train"] == 10  # every test patient
    assert (tmp_path / "runs" / "resume" / "COMPLETE").exists()

    baseline = tmp_path / "runs" / "uninterrupted" / "paper" / "paper"
    expected = pd.read_csv(baseline / "history.csv")
    for column in ("loss", "accuracy", "test_loss"):
        assert np.allclose(history[column], expected[column], rtol=1e-4, atol=1e-6), column
    resumed_predictions = pd.read_csv(fold / "predictions.csv")
    expected_predictions = pd.read_csv(baseline / "predictions.csv")
    assert resumed_predictions["path"].tolist() == expected_predictions["path"].tolist()
    assert np.allclose(
        resumed_predictions["logit"], expected_predictions["logit"], rtol=1e-4, atol=1e-5
    )


def _run_killed_once(command: list[str], fold: Path, epochs: int) -> int:
    """Start ``command``, SIGKILL it once ``fold`` has a checkpoint, return the epoch it was
    killed after."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pointer = fold / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 300
    while not pointer.exists():
        assert process.poll() is None, "the run ended before the fold's first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = int(json.loads(pointer.read_text())["latest"].split("-")[1])
    assert killed_after < epochs, "the fold finished before it could be killed"
    assert not (fold / "metrics.json").exists()
    return killed_after


@pytest.mark.slow
def test_cached_feature_heads_resume_after_kill_9_in_a_later_fold(no_signal_manifest, tmp_path):
    """The issue's case: the head on cached features, killed in its second fold and started
    again, must give the uninterrupted run's history and predictions. In a new process the
    resumed head's dropout generator has another name than the one saved (the first fold's
    head took ``seed_generator_1``), which once left its dropout stream restarted. The
    losses are compared relatively (they become small), labels without signal and a slow
    learning rate keep them from vanishing."""
    epochs = 3
    command = [
        sys.executable,
        "-m",
        "train.run",
        *slow_smoke_arguments(no_signal_manifest, tmp_path),
        "--folds",
        "2",
        "--epochs",
        str(epochs),
        "--steps-per-epoch",
        "200",  # slow enough epochs for the kill to land mid-fold
        "--deterministic",
        "--quiet",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    baseline = subprocess.run(
        [*command, "--name", "uninterrupted"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    command += ["--name", "resume"]
    fold = tmp_path / "resume" / "patient" / "patient-fold2"
    killed_after = _run_killed_once(command, fold, epochs)
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming after epoch {killed_after}" in finished.stderr
    # Random weights (the smoke preset's) are no reason to redo the feature pass on resume:
    # the cache key holds the seed that drew them.
    assert "features reused from" in finished.stderr
    assert len(list(RunFolder(tmp_path / "resume").cache_dir.glob("features-*.npy"))) == 1

    expected_fold = tmp_path / "uninterrupted" / "patient" / "patient-fold2"
    history, expected = (pd.read_csv(f / "history.csv") for f in (fold, expected_fold))
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    assert (history["loss"] > 0).all(), "a zero loss would hide a restarted dropout stream"
    for column in ("loss", "val_loss", "test_loss"):
        assert np.allclose(history[column], expected[column], rtol=1e-5, atol=0), column
    resumed, uninterrupted = (pd.read_csv(f / "predictions.csv") for f in (fold, expected_fold))
    assert np.allclose(resumed["logit"], uninterrupted["logit"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gpu_switches_run_on_cpu(small_synthetic_breakhis, tmp_path, caplog):
    """Mixed precision, XLA and MirroredStrategy: the code paths a GPU run takes, exercised
    on the CPU (one replica). (Deterministic ops run in the smoke fixture above.)"""
    caplog.set_level(logging.INFO, logger="train")
    code = main(
        [
            "--preset",
            "smoke",
            "--mixed-precision",
            "mixed_float16",
            "--xla",
            "--multi-gpu",
            "--data",
            str(small_synthetic_breakhis),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--quiet",
        ]
    )
    assert code == 0
    assert "XLA on, precision policy mixed_float16, 1 replica" in caplog.text
    config = json.loads((tmp_path / "runs" / "smoke" / "config.json").read_text())
    assert config["mixed_precision"] == "mixed_float16" and config["xla"] and config["multi_gpu"]
    from model.artifact import load_artifact

    served = load_artifact(tmp_path / "runs" / "smoke" / "model").model
    # Trained in mixed precision, served in float32 (the app runs on CPUs).
    assert {layer.dtype_policy.compute_dtype for layer in served.layers} == {"float32"}


def test_kfold_protocol_end_to_end(small_synthetic_breakhis, tmp_path):
    """``--protocols kfold --folds 2``: both folds train, their test folds hold every patient
    once, the served model comes from it and the report says so."""
    runs = tmp_path / "runs"
    code = main(
        [
            "--preset",
            "smoke",
            "--protocols",
            "kfold",
            "--folds",
            "2",
            "--data",
            str(small_synthetic_breakhis),
            "--runs-dir",
            str(runs),
            "--quiet",
        ]
    )
    assert code == 0
    run = runs / "smoke"
    assignments = pd.read_csv(run / "kfold" / "splits.csv")
    tested = assignments[assignments["split"] == "test"]
    assert set(tested["name"]) == {"kfold-fold1", "kfold-fold2"}
    assert tested["path"].is_unique and len(tested) == 80  # every image (patient) tested once
    for fold in ("kfold-fold1", "kfold-fold2"):
        assert json.loads((run / "kfold" / fold / "metrics.json").read_text())["audit"][
            "patient_disjoint"
        ]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["served_model"] == {"protocol": "kfold", "fold": "kfold-fold1"}
    report = (run / "report.md").read_text()
    assert "**Every patient is tested exactly once:** the 2 test folds hold 10 patients" in report


def test_xla_with_determinism_is_refused(small_synthetic_breakhis, tmp_path, capsys):
    code = main(
        [
            "--preset",
            "smoke",
            "--xla",
            "--deterministic",
            "--data",
            str(small_synthetic_breakhis),
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_resume_rewrites_history_from_the_checkpoint(small_synthetic_breakhis, tmp_path):
    """A kill between publishing a checkpoint and rewriting history.csv (simulated: the CSV
    lost its last rows, the fold is not finished) is repaired when the run resumes."""
    args = [
        "--preset",
        "smoke",
        "--epochs",
        "4",
        "--data",
        str(small_synthetic_breakhis),
        "--runs-dir",
        str(tmp_path),
        "--quiet",
    ]
    assert main(args) == 0
    fold = tmp_path / "smoke" / "patient" / "patient-fold1"
    complete = pd.read_csv(fold / "history.csv")
    complete.head(2).to_csv(fold / "history.csv", index=False)
    (fold / "metrics.json").unlink()
    (tmp_path / "smoke" / "COMPLETE").unlink()
    (fold / "checkpoint" / ".staging-left-by-a-kill").mkdir()
    assert main(args) == 0
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert np.allclose(history["loss"], complete["loss"])
    assert not list((fold / "checkpoint").glob(".staging-*"))  # cleaned with the old epoch


def test_resuming_on_another_dataset_is_refused(small_synthetic_breakhis, tmp_path, capsys):
    other = make_synthetic_breakhis(
        tmp_path / "other", patients_per_class=2, images_per_magnification=1, size=(70, 46)
    )
    run = tmp_path / "runs" / "smoke"
    run.mkdir(parents=True)
    (run / "data.txt").write_text(f"{small_synthetic_breakhis.resolve()}\n")
    from train.config import resolve_config

    (run / "config.json").write_text(resolve_config("smoke").to_json())
    code = main(["--preset", "smoke", "--data", str(other), "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "was started on the dataset" in capsys.readouterr().err


# --- what the served model's card lets the app trust --------------------------------------
def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _foreign_images(rng: np.random.Generator) -> dict[str, bytes]:
    gradient = np.tile(np.linspace(0, 255, 700), (460, 1))
    return {
        "noise": _png(rng.integers(0, 256, (460, 700, 3), dtype=np.uint8)),
        "gradient": _png(np.dstack([gradient, gradient[:, ::-1], gradient]).astype(np.uint8)),
        "blank": _png(np.full((460, 700, 3), 246, np.uint8)),
        "1x1": _png(np.full((1, 1, 3), 200, np.uint8)),
    }


def test_a_learning_run_is_calibrated_and_passes_the_gate(smoke_run):
    from model.artifact import read_card
    from model.card import ModelCard
    from model.trust import assess_model

    card = read_card(smoke_run)
    assert card.calibration is not None and card.calibration.method == "temperature"
    assert "validation part of patient-fold1" in card.calibration.fitted_on
    assert card.applicability is not None and card.training_images is not None
    assert ModelCard.from_json(card.to_json()) == card  # calibration and summary survive
    assert assess_model(card).level in {"evaluated", "weak"}
    fold = json.loads((smoke_run / "patient" / "patient-fold1" / "metrics.json").read_text())
    before = fold["metrics"]["calibration_uncalibrated"]["ece"]
    after = fold["metrics"]["calibration"]["ece"]
    assert after <= before + 0.05, (before, after)  # calibration must not make it worse
    predictions = pd.read_csv(smoke_run / "patient" / "patient-fold1" / "predictions.csv")
    assert {"logit", "raw_probability", "probability"} <= set(predictions)
    assert card.architecture.startswith("ResNet-50 (random initial weights")
    assert "ImageNet-pretrained" not in card.to_json()


def test_held_out_patients_are_typical_and_foreign_images_are_flagged(smoke_run):
    from model.analysis import Analyzer
    from train.synthetic import render_tile

    analyzer = Analyzer.from_path(smoke_run)
    predictions = pd.read_csv(smoke_run / "patient" / "patient-fold1" / "predictions.csv")
    test = predictions[predictions["part"] == "test"]
    verdicts = [analyzer.analyze(Path(p).read_bytes()).applicability for p in test["path"]]
    assert np.mean([v == "typical" for v in verdicts]) >= 0.9, verdicts

    rng = np.random.default_rng(5)
    restained = render_tile(rng, 1, stain_shift=np.array([-70.0, 45.0, -60.0]))
    foreign = {"shifted stain": _png(restained), **_foreign_images(rng)}
    for name, data in foreign.items():
        result = analyzer.analyze(data)
        assert result.applicability in {"unusual", "unlike"}, (name, result)
    tiny = analyzer.analyze(foreign["1x1"])
    assert tiny.label is None and "too_small" in tiny.quality


def test_a_model_without_signal_is_not_shown_to_be_better_than_chance(synthetic_700x460, tmp_path):
    """Labels scrambled by patient: nothing to learn. The gate must withhold every label.
    The files get non-BreakHis names, so this is "another dataset" with 0/1 labels."""
    from model.analysis import Analyzer
    from model.trust import assess_model
    from train.dataset import index_dataset

    images = index_dataset(synthetic_700x460, check_images=False).images
    rng = np.random.default_rng(11)
    patients = sorted(images["patient"].unique())
    labels = rng.permutation([i % 2 for i in range(len(patients))])
    scrambled = dict(zip(patients, labels, strict=True))
    manifest = tmp_path / "no-signal.csv"
    (tmp_path / "images").mkdir()
    renamed = []
    for number, path in enumerate(images["path"]):
        copy = tmp_path / "images" / f"tile-{number:04d}.png"
        shutil.copyfile(path, copy)  # (a symlink would resolve to the BreakHis name)
        renamed.append(str(copy))
    images.assign(path=renamed, label=images["patient"].map(scrambled))[
        ["path", "label", "patient"]
    ].to_csv(manifest, index=False)
    code = main(
        [
            "--preset",
            "smoke",
            "--data",
            str(manifest),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--name",
            "no-signal",
            "--quiet",
        ]
    )
    assert code == 0
    run = tmp_path / "runs" / "no-signal"
    analyzer = Analyzer.from_path(run)
    assert assess_model(analyzer.card).level == "unproven"
    assert analyzer.card.labels == {0: "negative", 1: "positive"}  # 0/1 in the CSV: no names
    result = analyzer.analyze(Path(renamed[0]).read_bytes())
    assert result.label is None and result.withheld
    report = (run / "report.md").read_text()
    assert "not BreakHis images" in report
    assert "Abu Al-Haija & Adebanjo 2020, Table II (ResNet-50)" not in report


@pytest.mark.slow
def test_a_model_trained_on_the_real_sample_flags_noise_and_gradients(breakhis_sample, tmp_path):
    from model.analysis import Analyzer

    runs = tmp_path / "runs"
    assert (
        main(
            [
                "--preset",
                "smoke",
                "--data",
                str(breakhis_sample),
                "--runs-dir",
                str(runs),
                "--quiet",
            ]
        )
        == 0
    )
    analyzer = Analyzer.from_path(runs / "smoke")
    foreign = _foreign_images(np.random.default_rng(8))
    for name in ("noise", "gradient"):
        assert analyzer.analyze(foreign[name]).applicability in {"unusual", "unlike"}, name
    real = sorted(breakhis_sample.glob("BreaKHis_v1/**/*.png"))[:5]
    assert all(analyzer.analyze(p.read_bytes()).quality == () for p in real)
