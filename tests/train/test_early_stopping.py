"""Early stopping (``--patience``): a fold stops once its validation loss stops improving,
serves the best epoch, and stops at the same epoch when it was interrupted and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import slow_smoke_arguments
from train import trainer
from train.run import main

PATIENCE = 3


def _arguments(manifest: Path, runs: Path, name: str) -> list[str]:
    return [
        *slow_smoke_arguments(manifest, runs),
        "--protocols",
        "patient",
        "--epochs",
        "15",
        "--patience",
        str(PATIENCE),
        "--min-delta",
        "0",  # every fall counts: the stop is then exactly PATIENCE epochs after the lowest
        "--deterministic",
        "--name",
        name,
        "--quiet",
    ]


def _fold(runs: Path, name: str) -> Path:
    return runs / name / "patient" / "patient-fold1"


@pytest.fixture(scope="module")
def uninterrupted(no_signal_manifest, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(_arguments(no_signal_manifest, runs, "uninterrupted")) == 0
    return _fold(runs, "uninterrupted")


def test_a_fold_stops_once_validation_stops_improving_and_serves_the_best_epoch(uninterrupted):
    history = pd.read_csv(uninterrupted / "history.csv")
    document = json.loads((uninterrupted / "metrics.json").read_text())
    best = int(history["val_loss"].idxmin()) + 1
    assert len(history) < 15, "the validation loss kept improving: nothing stopped early"
    assert len(history) == best + PATIENCE  # not one epoch sooner, not one later
    assert document["epochs_trained"] == len(history)
    assert document["best_epoch"] == best
    assert document["best_val_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-6)
    predictions = pd.read_csv(uninterrupted / "predictions.csv")
    val = predictions[predictions["part"] == "val"]
    served_loss = float(np.mean((val["raw_probability"] - val["label"]) ** 2))
    assert served_loss == pytest.approx(history["val_loss"].min(), rel=1e-3)
    card = json.loads((uninterrupted / "model" / "model_card.json").read_text())
    assert f"stopped after epoch {len(history)} of 15" in card["training"]["notes"]
    assert card["training"]["epochs"] == len(history)  # what it trained, not the most it could
    report = (uninterrupted.parents[1] / "report.md").read_text()
    assert f"| {len(history)} ({best}) |" in report


@pytest.mark.parametrize("interrupt_after", ["before the stop", "at the stop"])
def test_an_interrupted_fold_stops_at_the_same_epoch(
    interrupt_after, uninterrupted, no_signal_manifest, tmp_path, monkeypatch
):
    """Ctrl-C right after a checkpoint, then the same command: the resumed fold's history and
    predictions are the uninterrupted fold's. Interrupted at the stop itself (the last
    checkpoint written, the fold not yet evaluated), the resumed fold trains no more epochs."""
    expected = pd.read_csv(uninterrupted / "history.csv")
    stop_epoch = len(expected)
    interrupt_at = stop_epoch - 1 if interrupt_after == "before the stop" else stop_epoch
    save = trainer.RunCheckpoint.on_epoch_end

    def save_then_interrupt(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch + 1 == interrupt_at:
            raise KeyboardInterrupt

    arguments = _arguments(no_signal_manifest, tmp_path, "resumed")
    with monkeypatch.context() as patch:
        patch.setattr(trainer.RunCheckpoint, "on_epoch_end", save_then_interrupt)
        assert main(arguments) == 130
    fold = _fold(tmp_path, "resumed")
    assert not (fold / "metrics.json").exists()
    assert len(pd.read_csv(fold / "history.csv")) == interrupt_at

    assert main(arguments) == 0
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == expected["epoch"].tolist()
    for column in ("loss", "val_loss", "test_loss"):
        assert np.allclose(history[column], expected[column], rtol=1e-5, atol=1e-7), column
    document = json.loads((fold / "metrics.json").read_text())
    assert document["epochs_trained"] == stop_epoch
    resumed = pd.read_csv(fold / "predictions.csv")
    baseline = pd.read_csv(uninterrupted / "predictions.csv")
    assert np.allclose(resumed["logit"], baseline["logit"], rtol=1e-5, atol=1e-6)
