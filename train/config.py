"""Training configuration: three presets, every value overridable from the command line.

``paper``
    The paper's recipe: ImageNet weights, full fine-tuning, RMSprop, MSE, batch 32,
    200 epochs x 200 steps, real-time augmentation, and the test set evaluated after every
    epoch as the paper did (named "test-set monitoring" in the report: it is not used for
    any choice). Meant for a GPU.
``quick``
    Frozen ResNet-50: its features are computed once and cached, then only the head trains.
    Minutes on a laptop CPU for the full dataset. No augmentation (features are fixed).
``smoke``
    Seconds, for tests: like ``quick`` with random weights (no download) and few epochs.

Cached features need a frozen base. The one rule that ties the settings together lives in
:func:`resolve_config`: asking for a trainable base (``freeze`` other than ``base``) without
saying anything about the feature cache turns the cache off, and then augmentation (which
cached features cannot have) takes the paper's default unless asked otherwise; an explicit
contradiction is refused.

Example:
    >>> config = resolve_config("quick", {"epochs": 5})
    >>> config.freeze, config.epochs, config.feature_cache
    ('base', 5, True)
    >>> tuned = resolve_config("quick", {"freeze": "conv3"})
    >>> tuned.feature_cache, tuned.augment
    (False, True)
    >>> resolve_config("quick", {"freeze": "conv3", "feature_cache": True})
    Traceback (most recent call last):
    ...
    ValueError: feature_cache needs freeze='base' (features of a frozen ResNet-50)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from train.protocols import PROTOCOLS


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder.

    Attributes:
        preset: the preset the values started from.
        protocols: evaluation protocols to run, in order (names of
            :data:`train.protocols.PROTOCOLS`); the first patient-disjoint one provides the
            served model.
        weights: ``imagenet``, a local ResNet-50 no-top weights file, or ``none``.
        freeze: ``none`` (fine-tune everything), ``base`` or ``conv1``..``conv4``.
        pooling: ``avg`` or ``flatten`` (see ``model.config.ModelConfig``).
        feature_cache: train the head on cached ResNet features (needs ``freeze="base"``).
        epochs, steps_per_epoch: ``steps_per_epoch=None`` means one pass over the train set.
        patience: stop a fold's training once its validation loss has not improved for this
            many epochs (the best epoch's weights are served either way); 0 trains every
            epoch, as the paper did. Decided from the fold's history, so a resumed fold stops
            at the epoch an uninterrupted one does (:func:`train.trainer.patience_exhausted`).
        min_delta: the least fall of the validation loss (an MSE of probabilities) that
            counts as an improvement for ``patience``; a loss creeping down by less keeps no
            fold training. The served epoch is the lowest-loss one all the same.
        monitor_test: evaluate the test set after every epoch (the paper's Figs. 8-9).
        folds: how many patient-disjoint folds to run (Spanhol: 5).
        validation_fraction: share of training *patients* held out for model selection and
            the threshold (patient protocol).
        mixed_precision: ``mixed_float16`` (GPU) / ``mixed_bfloat16`` / ``float32``.
        xla: compile the train step with XLA.
        multi_gpu: replicate over all visible GPUs with ``tf.distribute.MirroredStrategy``.
        multi_worker: train on the cluster named by ``TF_CONFIG`` with
            ``tf.distribute.MultiWorkerMirroredStrategy`` (every GPU of every worker; see
            :mod:`train.distributed`). ``batch_size`` stays the global batch.
        steps_per_execution: training steps Keras runs per call into the compiled train
            function (``model.compile(steps_per_execution=...)``): the same steps and
            results, fewer round trips between Python and the device, so a fast GPU waits
            less. Must divide ``steps_per_epoch``; with one-pass epochs the trainer uses the
            largest divisor of the epoch's steps up to this value
            (:func:`steps_per_execution_for`).
        augment_on_device: run the training augmentation inside the compiled train step (a
            Keras layer in front of the network while it trains, never in the saved model),
            so on a GPU it runs on the GPU instead of in ``tf.data`` on the host; the same
            augmentation (:class:`train.pipeline.DeviceAugmentation`). The ``paper`` preset
            sets it; the HED or no stain augmentation only (Macenko augmentation needs each
            image's stain vectors, which live in ``tf.data``).
        deterministic: ask TensorFlow for deterministic ops (slower).
        calibration: post-hoc calibration of the logit fitted on the validation part
            (``temperature``, ``platt`` or ``none``; see :mod:`model.calibration`).
        stain_norm: stain normalisation in the input contract (``none``, ``macenko``,
            ``reinhard``; :mod:`model.stain`), its reference fitted per fold on that fold's
            training images (:mod:`train.staining`).
        stain_augment: the stain part of the training augmentation: ``hed`` (Tellez et al.
            2018 HED jitter, what every run before had), ``macenko`` (jitter of each image's
            own Macenko stain concentrations, as torchstain's augmentor) or ``none``.
            Training-only; applies when ``augment`` is on.
    """

    preset: str = "paper"
    protocols: tuple[str, ...] = ("paper", "patient")
    weights: str = "imagenet"
    freeze: str = "none"
    pooling: str = "avg"
    feature_cache: bool = False
    epochs: int = 200
    steps_per_epoch: int | None = 200
    patience: int = 0
    min_delta: float = 1e-4
    batch_size: int = 32
    learning_rate: float = 1e-4
    augment: bool = True
    monitor_test: bool = True
    folds: int = 5
    validation_fraction: float = 0.2
    seed: int = 42
    deterministic: bool = False
    mixed_precision: str = "float32"
    xla: bool = False
    multi_gpu: bool = False
    bootstrap: int = 1000
    calibration: str = "temperature"
    stain_norm: str = "none"
    stain_augment: str = "hed"
    extra: dict[str, Any] = field(default_factory=dict)
    multi_worker: bool = False
    steps_per_execution: int = 1
    augment_on_device: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`; fields that older versions wrote and that no longer
        exist (``RETIRED_FIELDS``) are dropped, so their run folders still resume."""
        data = {key: value for key, value in json.loads(text).items() if key not in RETIRED_FIELDS}
        data["protocols"] = tuple(data["protocols"])
        return cls(**data)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: ``{name: (self's, other's)}``."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


SPEED_ONLY_FIELDS = frozenset({"steps_per_execution", "augment_on_device"})
"""Fields that change how fast a run trains, not what it computes (the same steps, the same
numbers): a run resumes under a new value (e.g. a run started before the paper preset's GPU
value existed)."""

RETIRED_FIELDS = frozenset({"max_images"})
"""Fields of ``config.json`` files written by earlier versions, ignored when read."""

PAPER_STEPS_PER_EXECUTION = 40
"""The paper preset's ``steps_per_execution``: a GPU value (a batch-32 step of the paper's
network is ~9 ms on an H200, so per-step host work matters), a divisor of its 200 steps per
epoch. It applies wherever the preset runs; on a CPU it changes nothing but how often the
progress bar moves."""

PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(steps_per_execution=PAPER_STEPS_PER_EXECUTION, augment_on_device=True),
    "quick": TrainConfig(
        preset="quick",
        freeze="base",
        feature_cache=True,
        epochs=30,
        patience=5,
        steps_per_epoch=None,
        batch_size=256,
        learning_rate=1e-3,
        augment=False,
        monitor_test=True,
        bootstrap=1000,
    ),
    "smoke": TrainConfig(
        preset="smoke",
        protocols=("patient",),
        weights="none",
        freeze="base",
        feature_cache=True,
        epochs=15,
        steps_per_epoch=None,
        batch_size=16,
        learning_rate=1e-3,
        augment=False,
        folds=1,
        bootstrap=100,
    ),
}


def resolve_config(preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset's values with ``overrides`` (``None`` values mean "keep the preset's"),
    with the feature-cache rule of the module docstring applied, then validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    changes = {key: value for key, value in (overrides or {}).items() if value is not None}
    if "protocols" in changes:
        changes["protocols"] = tuple(changes["protocols"])
    if changes.get("freeze", base.freeze) != "base" and "feature_cache" not in changes:
        changes["feature_cache"] = False
    if not changes.get("feature_cache", base.feature_cache) and "augment" not in changes:
        changes["augment"] = PRESETS["paper"].augment
    if changes.get("stain_augment") == "macenko" and "augment_on_device" not in changes:
        changes["augment_on_device"] = False  # a preset's speed setting gives way
    if "steps_per_execution" not in changes:
        changes["steps_per_execution"] = _implied_steps_per_execution(base, changes)
    config = replace(base, **changes)
    validate(config)
    return config


def steps_per_execution_for(steps: int, wanted: int) -> int:
    """The largest divisor of ``steps`` up to ``wanted``: Keras runs whole executions of
    ``steps_per_execution`` steps, so an epoch of 30 steps at 40 per execution would train
    40 (measured in Keras 3.15: it does not stop a repeated dataset mid-execution).

    Example:
        >>> [steps_per_execution_for(s, w) for s, w in ((200, 40), (200, 32), (7, 40), (13, 5))]
        [40, 25, 7, 1]
    """
    return max(d for d in range(1, max(1, min(steps, wanted)) + 1) if steps % d == 0)


def _implied_steps_per_execution(base: TrainConfig, changes: dict[str, Any]) -> int:
    """A preset's ``steps_per_execution`` is a speed setting, so it gives way to the other
    settings (an explicit one does not, see :func:`validate`): 1 under ``--multi-worker``
    (see there), else a divisor of an overridden ``steps_per_epoch``."""
    if changes.get("multi_worker", base.multi_worker):
        return 1
    steps = changes.get("steps_per_epoch", base.steps_per_epoch)
    if not steps:
        return base.steps_per_execution
    return steps_per_execution_for(steps, base.steps_per_execution)


def validate(config: TrainConfig) -> None:
    """Refuse combinations that cannot work, saying why."""
    unknown = set(config.protocols) - set(PROTOCOLS)
    if unknown or not config.protocols:
        raise ValueError(f"protocols must be among {', '.join(PROTOCOLS)}: {unknown}")
    if config.feature_cache and config.freeze != "base":
        raise ValueError("feature_cache needs freeze='base' (features of a frozen ResNet-50)")
    if config.feature_cache and config.augment:
        raise ValueError("augmentation cannot apply to cached features; use --no-augment")
    if config.weights not in ("imagenet", "none") and not Path(config.weights).is_file():
        raise ValueError(f"weights file not found: {config.weights}")
    if config.mixed_precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown mixed_precision policy {config.mixed_precision!r}")
    if config.xla and config.deterministic:
        raise ValueError(
            "--xla and --deterministic cannot be combined: Keras turns XLA off when "
            "TensorFlow's op determinism is enabled"
        )
    _validate_execution(config)
    if config.calibration not in ("temperature", "platt", "none"):
        raise ValueError(
            f"calibration must be temperature, platt or none, not {config.calibration!r}"
        )
    if config.stain_norm not in ("none", "macenko", "reinhard"):
        raise ValueError(f"stain_norm must be none, macenko or reinhard, not {config.stain_norm!r}")
    if config.stain_augment not in ("hed", "macenko", "none"):
        raise ValueError(
            f"stain_augment must be hed, macenko or none, not {config.stain_augment!r}"
        )
    if config.augment_on_device and config.stain_augment == "macenko":
        raise ValueError(
            "--stain-augment macenko runs in tf.data (it needs each image's stain vectors): "
            "use it with --no-augment-on-device"
        )
    if config.stain_augment == "macenko" and not config.augment:
        raise ValueError(
            "--stain-augment macenko is a training augmentation: it needs --augment (and so "
            "fine-tuning, not cached features: e.g. --freeze conv4 --augment)"
        )
    if config.epochs < 1 or config.batch_size < 1 or config.folds < 1:
        raise ValueError("epochs, batch_size and folds must be at least 1")
    if config.patience < 0:
        raise ValueError("patience must be 0 (train every epoch) or a number of epochs")
    if config.min_delta < 0:
        raise ValueError("min_delta must be 0 or more")


def _validate_execution(config: TrainConfig) -> None:
    """How the steps run: steps per execution, and the distribution strategies."""
    if config.steps_per_execution < 1:
        raise ValueError("steps_per_execution must be at least 1")
    if config.steps_per_epoch and config.steps_per_epoch % config.steps_per_execution:
        raise ValueError(
            f"steps_per_epoch {config.steps_per_epoch} is not a multiple of "
            f"steps_per_execution {config.steps_per_execution}: Keras runs whole executions, "
            "so epochs would be longer than asked"
        )
    if config.multi_worker and config.multi_gpu:
        raise ValueError("--multi-worker already uses every GPU of every worker; drop --multi-gpu")
    if config.multi_worker and config.steps_per_execution > 1:
        raise ValueError(
            "--multi-worker needs steps_per_execution 1: Keras 3's multi-step loop fails "
            "under MultiWorkerMirroredStrategy (see train.distributed)"
        )
