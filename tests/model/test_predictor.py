"""Predictor: batch equals single, bytes equal arrays, TTA, shared across threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from model.config import InputSpec
from model.predictor import TTA_VIEWS, Predictor
from model.preprocessing import decode_image, preprocess
from tests.model.conftest import png_bytes, tissue_like

SPEC = InputSpec()


@pytest.fixture(scope="module")
def predictor(random_model) -> Predictor:
    return Predictor(random_model, SPEC, threshold=0.5, batch_size=3)


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [png_bytes(tissue_like(seed=seed)) for seed in range(5)]


def test_batch_equals_single(predictor, images):
    batch = predictor.predict(images)  # 5 images through batches of 3 (3 + 2)
    singles = np.array([predictor.predict_one(data) for data in images])
    assert batch.shape == (5,)
    assert np.allclose(batch, singles, atol=1e-6)
    assert ((batch > 0) & (batch < 1)).all()


def test_matches_the_keras_model(predictor, random_model, images):
    inputs = np.stack([preprocess(data, SPEC) for data in images])
    expected = random_model.predict(inputs, verbose=0)[:, 0]
    assert np.allclose(predictor.predict_batch(inputs), expected, atol=1e-6)


def test_decoded_images_and_bytes_agree(predictor, images):
    assert np.allclose(predictor.predict([decode_image(images[0])]), predictor.predict(images[:1]))


def test_wrong_input_shape_is_refused(predictor):
    with pytest.raises(ValueError, match="expected inputs"):
        predictor.predict_batch(np.zeros((1, 224, 224, 3), np.float32))


def test_tta_views(predictor, images):
    inputs = np.stack([preprocess(data, SPEC) for data in images[:2]])
    result = predictor.predict_tta(inputs)
    assert result.probabilities.shape == (2, len(TTA_VIEWS))
    assert result.views[0] == "original"
    assert np.allclose(result.probabilities[:, 0], predictor.predict_batch(inputs), atol=1e-6)
    flipped = predictor.predict_batch(inputs[:, :, ::-1])
    assert np.allclose(result.probabilities[:, 1], flipped, atol=1e-6)
    assert np.allclose(result.mean, result.probabilities.mean(axis=1))
    assert np.allclose(result.std, result.probabilities.std(axis=1))


def test_tta_with_the_original_probabilities_runs_only_the_flipped_views(predictor, images):
    """Given the plain pass's probabilities, the TTA result is the same, and those are the
    original view as given (not recomputed): a marker value shows it was not rerun."""
    inputs = np.stack([preprocess(data, SPEC) for data in images[:3]])
    full = predictor.predict_tta(inputs)
    reused = predictor.predict_tta(inputs, original=predictor.predict_batch(inputs))
    assert reused.views == full.views
    assert np.allclose(reused.probabilities, full.probabilities, atol=1e-6)
    marked = predictor.predict_tta(inputs, original=np.array([0.25, 0.5, 0.75]))
    assert marked.probabilities[:, 0].tolist() == [0.25, 0.5, 0.75]
    assert np.allclose(marked.probabilities[:, 1:], full.probabilities[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="original must hold 3 probabilities"):
        predictor.predict_tta(inputs, original=np.array([0.5]))


def test_threshold_decides_the_label(random_model):
    predictor = Predictor(random_model, SPEC, threshold=0.3)
    assert predictor.label(0.3) == "malignant" and predictor.label(0.29) == "benign"


def test_one_instance_serves_many_threads(random_model, predictor, images):
    expected = predictor.predict(images)
    fresh = Predictor(random_model, SPEC)  # not traced yet: the first calls race to trace
    barrier = threading.Barrier(4)

    def first_use(i: int) -> float:
        barrier.wait()
        return fresh.predict_one(images[i % 5])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(first_use, range(4)))
        results += list(pool.map(lambda i: fresh.predict_one(images[i % 5]), range(4, 20)))
    assert np.allclose(results, [expected[i % 5] for i in range(20)], atol=1e-6)


def test_real_images(predictor, sample_inputs):
    probabilities = predictor.predict_batch(sample_inputs)
    assert probabilities.shape == (4,) and np.isfinite(probabilities).all()
