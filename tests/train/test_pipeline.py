"""The input pipeline: decode once through the model's contract, cache, augment in tf.data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.config import InputSpec
from model.preprocessing import load_image_file, to_model_input
from train.pipeline import hed_jitter, load_images, make_dataset, random_quarter_turn

SPEC = InputSpec()


def test_load_images_uses_the_model_contract_and_caches(breakhis_sample_images, tmp_path):
    paths = [str(p) for p in breakhis_sample_images[:5]]
    images = load_images(paths, SPEC, cache_dir=tmp_path)
    assert images.shape == (5, 96, 144, 3) and images.dtype == np.uint8
    contract = to_model_input(load_image_file(paths[0]), SPEC)
    ours = make_dataset(images[:1], np.zeros(1), SPEC, 1, training=False)
    assert np.allclose(next(iter(ours))[0][0].numpy(), contract)  # same bytes -> same input
    assert len(list(tmp_path.glob("images-*.npy"))) == 1
    again = load_images(paths, SPEC, cache_dir=tmp_path)
    assert np.array_equal(again, images)


def test_quarter_turn_keeps_the_shape_and_turns_the_content():
    images = np.zeros((4, 96, 144, 3), np.float32)
    images[:, :10, :, 0] = 255  # a red band along the top edge
    turned = random_quarter_turn(tf.constant(images), probability=1.0, seed=1).numpy()
    assert turned.shape == images.shape
    columns = turned[..., 0].mean(axis=1)  # the band now runs down one side
    assert all(col[:5].max() > 200 or col[-5:].max() > 200 for col in columns)
    assert np.allclose(turned[..., 0].mean(axis=2)[:, 40], turned[..., 0].mean(axis=2)[:, 50])
    unchanged = random_quarter_turn(tf.constant(images), probability=0.0).numpy()
    assert np.array_equal(unchanged, images)


def test_stain_jitter_draws_scale_and_shift_independently():
    pixels = tf.fill((64, 8, 8, 3), 150.0)
    jittered = hed_jitter(pixels, sigma=0.05, seed=3).numpy()
    assert jittered.shape == (64, 8, 8, 3) and np.isfinite(jittered).all()
    assert jittered.min() >= 0 and jittered.max() <= 255
    assert jittered[:, 0, 0].std(axis=0).min() > 0.1  # images differ from each other


def test_training_batches_are_augmented_normalised_and_whole(breakhis_sample_images, tmp_path):
    images = load_images([str(p) for p in breakhis_sample_images], SPEC, cache_dir=tmp_path)
    labels = np.array([int("_M_" in p.name) for p in breakhis_sample_images])
    dataset = make_dataset(images, labels, SPEC, 8, training=True, augment=True, seed=0)
    batches = list(dataset.take(3))
    for x, y in batches:
        assert x.shape == (8, 96, 144, 3) and y.shape == (8,)
        assert np.isfinite(x.numpy()).all()
        assert float(tf.reduce_min(x)) > -130 and float(tf.reduce_max(x)) < 160  # caffe range
    plain = make_dataset(images, labels, SPEC, 8, training=False)
    assert sum(int(x.shape[0]) for x, _ in plain) == len(images)  # evaluation: every image
