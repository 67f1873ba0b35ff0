"""``train.trainer`` pieces on their own: the early-stopping rule read from a history, and the
seed generator states a checkpoint carries."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.config import ModelConfig
from model.network import build_head_model
from train.trainer import best_epoch, patience_exhausted, restore_seed_states, seed_states


def _dropout_masks(model: keras.Model, features: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(model(features, training=True)) for _ in range(3)])


def test_seed_states_come_back_in_a_process_that_built_other_models(tmp_path):
    """A model loaded in the process that saved it gets renamed seed generators
    (``seed_generator_1``...): the states are restored by position, so its dropout masks
    continue the saved model's stream instead of starting again."""
    features = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    model = build_head_model(16, ModelConfig(), seed=7)
    _dropout_masks(model, features)  # move the stream on from its start
    model.save(tmp_path / "head.keras")
    saved = seed_states(model)
    expected = _dropout_masks(model, features)

    loaded = keras.saving.load_model(tmp_path / "head.keras")
    assert list(seed_states(loaded)) != list(saved), "same paths: this test shows nothing"
    restore_seed_states(loaded, saved)
    assert np.allclose(_dropout_masks(loaded, features), expected)


def rows(*losses: float) -> list[dict[str, float]]:
    return [{"epoch": epoch, "val_loss": loss} for epoch, loss in enumerate(losses, 1)]


def test_patience_counts_epochs_since_the_best_one():
    history = rows(0.5, 0.4, 0.45, 0.41, 0.42)
    assert best_epoch(history, "val_loss") == 2
    assert patience_exhausted(history, "val_loss", 3)
    assert not patience_exhausted(history, "val_loss", 4)
    assert not patience_exhausted(history, "val_loss", 0)  # 0: train every epoch
    assert not patience_exhausted([], "val_loss", 3)


def test_an_equal_loss_is_not_an_improvement_and_nan_never_is():
    assert best_epoch(rows(0.4, 0.4, 0.4), "val_loss") == 1
    assert patience_exhausted(rows(0.4, 0.4, 0.4), "val_loss", 2)
    assert best_epoch(rows(float("nan"), 0.5, float("nan")), "val_loss") == 2
    assert best_epoch(rows(float("nan"), float("nan")), "val_loss") is None
    assert patience_exhausted(rows(float("nan"), float("nan")), "val_loss", 2)
    # Keras would take the first NaN as its best and stop after epoch 3 here; the served
    # epoch (RunCheckpoint's best) is never a NaN one, so neither is the stopping reference.
    nan_first = [float("nan"), 0.5, 0.4, 0.3, 0.2]
    assert [patience_exhausted(rows(*nan_first[:n]), "val_loss", 2) for n in (3, 5)] == [
        False,
        False,
    ]


def _keras_stop_epoch(losses: list[float], patience: int, min_delta: float) -> int | None:
    """The epoch (1-based) after which Keras's own EarlyStopping ends training."""
    stopper = keras.callbacks.EarlyStopping("val_loss", patience=patience, min_delta=min_delta)
    stopper.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopper.model.stop_training = False
    stopper.on_train_begin()
    for epoch, loss in enumerate(losses):
        stopper.on_epoch_end(epoch, {"val_loss": loss})
        if stopper.model.stop_training:
            return epoch + 1
    return None


def _history_stop_epoch(losses: list[float], patience: int, min_delta: float) -> int | None:
    for epoch in range(1, len(losses) + 1):
        if patience_exhausted(rows(*losses[:epoch]), "val_loss", patience, min_delta):
            return epoch
    return None


@pytest.mark.parametrize("min_delta", [0.0, 1e-4, 0.02])
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_the_history_rule_stops_where_keras_early_stopping_does(patience, min_delta):
    rng = np.random.default_rng(patience)
    sequences = [
        [0.3, 0.2, 0.15, 0.16, 0.17, 0.18, 0.19],  # a minimum, then rising
        [0.1 - 3e-5 * epoch for epoch in range(12)],  # creeping down by less than 1e-4
        [0.5, 0.49, 0.4899, 0.48, 0.4799, 0.4798, 0.47, 0.5, 0.5, 0.5],
        list(0.2 + 0.05 * rng.standard_normal(15)),
    ]
    for losses in sequences:
        expected = _keras_stop_epoch(losses, patience, min_delta)
        assert _history_stop_epoch(losses, patience, min_delta) == expected, losses
