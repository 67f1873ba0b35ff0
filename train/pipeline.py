"""Input pipeline: decode every image once with the model core's contract, then tf.data.

1. :func:`load_images` decodes and resizes each file with :mod:`model.preprocessing`
   (the very functions the app uses), in parallel threads, into one ``uint8`` array, cached
   on disk (``.npy``, written atomically) so later runs and resumed runs skip decoding.
2. :func:`make_dataset` builds the ``tf.data`` pipeline: shuffle, batch, real-time
   augmentation (flips, which with their combination give the 180-degree rotation; small
   zoom; brightness/contrast; H&E stain jitter), then the model's normalisation, then
   prefetch. Augmentation lives in the pipeline, not in the saved model. Every random draw
   is a stateless op seeded by the run's seed and the batch's number, and every epoch's
   shuffle by the seed and the epoch (:func:`epoch_batches`), so a resumed run trains on
   exactly the batches an uninterrupted one does.

Quarter turns (:func:`random_quarter_turn`) turn the 144x96 (w x h) frame into 96x144, a shape
the network does not take; so a turned image is cropped to a random window of the input's
aspect ratio (96x64 of its 96x144) and scaled back to 144x96: a 90-degree rotation with a 1.5x
zoom, never a distortion. Flips give the half turn.

Example:
    >>> images = load_images(index.path, InputSpec(), cache_dir="runs/cache")  # doctest: +SKIP
    >>> train = make_dataset(images, labels, InputSpec(), batch_size=32, training=True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from model.config import InputSpec
from model.errors import ModelCoreError
from model.files import write_atomically, write_text_atomically
from model.preprocessing import load_image_file, normalise, resize_to_input
from model.stain import RGB_FROM_HED as _RGB_FROM_HED
from model.stain import TISSUE_OPTICAL_DENSITY, TRANSMITTED_LIGHT
from train.console import counted, progress

logger = logging.getLogger(__name__)

# The Ruifrok & Johnston H, E, DAB optical densities (model.stain's), as float32 tensors.
RGB_FROM_HED = _RGB_FROM_HED.astype(np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


def image_sizes(paths: Sequence[str], workers: int | None = None) -> np.ndarray:
    """(width, height) of every image, from its header only (no pixels are decoded)."""

    def size(path: str) -> tuple[int, int]:
        with Image.open(path) as image:
            return image.size

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.array(list(pool.map(size, [str(p) for p in paths])), dtype=np.int64).reshape(
            -1, 2
        )


@dataclass(frozen=True)
class DecodedDataset:
    """The one pass over a dataset's files (:func:`decode_images`).

    Attributes:
        pixels: ``uint8`` (n, height, width, 3) of the readable files, in ``paths`` order.
        sizes: (n, 2) original (width, height) of those files.
        paths: the readable files (the given paths less ``problems``).
        problems: path -> why it could not be used (truncated, not an image...).
    """

    pixels: np.ndarray
    sizes: np.ndarray
    paths: list[str]
    problems: dict[str, str]


def _decode_one(path: str, spec: InputSpec) -> tuple[np.ndarray, tuple[int, int]] | str:
    try:
        image = load_image_file(path)
    except (ModelCoreError, OSError, ValueError) as error:
        return f"not a readable image: {error}"
    return resize_to_input(image, spec), (image.width, image.height)


def decode_images(
    paths: Sequence[str],
    spec: InputSpec,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> DecodedDataset:
    """Decode + resize every file once, in parallel threads (Pillow decodes without the
    GIL), with a progress bar; files that cannot be read are reported, not fatal.

    This single pass is also the dataset's readability check (indexing does not open the
    files). With ``cache_dir`` the result is stored as ``images-<hash>.npy`` (the pixels)
    and ``images-<hash>.json`` (sizes and problems), the hash of the paths, file sizes and
    input spec, and reused by later calls.
    """
    paths = [str(path) for path in paths]
    cache_file = facts_file = None
    if cache_dir is not None:
        key = images_fingerprint(paths, spec)
        cache_file = Path(cache_dir) / f"images-{key}.npy"
        facts_file = cache_file.with_suffix(".json")
        if cache_file.is_file() and facts_file.is_file():
            facts = json.loads(facts_file.read_text())
            pixels = np.load(cache_file)
            kept = [path for path in paths if path not in facts["problems"]]
            if pixels.shape == (len(kept), *spec.shape):
                logger.info("decoded images reused from %s", cache_file)
                sizes = np.asarray(facts["sizes"], np.int64).reshape(-1, 2)
                return DecodedDataset(pixels, sizes, kept, dict(facts["problems"]))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            progress(
                pool.map(lambda path: _decode_one(path, spec), paths),
                total=len(paths),
                description="decoding images",
            )
        )
    problems = {
        path: result for path, result in zip(paths, results, strict=True) if isinstance(result, str)
    }
    decoded = [result for result in results if not isinstance(result, str)]
    pixels = (
        np.stack([resized for resized, _ in decoded])
        if decoded
        else np.zeros((0, *spec.shape), np.uint8)
    )
    sizes = np.asarray([size for _, size in decoded], np.int64).reshape(-1, 2)
    kept = [path for path in paths if path not in problems]
    if cache_file is not None and facts_file is not None:
        save_array_atomically(cache_file, pixels)
        facts = {"sizes": sizes.tolist(), "problems": problems}
        write_text_atomically(facts_file, json.dumps(facts))
    return DecodedDataset(pixels, sizes, kept, problems)


def load_images(
    paths: Sequence[str],
    spec: InputSpec,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode + resize every image once: ``uint8`` array (n, height, width, 3).

    :func:`decode_images` for files known to be readable.

    Raises:
        ValueError: a file could not be read (the message names it and why).
    """
    decoded = decode_images(paths, spec, cache_dir, workers)
    if decoded.problems:
        path, reason = next(iter(decoded.problems.items()))
        count = len(decoded.problems)
        raise ValueError(f"{counted(count, 'file')} could not be read, e.g. {path}: {reason}")
    return decoded.pixels


def stateless_seeds(seed: int | tf.Tensor | None, count: int) -> tf.Tensor:
    """``count`` independent stateless seeds (count, 2) derived from ``seed``.

    Every random draw of the augmentation is a stateless op (``tf.random.stateless_*``) of
    a seed that depends only on the run's seed and the batch's place in training, never on
    a generator's hidden state, so a run resumed from a checkpoint draws exactly what an
    uninterrupted run draws. ``seed`` is an int, a (2,) integer tensor, or None (a fresh,
    non-reproducible seed).

    Example:
        >>> stateless_seeds(7, 3).shape
        TensorShape([3, 2])
    """
    if seed is None:
        seed = tf.random.uniform((2,), maxval=2**31 - 1, dtype=tf.int64)
    elif isinstance(seed, int):
        seed = tf.constant([seed, 0], tf.int64)
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def hed_jitter(
    images: tf.Tensor, sigma: float = 0.05, seed: int | tf.Tensor | None = None
) -> tf.Tensor:
    """Stain augmentation (Tellez et al. 2018): per image, scale and shift the haematoxylin,
    eosin and DAB concentrations by ``1 +- sigma`` and ``+- sigma``. Pixels in [0, 255]."""
    batch = tf.shape(images)[0]
    # Distinct seeds: with one seed both draws would be the same stream (beta = alpha - 1).
    scale_seed, shift_seed = tf.unstack(stateless_seeds(seed, 2))
    alpha = tf.random.stateless_uniform((batch, 1, 1, 3), scale_seed, 1.0 - sigma, 1.0 + sigma)
    beta = tf.random.stateless_uniform((batch, 1, 1, 3), shift_seed, -sigma, sigma)
    optical_density = -tf.math.log(tf.maximum(images, 1.0) / 255.0)
    concentrations = tf.einsum("bhwc,cd->bhwd", optical_density, HED_FROM_RGB)
    jittered = concentrations * alpha + beta
    optical_density = tf.einsum("bhwd,dc->bhwc", jittered, RGB_FROM_HED)
    return tf.clip_by_value(255.0 * tf.exp(-optical_density), 0.0, 255.0)


def random_quarter_turn(
    images: tf.Tensor, probability: float = 0.5, seed: int | tf.Tensor | None = None
) -> tf.Tensor:
    """Rotate each image of a batch by +-90 degrees with ``probability``, keeping its shape.

    The turned (w x h swapped) image is cropped to a window with the original aspect ratio at
    a random position along its long side and resized back (bilinear) to the input size.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    direction_seed, window_seed, choice_seed = tf.unstack(stateless_seeds(seed, 3))
    k = 1 + 2 * tf.random.stateless_uniform((), direction_seed, 0, 2, dtype=tf.int32)
    turned = tf.image.rot90(images, k=k)  # (batch, width, height, 3)
    window = tf.cast(height * height, tf.float32) / tf.cast(width, tf.float32)  # rows kept
    fraction = window / tf.cast(width, tf.float32)
    top = tf.random.stateless_uniform((batch,), window_seed, 0.0, 1.0 - fraction)
    boxes = tf.stack([top, tf.zeros_like(top), top + fraction, tf.ones_like(top)], axis=1)
    cropped = tf.image.crop_and_resize(turned, boxes, tf.range(batch), tf.stack([height, width]))
    chosen = tf.random.stateless_uniform((batch, 1, 1, 1), choice_seed) < probability
    return tf.where(chosen, cropped, images)


ZOOM = 0.1
"""Zoom: each image scaled by a factor in ``1 +- ZOOM`` about its centre (reflected edges)."""
BRIGHTNESS = 0.08
"""Brightness: each image shifted by up to ``+- BRIGHTNESS`` of the value range."""
CONTRAST = 0.1
"""Contrast: each image's channels stretched about their means by ``1 +- CONTRAST``."""


def random_flips(images: tf.Tensor, seed: int | tf.Tensor | None = None) -> tf.Tensor:
    """Flip each image left-right and up-down, each with probability 1/2 (both: a half
    turn)."""
    batch = tf.shape(images)[0]
    horizontal_seed, vertical_seed = tf.unstack(stateless_seeds(seed, 2))
    horizontal = tf.random.stateless_uniform((batch, 1, 1, 1), horizontal_seed) < 0.5
    images = tf.where(horizontal, tf.reverse(images, axis=[2]), images)
    vertical = tf.random.stateless_uniform((batch, 1, 1, 1), vertical_seed) < 0.5
    return tf.where(vertical, tf.reverse(images, axis=[1]), images)


def random_zoom(
    images: tf.Tensor, factor: float = ZOOM, seed: int | tf.Tensor | None = None
) -> tf.Tensor:
    """Zoom each image in or out by up to ``factor`` about its centre, keeping its aspect
    ratio and size; zooming out shows reflected edges (as Keras's ``fill_mode="reflect"``)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    # Reflect-pad enough for the widest zoom-out, then crop a centred box and resize back.
    pad_y = tf.cast(tf.math.ceil(factor / 2 * tf.cast(height, tf.float32)), tf.int32) + 1
    pad_x = tf.cast(tf.math.ceil(factor / 2 * tf.cast(width, tf.float32)), tf.int32) + 1
    padded = tf.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]], mode="REFLECT")
    size = 1.0 + tf.random.stateless_uniform((batch,), stateless_seeds(seed, 1)[0], -factor, factor)
    padded_height = tf.cast(height + 2 * pad_y, tf.float32)
    padded_width = tf.cast(width + 2 * pad_x, tf.float32)
    half_height = size * tf.cast(height, tf.float32) / 2 / padded_height
    half_width = size * tf.cast(width, tf.float32) / 2 / padded_width
    boxes = tf.stack(
        [0.5 - half_height, 0.5 - half_width, 0.5 + half_height, 0.5 + half_width], axis=1
    )
    return tf.image.crop_and_resize(padded, boxes, tf.range(batch), tf.stack([height, width]))


def random_brightness_contrast(
    images: tf.Tensor,
    brightness: float = BRIGHTNESS,
    contrast: float = CONTRAST,
    seed: int | tf.Tensor | None = None,
) -> tf.Tensor:
    """Shift each image's brightness by up to ``+- brightness`` x 255, then stretch its
    contrast by ``1 +- contrast`` about each channel's mean. Pixels in [0, 255]."""
    batch = tf.shape(images)[0]
    brightness_seed, contrast_seed = tf.unstack(stateless_seeds(seed, 2))
    delta = tf.random.stateless_uniform(
        (batch, 1, 1, 1), brightness_seed, -255.0 * brightness, 255.0 * brightness
    )
    images = tf.clip_by_value(images + delta, 0.0, 255.0)
    stretch = tf.random.stateless_uniform(
        (batch, 1, 1, 1), contrast_seed, 1.0 - contrast, 1.0 + contrast
    )
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * stretch + mean, 0.0, 255.0)


MACENKO_SIGMAS = (0.2, 0.2)
"""Macenko augmentation: each stain's concentrations scaled by ``1 +- 0.2`` and shifted by
``+- 0.2`` (torchstain's ``MacenkoAugmentor`` defaults)."""


def macenko_jitter(
    images: tf.Tensor,
    matrices: tf.Tensor,
    sigmas: tuple[float, float] = MACENKO_SIGMAS,
    seed: int | tf.Tensor | None = None,
) -> tf.Tensor:
    """Stain augmentation in each image's own Macenko stain basis (torchstain's augmentor,
    as tensor operations): unmix with the image's stain vectors ``matrices`` (b, 3, 2),
    scale and shift each stain's concentrations, re-mix. Only the change is added to the
    optical densities, so what the two stains do not explain (the residual) is kept, and the
    additive shift is applied to tissue only, so glass stays glass. Pixels in [0, 255]."""
    batch = tf.shape(images)[0]
    scale, shift = sigmas
    scale_seed, shift_seed = tf.unstack(stateless_seeds(seed, 2))
    alpha = tf.random.stateless_uniform((batch, 1, 1, 2), scale_seed, 1.0 - scale, 1.0 + scale)
    beta = tf.random.stateless_uniform((batch, 1, 1, 2), shift_seed, -shift, shift)
    optical_density = -tf.math.log((images + 1.0) / TRANSMITTED_LIGHT)
    tissue = tf.cast(
        tf.reduce_min(optical_density, axis=-1, keepdims=True) >= TISSUE_OPTICAL_DENSITY,
        tf.float32,
    )
    unmix = tf.linalg.pinv(matrices)  # (b, 2, 3): least squares, as Macenko's lstsq
    # Brighter than the modelled light (> 240) is glass with no stain, not negative stain.
    concentrations = tf.einsum("bhwc,bsc->bhws", tf.maximum(optical_density, 0.0), unmix)
    change = concentrations * (alpha - 1.0) + beta * tissue
    optical_density += tf.einsum("bhws,bcs->bhwc", change, matrices)
    return tf.clip_by_value(TRANSMITTED_LIGHT * tf.exp(-optical_density) - 1.0, 0.0, 255.0)


AUGMENTATION = "flips, +-90 deg turns, zoom, brightness/contrast"
"""What :func:`make_dataset` does to training batches with ``augment=True`` (for model cards),
before the stain part (:data:`STAIN_AUGMENTATION`)."""
STAIN_AUGMENTATION = {
    "hed": "HED stain jitter (Tellez et al. 2018, +-5%)",
    "macenko": "Macenko stain augmentation (each image's own stain concentrations x U(0.8, "
    "1.2) + U(-0.2, 0.2), torchstain's augmentor)",
    "none": "",
}


def describe_augmentation(augment: bool, stain_augment: str = "hed") -> str:
    """The training augmentation as a model card records it.

    Example:
        >>> describe_augmentation(False)
        'none'
        >>> describe_augmentation(True).endswith("HED stain jitter (Tellez et al. 2018, +-5%)")
        True
    """
    if not augment:
        return "none"
    stain = STAIN_AUGMENTATION[stain_augment]
    return f"{AUGMENTATION}, {stain}" if stain else f"{AUGMENTATION}; no stain augmentation"


def augment_pixels(
    pixels: tf.Tensor,
    seed: int | tf.Tensor | None,
    stain_augment: str = "hed",
    matrices: tf.Tensor | None = None,
) -> tf.Tensor:
    """The training augmentation of a batch of RGB pixels in [0, 255] (float32), wherever it
    runs: in ``tf.data`` (:func:`make_dataset`) or in the train step
    (:class:`DeviceAugmentation`). Every draw derives from ``seed`` (see
    :func:`stateless_seeds`): the same seed, the same augmented batch."""
    stain_seed, turn_seed, flip_seed, zoom_seed, light_seed, hed_seed = tf.unstack(
        stateless_seeds(seed, 6)
    )
    if stain_augment == "macenko":
        # On the colours as scanned: the stain vectors were estimated on them.
        pixels = macenko_jitter(pixels, matrices, seed=stain_seed)
    pixels = random_quarter_turn(pixels, seed=turn_seed)
    pixels = random_flips(pixels, seed=flip_seed)
    pixels = random_zoom(pixels, seed=zoom_seed)
    pixels = random_brightness_contrast(pixels, seed=light_seed)
    # HED jitter last, as every run before stain options existed had it.
    return hed_jitter(pixels, seed=hed_seed) if stain_augment == "hed" else pixels


@keras.saving.register_keras_serializable(package="bcd")
class DeviceAugmentation(keras.layers.Layer):
    """The training augmentation as a layer in front of the network while it trains, so it
    runs inside the compiled train step (on the GPU) rather than in ``tf.data`` on the host.

    It takes the normalised network input, undoes the ResNet normalisation, applies
    :func:`augment_pixels` and normalises again; at inference (``training=False``: validation,
    test, serving) it passes the input through. Only the trainer's wrapper holds it; the
    saved, served network never does. Its draws derive from ``seed`` and a count of the
    batches it has augmented, a weight saved in every checkpoint, so a resumed run augments
    exactly as an uninterrupted one.
    """

    def __init__(
        self,
        channel_mean_bgr: tuple[float, float, float],
        stain_augment: str = "hed",
        seed: int | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("dtype", "float32")  # log/exp of the stain jitter stay float32
        super().__init__(**kwargs)
        if stain_augment == "macenko":
            raise ValueError("Macenko stain augmentation needs each image's stain vectors")
        self.channel_mean_bgr = tuple(float(v) for v in channel_mean_bgr)
        self.stain_augment = stain_augment
        self.seed = seed

    def build(self, input_shape: tuple) -> None:
        self.batches_augmented = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="batches_augmented",
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training:
            return inputs
        seed = tf.stack([tf.constant(self.seed or 0, tf.int64), self.batches_augmented.value])
        self.batches_augmented.assign_add(1)
        mean = tf.constant(self.channel_mean_bgr, tf.float32)
        pixels = (tf.cast(inputs, tf.float32) + mean)[..., ::-1]  # BGR - mean -> RGB
        pixels = augment_pixels(pixels, seed, self.stain_augment)
        return pixels[..., ::-1] - mean

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "channel_mean_bgr": self.channel_mean_bgr,
            "stain_augment": self.stain_augment,
            "seed": self.seed,
        }


def epoch_batches(
    dataset: tf.data.Dataset,
    size: int,
    batch_size: int,
    seed: int,
    first_epoch: int = 0,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Training batches epoch after epoch, from ``first_epoch`` on, forever:
    ``(global batch number, batch)``.

    Epoch ``e`` is ``steps_per_epoch`` batches (default: one pass) of the elements
    reshuffled with a seed made of ``seed`` and ``e`` alone, so what epoch ``e`` sees does
    not depend on the epochs before it: a run resumed at epoch ``e`` (``first_epoch=e``)
    gets the very batches an uninterrupted run gets there. The batch number (``e *
    steps_per_epoch + step``) seeds that batch's augmentation.
    """
    drop_remainder = size >= batch_size
    steps = steps_per_epoch or max(1, math.ceil(size / batch_size))

    def epoch(number: tf.Tensor) -> tf.data.Dataset:
        shuffled = dataset.shuffle(
            size, seed=seed * 1_000_003 + number, reshuffle_each_iteration=True
        )
        batches = shuffled.repeat().batch(batch_size, drop_remainder=drop_remainder).take(steps)
        first = number * steps
        return batches.enumerate().map(lambda step, batch: (first + step, batch))

    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    spec: InputSpec,
    batch_size: int,
    training: bool,
    augment: bool = False,
    seed: int = 0,
    stain_augment: str = "hed",
    stain_matrices: np.ndarray | None = None,
    first_epoch: int = 0,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Batches of (normalised float32 images, float32 labels).

    ``training=True``: epochs of ``steps_per_epoch`` whole batches (default: one pass),
    reshuffled every epoch, from ``first_epoch`` on, forever (see :func:`epoch_batches`: an
    epoch's batches and their augmentation depend only on ``seed`` and the epoch), augmented
    when ``augment`` (its stain part by ``stain_augment``: ``"hed"``, ``"none"``, or
    ``"macenko"`` with each image's ``stain_matrices`` (n, 3, 2) from
    :func:`train.staining.stain_matrices`). Otherwise: in order, one pass.
    """
    macenko = training and augment and stain_augment == "macenko"
    if macenko and stain_matrices is None:
        raise ValueError("Macenko stain augmentation needs each image's stain matrix")
    if macenko:
        images_and_matrices = (images, np.asarray(stain_matrices, np.float32))
        dataset = tf.data.Dataset.from_tensor_slices(
            (images_and_matrices, labels.astype(np.float32))
        )
    else:
        dataset = tf.data.Dataset.from_tensor_slices(
            ((images, np.zeros((len(images), 0), np.float32)), labels.astype(np.float32))
        )
    if training:
        dataset = epoch_batches(
            dataset, len(images), batch_size, seed, first_epoch, steps_per_epoch
        )
    else:
        dataset = dataset.batch(batch_size).enumerate()
    if training and augment:

        def augmented(number: tf.Tensor, x: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
            batch_seed = tf.stack([tf.constant(seed, tf.int64), number])
            return augment_pixels(tf.cast(x, tf.float32), batch_seed, stain_augment, matrices)

        dataset = dataset.map(
            lambda number, batch: (augmented(number, *batch[0]), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            lambda number, batch: (tf.cast(batch[0][0], tf.float32), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.map(lambda x, y: (normalise(x, spec), y), tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def images_fingerprint(paths: Sequence[str], spec: InputSpec) -> str:
    """Identifies a decoded-image array: the files (paths and sizes) and the input spec."""
    digest = hashlib.sha256(repr(spec).encode())
    for path in paths:
        digest.update(path.encode())
        digest.update(str(os.path.getsize(path)).encode())
    return digest.hexdigest()[:16]


def save_array_atomically(target: Path, array: np.ndarray) -> None:
    """``np.save`` so that a killed process leaves no half file (see :mod:`model.files`)."""
    write_atomically(target, lambda stream: np.save(stream, array))
