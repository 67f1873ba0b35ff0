"""``train.trainer`` pieces on their own: the early-stopping rule read from a history, and the
seed generator states a checkpoint carries."""

from __future__ import annotations

import keras
import numpy as np

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
