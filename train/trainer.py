"""Train one split (fold) into an evaluated model artifact, resumable after any interruption.

Two paths share checkpoints, history and evaluation:

* **fine-tuning** (``paper`` preset): the whole network trains on augmented ``tf.data``
  batches; mixed precision, XLA and ``MirroredStrategy`` are switches of the config.
* **cached features** (``quick`` and ``smoke``): ResNet-50 is frozen, so its pooled features
  are computed once per run (:func:`compute_features`) and only the head trains on them; the
  trained head is then copied into the full network, which is what gets saved.

Checkpoints (:class:`RunCheckpoint`) are written after every epoch into a fresh folder and
published by atomically replacing a one-line pointer file, so a process killed at any moment
(even ``kill -9`` while saving) leaves the previous complete checkpoint in place. The history
lives inside the checkpoint and ``history.csv`` is rewritten from it, so a resumed run's
history continues without gaps or duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from model.applicability import FeatureSummary, fit_feature_summary
from model.artifact import save_artifact
from model.calibration import fit_calibration, sigmoid
from model.card import ModelCard, TrainingInfo, describe_architecture
from model.config import APPLICABILITY_LAYER, COARSE_LAYER, LOGIT_LAYER, ModelConfig
from model.files import staged_directory, write_text_atomically
from model.network import (
    LOSS,
    OPTIMIZER,
    build_head_model,
    build_model,
    compile_model,
    copy_head_weights,
    feature_extractor,
)
from model.quality import ImageProfile
from train.config import TrainConfig, steps_per_execution_for
from train.console import counted, progress
from train.evaluation import fold_evaluation
from train.metrics import ThresholdChoice, evaluate_predictions, select_threshold
from train.metrics import calibration as reliability
from train.pipeline import (
    DeviceAugmentation,
    describe_augmentation,
    epoch_batches,
    make_dataset,
    save_array_atomically,
)
from train.protocols import protocol as protocol_spec
from train.run_folder import FoldDocument, FoldFolder
from train.splits import Split
from train.staining import fit_fold_reference, normalise_images, stain_matrices

logger = logging.getLogger(__name__)

CHECKPOINT_POINTER = "latest.json"


# --- checkpoints --------------------------------------------------------------------------
class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: model + optimizer + history into ``epoch-NNNN/``, then the pointer.

    With ``monitor`` (e.g. ``val_loss``), the weights of the best epoch so far are kept in
    the checkpoint as ``best.weights.h5`` for model selection at the end. The checkpoint
    folder's inside (``latest.json`` naming ``epoch-NNNN/`` with ``model.keras``,
    ``best.weights.h5`` and ``state.json``) is written here and read by
    :func:`latest_checkpoint` only.
    """

    def __init__(
        self,
        folder: FoldFolder,
        history: list[dict[str, Any]],
        monitor: str | None,
        best: float | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.directory = folder.checkpoint_dir
        self.history = history
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        improved = (
            self.monitor is not None
            and math.isfinite(row.get(self.monitor, math.nan))  # a NaN epoch is never best
            and (self.best is None or row[self.monitor] < self.best)
        )
        if improved:
            self.best = row[self.monitor]
        previous = latest_checkpoint(self.directory)
        target = self.directory / f"epoch-{epoch + 1:04d}"
        with staged_directory(target) as staging:
            self.model.save(staging / "model.keras")  # includes the optimizer state
            if improved:
                self.model.save_weights(staging / "best.weights.h5")
            elif previous is not None and (previous / "best.weights.h5").exists():
                os.link(previous / "best.weights.h5", staging / "best.weights.h5")
            state = {
                "epoch": epoch + 1,
                "history": self.history,
                "best": self.best,
                "monitor": self.monitor,
                "seed_states": seed_states(self.model),
            }
            (staging / "state.json").write_text(json.dumps(state, indent=1))
        write_text_atomically(
            self.directory / CHECKPOINT_POINTER, json.dumps({"latest": target.name})
        )
        self.folder.write_history(self.history)
        remove_stale_checkpoints(self.directory, keep=target.name)


def _seed_state_variables(model: keras.Model) -> list[keras.Variable]:
    return [variable for variable in model.variables if variable.name == "seed_generator_state"]


def seed_states(model: keras.Model) -> dict[str, list[int]]:
    """The state of every Keras seed generator in ``model`` (its dropout masks' RNG), in the
    model's variable order.

    ``model.save`` does not keep them (a loaded model's dropout starts its stream again), so
    the checkpoint does, and :func:`restore_seed_states` puts them back on resume."""
    return {
        variable.path: [int(value) for value in np.asarray(variable.numpy()).ravel()]
        for variable in _seed_state_variables(model)
    }


def restore_seed_states(model: keras.Model, states: dict[str, list[int]]) -> None:
    """Put back the seed generator states :func:`seed_states` saved, by position: the same
    architecture lists its generators in the same order, while their paths carry a
    process-wide counter (``seed_generator`` in one process is ``seed_generator_1`` in one
    that built another model first)."""
    variables = _seed_state_variables(model)
    if not states:  # a checkpoint written before the states were kept
        return
    if len(states) != len(variables):
        raise ValueError(
            f"the checkpoint holds {len(states)} seed generator states, the model has "
            f"{len(variables)}: not the same architecture"
        )
    for variable, values in zip(variables, states.values(), strict=True):
        variable.assign(np.asarray(values, dtype=variable.dtype).reshape(variable.shape))


def remove_stale_checkpoints(directory: Path, keep: str | None = None) -> None:
    """Delete older epochs and the hidden staging folders a killed save leaves behind."""
    for entry in directory.iterdir():
        stale = entry.name.startswith(("epoch-", ".")) and entry.name != keep
        if stale and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def latest_checkpoint(directory: Path) -> Path | None:
    """The folder named by the pointer file, or None when there is no complete checkpoint."""
    pointer = Path(directory) / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    folder = pointer.parent / json.loads(pointer.read_text())["latest"]
    return folder if (folder / "state.json").is_file() else None


def best_epoch(history: list[dict[str, Any]], monitor: str) -> int | None:
    """The epoch (1-based) with the lowest ``monitor``, the first of equal ones (only a
    strict improvement counts, as in :class:`RunCheckpoint`); None when no epoch has a
    finite value.

    Example:
        >>> best_epoch([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}], "val_loss")
        2
    """
    best, lowest = None, math.inf
    for row in history:
        value = row.get(monitor)
        if value is not None and math.isfinite(value) and value < lowest:
            best, lowest = int(row["epoch"]), value
    return best


def patience_exhausted(
    history: list[dict[str, Any]], monitor: str, patience: int, min_delta: float = 0.0
) -> bool:
    """Whether ``patience`` epochs have passed without ``monitor`` improving by more than
    ``min_delta`` on the best value so far: Keras's ``EarlyStopping`` rule, read from the
    fold's history rather than kept in a callback's memory, so a resumed fold stops at the
    epoch an uninterrupted one does. A loss creeping down by less than ``min_delta`` per
    epoch does not keep a fold training. ``patience`` 0 never stops. Unlike Keras, a NaN
    loss is never the best one (nor is it in :class:`RunCheckpoint`, whose best is served).

    Example:
        >>> losses = [0.5, 0.4, 0.45, 0.41, 0.42]
        >>> rows = [{"epoch": e, "val_loss": v} for e, v in enumerate(losses, 1)]
        >>> patience_exhausted(rows, "val_loss", 3), patience_exhausted(rows, "val_loss", 4)
        (True, False)
        >>> creeping = [{"epoch": e, "val_loss": 0.1 - 1e-6 * e} for e in range(1, 4)]
        >>> patience_exhausted(creeping, "val_loss", 2, min_delta=1e-4)
        True
    """
    if patience < 1 or not history:
        return False
    reference, improved_at = math.inf, 0
    for row in history:
        value = row.get(monitor)
        if value is not None and math.isfinite(value) and value + min_delta < reference:
            reference, improved_at = value, int(row["epoch"])
    return int(history[-1]["epoch"]) - improved_at >= patience


class EarlyStoppingOnHistory(keras.callbacks.Callback):
    """Ends ``fit`` once :func:`patience_exhausted` holds for ``history``, the list
    :class:`RunCheckpoint` appends each epoch's row to: it must come after that callback,
    so that it reads the epoch just finished (checked: a misordered list fails at once
    rather than stopping one epoch late)."""

    def __init__(
        self, history: list[dict[str, Any]], monitor: str, patience: int, min_delta: float
    ) -> None:
        super().__init__()
        self.history, self.monitor = history, monitor
        self.patience, self.min_delta = patience, min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.history or self.history[-1]["epoch"] != epoch + 1:
            raise RuntimeError("EarlyStoppingOnHistory must come after RunCheckpoint")
        if patience_exhausted(self.history, self.monitor, self.patience, self.min_delta):
            self.model.stop_training = True


class TestSetMonitor(keras.callbacks.Callback):
    """Evaluate the test set after every epoch (``test_loss``, ``test_accuracy``...), as the
    paper plots it. Reported as monitoring only: nothing is chosen on these numbers."""

    def __init__(self, dataset: tf.data.Dataset) -> None:
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        results = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"test_{name}": value for name, value in results.items()})


# --- features -----------------------------------------------------------------------------
def compute_features(
    model: keras.Model,
    images: np.ndarray,
    config: ModelConfig,
    batch_size: int,
    cache_file: Path | None,
) -> np.ndarray:
    """Pooled ResNet-50 features of every image (n, 2048), cached in ``cache_file``."""
    if cache_file is not None and cache_file.is_file():
        features = np.load(cache_file)
        if len(features) == len(images):
            logger.info("features reused from %s", cache_file)
            return features
    dataset = make_dataset(images, np.zeros(len(images)), config.input, batch_size, training=False)
    extractor = feature_extractor(model)
    batches = progress(
        dataset.map(lambda x, y: x),
        total=math.ceil(len(images) / batch_size),
        description="ResNet-50 features",
        unit="batch",
    )
    parts = [np.asarray(extractor.predict_on_batch(batch)) for batch in batches]
    features = np.concatenate(parts) if parts else np.zeros((0, extractor.output.shape[-1]))
    if cache_file is not None:
        save_array_atomically(cache_file, features)
    return features


# --- one fold -----------------------------------------------------------------------------
@dataclass
class RunData:
    """The data every fold of a run shares: the index, decoded images, cached features."""

    images: pd.DataFrame  # the dataset index
    pixels: np.ndarray  # uint8 (n, h, w, 3), rows aligned with ``images``
    features: np.ndarray | None  # (n, d) for the feature path
    feature_model: keras.Model | None  # the frozen full network the features came from
    sizes: np.ndarray | None = None  # (n, 2) original (width, height) of each image
    class_names: dict[int, str] | None = None  # label -> name, as the data names them
    _colour_means: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def rows(self, part: pd.DataFrame) -> np.ndarray:
        position = pd.Series(np.arange(len(self.images)), index=self.images["path"])
        return position.loc[part["path"]].to_numpy()

    def colour_means(self, rows: np.ndarray) -> np.ndarray:
        """Mean (R, G, B) of the images at ``rows``, from one pass over all the pixels made
        the first time (every fold asks for its training images'). ``replace()`` gives a
        new RunData (e.g. stain-normalised pixels) its own."""
        if self._colour_means is None:
            self._colour_means = self.pixels.reshape(len(self.pixels), -1, 3).mean(axis=1)
        return self._colour_means[rows]


def train_fold(
    config: TrainConfig,
    model_config: ModelConfig,
    split: Split,
    data: RunData,
    folder: FoldFolder,
    strategy: tf.distribute.Strategy,
    verbose: int | str = "auto",
) -> FoldDocument:
    """Train (or resume) one split and evaluate it; writes the fold folder."""
    run_data, stain_note = data, None
    if config.stain_norm != "none":
        data, model_config, stain_note = stain_normalised_fold(config, model_config, split, data)
    checkpoints = folder.checkpoint_dir
    checkpoints.mkdir(parents=True, exist_ok=True)
    rows = {part: data.rows(split.part(part)) for part in ("train", "val", "test")}
    labels = {part: split.part(part)["label"].to_numpy() for part in rows}
    use_features = config.feature_cache
    if use_features:
        # The head trains on standardised features (random or ImageNet features differ in
        # scale by orders of magnitude); the standardisation is folded into its first layer
        # when the head moves into the full network.
        feature_mean = data.features[rows["train"]].mean(axis=0)
        feature_scale = data.features[rows["train"]].std(axis=0)
        feature_scale[feature_scale < 1e-6] = 1.0
        standardised = ((data.features - feature_mean) / feature_scale).astype(np.float32)
    inputs = (
        (lambda part: standardised[rows[part]])
        if use_features
        else (lambda part: data.pixels[rows[part]])
    )

    matrices: dict[str, np.ndarray] = {}

    def dataset(part: str, training: bool) -> tf.data.Dataset:
        if use_features:
            return _feature_dataset(
                inputs(part),
                labels[part],
                config.batch_size,
                training,
                config.seed,
                initial_epoch,
                steps,
            )
        augment = config.augment and training and not on_device
        if augment and config.stain_augment == "macenko" and part not in matrices:
            matrices[part] = stain_matrices(inputs(part), model_config.input.stain_reference)
        return make_dataset(
            inputs(part),
            labels[part],
            model_config.input,
            config.batch_size,
            training=training,
            augment=augment,
            seed=config.seed,
            stain_augment=config.stain_augment,
            stain_matrices=matrices.get(part),
            first_epoch=initial_epoch,
            steps_per_epoch=steps,
        )

    history: list[dict[str, Any]] = []
    best = None
    initial_epoch = 0
    on_device = config.augment and config.augment_on_device and not use_features
    steps = config.steps_per_epoch or max(1, math.ceil(len(rows["train"]) / config.batch_size))
    execution = steps_per_execution_for(steps, config.steps_per_execution)
    resume_from = latest_checkpoint(checkpoints)
    remove_stale_checkpoints(checkpoints, keep=resume_from.name if resume_from else None)
    with strategy.scope():
        if resume_from is not None:
            state = json.loads((resume_from / "state.json").read_text())
            history, best, initial_epoch = state["history"], state["best"], state["epoch"]
            # The process may have died between publishing the checkpoint and rewriting the
            # CSV: the checkpoint's history is the truth.
            folder.write_history(history)
            network = keras.saving.load_model(resume_from / "model.keras")
            restore_seed_states(network, state.get("seed_states", {}))
            network.jit_compile = config.xla
            network.steps_per_execution = execution  # what compile() sets
            # The checkpoint says where its augmentation ran (a wrapper holds the layer).
            on_device = _is_device_wrapper(network)
            logger.info(
                "%s: resuming after epoch %d from %s", split.name, initial_epoch, resume_from
            )
        elif use_features:
            network = build_head_model(data.features.shape[1], model_config, seed=config.seed)
            compile_model(
                network, config.learning_rate, jit_compile=config.xla, steps_per_execution=execution
            )
        else:
            network = build_model(model_config, _weights(config), config.freeze, config.seed)
            if on_device:
                network = _device_wrapper(network, model_config, config)
            compile_model(
                network, config.learning_rate, jit_compile=config.xla, steps_per_execution=execution
            )

    logger.info(
        "%s: XLA %s, precision policy %s, %s",
        split.name,
        "on" if network.jit_compile is True else "off",
        keras.mixed_precision.global_policy().name,
        counted(strategy.num_replicas_in_sync, "replica"),
    )
    has_val = len(rows["val"]) > 0
    callbacks: list[keras.callbacks.Callback] = []
    if config.monitor_test:
        callbacks.append(TestSetMonitor(dataset("test", training=False)))
    checkpoint = RunCheckpoint(folder, history, "val_loss" if has_val else None, best)
    callbacks += [
        checkpoint,
        keras.callbacks.TensorBoard(log_dir=str(folder.tensorboard_dir)),
    ]
    patience = config.patience if has_val else 0  # nothing to watch without validation
    if patience:
        callbacks.append(EarlyStoppingOnHistory(history, "val_loss", patience, config.min_delta))
    logger.info("%s: %d steps per epoch, %d per execution", split.name, steps, execution)
    stopped = patience_exhausted(history, "val_loss", patience, config.min_delta)
    if initial_epoch < config.epochs and not stopped:
        network.fit(
            dataset("train", training=True),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=dataset("val", training=False) if has_val else None,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the datasets shuffle themselves, per epoch (epoch_batches)
        )
    epochs_trained = len(history)
    stop_note = _early_stop_note(history, patience, config.min_delta, config.epochs)
    if stop_note:
        logger.info("%s: %s", split.name, stop_note)
    final = latest_checkpoint(checkpoints)
    if has_val and final is not None and (final / "best.weights.h5").exists():
        network.load_weights(final / "best.weights.h5")  # model selection on validation
    if on_device:
        network = _inner_network(network)  # the augmentation layer stays behind

    logit_model = keras.Model(network.inputs, network.get_layer(LOGIT_LAYER).output)

    def logits(part: str) -> np.ndarray:
        if not len(rows[part]):
            return np.zeros((0,))
        batches = dataset(part, training=False).map(lambda x, y: x)
        return logit_model.predict(batches, verbose=0)[:, 0].astype(np.float64)

    val_logits, test_logits = logits("val"), logits("test")
    calibration = None
    if has_val and config.calibration != "none":
        calibration = fit_calibration(
            val_logits,
            labels["val"],
            config.calibration,  # type: ignore[arg-type]
            fitted_on=f"the validation part of {split.name}: {len(rows['val'])} images of "
            f"{split.audit.patients['val']} patients",
        )
    served = calibration.apply if calibration is not None else sigmoid
    val_probabilities, test_probabilities = served(val_logits), served(test_logits)
    # The threshold is chosen on the probabilities the model will serve (calibrated).
    threshold = (
        select_threshold(labels["val"], val_probabilities)
        if has_val
        else (ThresholdChoice(0.5, "default", "no validation part: default 0.5"))
    )
    test = split.test
    # Unknown patients (a CSV without ids) must not be lumped into one "patient".
    known_patients = test["patient"].notna().all()
    metrics = evaluate_predictions(
        labels["test"],
        test_probabilities,
        patients=test["patient"].astype(str).to_numpy() if known_patients else None,
        magnifications=test["magnification"].to_numpy(),
        threshold=threshold.threshold,
        n_bootstrap=config.bootstrap,
        seed=config.seed,
    )
    # The same test predictions before calibration, for the report's before/after.
    metrics["calibration_uncalibrated"] = reliability(labels["test"], sigmoid(test_logits))
    predictions = pd.concat(
        [
            split.part(part)[["path", "label", "patient", "magnification"]].assign(
                part=part,
                logit=values,
                raw_probability=sigmoid(values),
                probability=served(values),
            )
            for part, values in (("val", val_logits), ("test", test_logits))
        ],
        ignore_index=True,
    )
    folder.write_predictions(predictions)
    applicability = _feature_summary(
        split, rows, lambda part: _pooled_features(network, data, rows, part, dataset)
    )
    # The pixel checks compare uploads as they arrive, before any stain normalisation.
    profile = _image_profile(run_data, rows["train"])

    if use_features:
        copy_head_weights(network, data.feature_model, feature_mean, feature_scale)
        network = data.feature_model
    # The lowest validation loss of the whole history, resumed or not: the epoch whose
    # weights were loaded above.
    document = FoldDocument(
        split.name,
        threshold,
        metrics,
        split.audit.to_dict(),
        checkpoint.best,
        calibration,
        best_epoch=best_epoch(history, "val_loss") if has_val else None,
        epochs_trained=epochs_trained,
    )
    card = fold_card(config, model_config, split, document)
    card.calibration, card.applicability, card.training_images = (
        calibration,
        applicability,
        profile,
    )
    if data.class_names:
        card.labels = dict(data.class_names)
    if stop_note:
        card.training.notes += f"; {stop_note}"
    if stain_note:
        card.training.notes += f"; {stain_note}"
    save_artifact(float32_copy(network, model_config), card, folder.model_dir)
    folder.write_document(document)  # last: it marks the fold complete for a resumed run
    return document


def fold_card(
    config: TrainConfig, model_config: ModelConfig, split: Split, document: FoldDocument
) -> ModelCard:
    """The model card of one fold's model (the run's card adds every protocol's summary)."""
    audit = split.audit
    threshold = document.threshold
    return ModelCard(
        name=split.name,
        architecture=describe_architecture(config.weights),
        config=model_config,
        threshold=threshold.threshold,
        threshold_source=f"{threshold.method}: {threshold.reason}",
        training=TrainingInfo(
            trained=True,
            initial_weights=config.weights,
            protocol=split.protocol,
            preset=config.preset,
            epochs=document.epochs_trained or config.epochs,  # fewer after early stopping
            steps_per_epoch=config.steps_per_epoch,
            batch_size=config.batch_size,
            optimizer=OPTIMIZER,
            learning_rate=config.learning_rate,
            loss=LOSS,
            freeze=config.freeze,
            augmentation=describe_augmentation(config.augment, config.stain_augment),
            seed=config.seed,
            notes=f"split {split.name}: {audit.images['train']} train / "
            f"{audit.images['val']} validation / {audit.images['test']} test images",
        ),
        evaluation={
            split.protocol: fold_evaluation(
                protocol_spec(split.protocol), document, config.validation_fraction
            )
        },
    )


def stain_normalised_fold(
    config: TrainConfig, model_config: ModelConfig, split: Split, data: RunData
) -> tuple[RunData, ModelConfig, str]:
    """The fold's view of the run's data with stain normalisation: a reference fitted on its
    training images (:mod:`train.staining`), every image normalised with it, the frozen base's
    features recomputed on the normalised images, and the input contract that carries it."""
    train_rows = data.rows(split.train)
    fitted = fit_fold_reference(
        data.pixels[train_rows],
        split.train["label"].to_numpy(),
        split.train["patient"].astype(str).to_numpy(),
        config.stain_norm,  # type: ignore[arg-type]
        config.seed,
        split.name,
    )
    model_config = replace(
        model_config, input=model_config.input.with_stain_reference(fitted.reference)
    )
    normalised = normalise_images(data.pixels, fitted.reference)
    features = data.features
    if data.feature_model is not None:
        features = compute_features(data.feature_model, normalised.pixels, model_config, 64, None)
    note = normalised.describe(fitted.reference.display_name)
    return replace(data, pixels=normalised.pixels, features=features), model_config, note


# --- helpers ------------------------------------------------------------------------------
def _early_stop_note(
    history: list[dict[str, Any]], patience: int, min_delta: float, epochs: int
) -> str | None:
    """How a fold that stopped early stopped, for the log and the model card."""
    if len(history) >= epochs or not patience_exhausted(history, "val_loss", patience, min_delta):
        return None
    return (
        f"stopped after epoch {len(history)} of {epochs}: validation loss not improved by more "
        f"than {min_delta:g} for {patience} epochs (the lowest, epoch "
        f"{best_epoch(history, 'val_loss')}'s, weights kept)"
    )


def _pooled_features(
    network: keras.Model,
    data: RunData,
    rows: dict[str, np.ndarray],
    part: str,
    dataset: Any,
) -> np.ndarray:
    """The applicability features of a part's images: the global average of
    ``conv5_block3_out``, as the served model computes them (:mod:`model.explainer`)."""
    if not len(rows[part]):
        return np.zeros((0, 0))
    if data.features is not None and APPLICABILITY_LAYER == COARSE_LAYER:
        # Cached features of the frozen base: GAP already, or the flattened 3x5x2048 map.
        features = data.features[rows[part]]
        channels = data.feature_model.get_layer(APPLICABILITY_LAYER).output.shape[-1]
        return features.reshape(len(features), -1, channels).mean(axis=1)
    pooled = keras.layers.GlobalAveragePooling2D(name="applicability_pool")(
        network.get_layer(APPLICABILITY_LAYER).output
    )
    extractor = keras.Model(network.inputs, pooled)
    return extractor.predict(dataset(part, training=False).map(lambda x, y: x), verbose=0)


def _feature_summary(
    split: Split, rows: dict[str, np.ndarray], features_of: Any
) -> FeatureSummary | None:
    """The training images' feature summary, its cut-offs set on the validation images."""
    if len(rows["train"]) < 3:
        return None
    validation = features_of("val")
    return fit_feature_summary(
        features_of("train"),
        validation,
        fitted_on=f"{split.name}: {len(rows['train'])} training images; cut-offs on "
        f"{len(rows['val'])} validation images",
    )


def _image_profile(data: RunData, train_rows: np.ndarray) -> ImageProfile | None:
    """Sizes and mean colours of the training images (for the relative pixel checks)."""
    if data.sizes is None or not len(train_rows):
        return None
    return ImageProfile.from_measurements(
        [tuple(int(v) for v in size) for size in data.sizes[train_rows]],
        data.colour_means(train_rows),
    )


def float32_copy(network: keras.Model, model_config: ModelConfig) -> keras.Model:
    """The network with float32 compute, for serving: a mixed-precision model (trained on a
    GPU) would run float16 convolutions on the app's CPU, slowly. Variables are float32 in
    both, so the weights carry over unchanged."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in network.layers):
        return network
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        served = build_model(model_config, weights=None)
        served.set_weights(network.get_weights())
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return served


def _device_wrapper(
    network: keras.Model, model_config: ModelConfig, config: TrainConfig
) -> keras.Model:
    """The network behind :class:`~train.pipeline.DeviceAugmentation`: what trains (and is
    checkpointed) when the augmentation runs in the train step."""
    image = keras.Input(shape=model_config.input.shape, name="image")
    augmented = DeviceAugmentation(
        model_config.input.channel_mean_bgr,
        config.stain_augment,
        config.seed,
        name="device_augmentation",
    )(image)
    return keras.Model(image, network(augmented), name="training_wrapper")


def _is_device_wrapper(model: keras.Model) -> bool:
    return any(isinstance(layer, DeviceAugmentation) for layer in model.layers)


def _inner_network(wrapper: keras.Model) -> keras.Model:
    return next(layer for layer in wrapper.layers if isinstance(layer, keras.Model))


def _weights(config: TrainConfig) -> str | None:
    return None if config.weights == "none" else config.weights


def _feature_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int,
    first_epoch: int,
    steps_per_epoch: int,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.float32)))
    if not training:
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    batches = epoch_batches(dataset, len(features), batch_size, seed, first_epoch, steps_per_epoch)
    return batches.map(lambda number, batch: batch).prefetch(tf.data.AUTOTUNE)
