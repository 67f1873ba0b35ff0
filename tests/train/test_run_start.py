"""How ``python -m train.run`` starts: a refused start writes nothing (so the corrected
command is not refused by a folder it left), protocols the data cannot support are refused
or left out before any work, and the console carries no TensorFlow noise, no repeated or
endless warnings and no per-epoch lines under ``--quiet``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from train.dataset import index_dataset
from train.run import main

REPO = Path(__file__).resolve().parents[2]


def _manifest_without_magnifications(source: Path, manifest: Path) -> pd.DataFrame:
    """A CSV manifest (path, label, patient) of ``source``'s images, with no magnification
    column, where every patient also has one image of the other class (so ten patients get
    the majority-label warning), plus one file that is not an image at all."""
    images = index_dataset(source).images
    folder = manifest.parent / "images"
    folder.mkdir()
    # Not BreakHis names: a manifest's BreakHis file names would give the magnifications.
    paths = [folder / f"image-{number:03d}.png" for number in range(len(images))]
    for original, copy in zip(images["path"], paths, strict=True):
        shutil.copyfile(original, copy)
    table = pd.DataFrame(
        {
            "path": [str(path) for path in paths],
            "label": images["label"],
            "patient": images["patient"],
        }
    )
    first_of_each_patient = ~table["patient"].duplicated()
    table.loc[first_of_each_patient, "label"] = 1 - table.loc[first_of_each_patient, "label"]
    broken = manifest.parent / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not a PNG")
    row = {"path": str(broken), "label": 1, "patient": table["patient"].iloc[0]}
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table.to_csv(manifest, index=False)
    return table


def _written(runs: Path) -> list[str]:
    return sorted(str(path.relative_to(runs)) for path in runs.rglob("*")) if runs.exists() else []


def test_refused_starts_write_nothing_and_the_corrected_command_runs(
    small_synthetic_breakhis, tmp_path, capsys, monkeypatch
):
    """No data, then a malformed CSV, then ImageNet weights that cannot be downloaded, then
    weights that do not load: each is refused with its reason and leaves nothing under
    runs/; the corrected command then runs (not refused as "started on another dataset" or
    "other settings")."""
    runs = tmp_path / "runs"
    manifest = tmp_path / "manifest.csv"
    common = ["--preset", "smoke", "--epochs", "2", "--runs-dir", str(runs), "--quiet"]

    assert main([*common, "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert _written(runs) == []

    manifest.write_text("file,diagnosis\na.png,benign\n")
    assert main([*common, "--data", str(manifest)]) == 2
    assert "label" in capsys.readouterr().err
    assert _written(runs) == []

    _manifest_without_magnifications(small_synthetic_breakhis, manifest)
    # Offline: an empty Keras cache and a proxy that refuses connections, so Keras's real
    # download code runs and fails as on a machine without internet.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert main([*common, "--data", str(manifest), "--weights", "imagenet"]) == 2
    error = capsys.readouterr().err
    assert "ImageNet weights for ResNet-50 could not be downloaded" in error
    assert "--weights none" in error
    assert _written(runs) == []

    not_weights = tmp_path / "resnet50.weights.h5"
    not_weights.write_bytes(b"not an HDF5 file")
    assert main([*common, "--data", str(manifest), "--weights", str(not_weights)]) == 2
    error = capsys.readouterr().err
    assert "could not load ResNet-50 weights" in error
    assert "--weights none" in error  # the offline route
    assert _written(runs) == []

    assert main([*common, "--data", str(manifest)]) == 0
    out = capsys.readouterr().out
    # The smoke preset runs only the patient protocol: nothing to leave out here.
    assert "left out" not in out
    run = runs / "smoke"
    assert (run / "COMPLETE").is_file()
    skipped = pd.read_csv(run / "skipped_files.csv")
    assert skipped["path"].str.endswith("broken.png").tolist() == [True]


def test_protocols_the_data_cannot_support_are_refused_before_any_work(
    small_synthetic_breakhis, tmp_path, capsys
):
    manifest = tmp_path / "manifest.csv"
    _manifest_without_magnifications(small_synthetic_breakhis, manifest)
    runs = tmp_path / "runs"
    code = main(
        [
            "--preset",
            "smoke",
            "--protocols",
            "patient",
            "magnification",
            "--data",
            str(manifest),
            "--runs-dir",
            str(runs),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "cannot support the magnification protocol" in error
    assert "Protocols that can run: patient" in error
    assert _written(runs) == []  # not even the decode cache: refused before decoding


@pytest.mark.slow
def test_default_protocols_without_magnifications_and_a_quiet_console(
    small_synthetic_breakhis, tmp_path
):
    """The quick preset's defaults (paper + patient) on data without magnifications: the
    paper protocol is left out with a note and the patient one runs. The console (a real
    process) has no TensorFlow start-up noise, no Keras shuffle warning, each majority-label
    warning once and summarised, and no epoch lines under --quiet."""
    manifest = tmp_path / "manifest.csv"
    table = _manifest_without_magnifications(small_synthetic_breakhis, manifest)
    patients = table["patient"].nunique()
    environment = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "-1"}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    command = [
        sys.executable,
        "-m",
        "train.run",
        "--preset",
        "quick",
        "--weights",
        "none",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--data",
        str(manifest),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    finished = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )
    console = finished.stdout + finished.stderr
    assert finished.returncode == 0, console[-3000:]
    assert "note: left out the paper protocol" in console
    run = tmp_path / "runs" / "quick"
    assert (run / "patient").is_dir()
    assert not (run / "paper").exists()

    noises = ("cuInit", "absl::InitializeLog", "oneDNN", "shuffle=True", "retracing", "Epoch 1/")
    for noise in noises:
        assert noise not in console, noise
    lines = console.splitlines()
    # Said once for the whole run, all patients counted, the list cut short:
    stratified = [line for line in lines if "are stratified by their majority class" in line]
    assert len(stratified) == 1, stratified
    assert f"class: {patients} (" in stratified[0] and ", ...)" in stratified[0]
    # Each fold's evaluation meets its own mixed patients: said for the first fold only.
    labelled = [line for line in lines if "get their majority label" in line]
    assert len(labelled) <= 1, labelled
    assert "(s)" not in console
    # The patient protocol's five folds, each announced once (its audit line), not again
    # for the planning pass that made the splits before any work.
    assert sum("patient-fold1: train" in line for line in lines) == 1
