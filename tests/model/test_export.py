"""The serving export (model/export.py): a SavedModel that a fresh process loads with
``tf.saved_model.load`` alone gives the Keras model's and the model core's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.analysis import Analyzer
from model.calibration import sigmoid
from model.config import InputSpec, label_of
from model.export import GRADCAM_SIGNATURE, SERVING_SIGNATURE, main
from model.preprocessing import load_image_file, preprocess, to_model_input
from tests.conftest import BREAKHIS_SAMPLE
from tests.model.conftest import png_bytes, tissue_like

# Runs in a fresh interpreter: nothing but TensorFlow and the exported folder.
SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    folder, inputs_file, outputs_file = sys.argv[1:]
    loaded = tf.saved_model.load(folder)
    inputs = np.load(inputs_file)
    outputs, specs = {}, {}
    for name in ("serving_default", "gradcam"):
        signature = loaded.signatures[name]
        spec = signature.structured_input_signature[1]["images"]
        specs[name] = [spec.dtype.name, list(spec.shape)]
        for key in inputs.files:
            for output, value in signature(images=tf.constant(inputs[key])).items():
                value = value.numpy()
                if value.dtype == object:
                    value = value.astype(str)
                outputs[f"{name}/{key}/{output}"] = value
    np.savez(outputs_file, **outputs)
    print(json.dumps({"specs": specs, "modules": sorted(m for m in sys.modules if
                      m.split(".")[0] in ("model", "app", "train"))}))
    """
)


def _unlike_image() -> np.ndarray:
    stripes = np.zeros((460, 700, 3), np.uint8)
    stripes[:, ::20] = (0, 200, 0)
    stripes[::15] = (0, 0, 255)
    return stripes


@pytest.fixture(scope="module")
def input_sets() -> dict[str, np.ndarray]:
    """Preprocessed batches: synthetic tissue and stripes always, the real sample if there."""
    from PIL import Image

    spec = InputSpec()
    sets = {
        "synthetic": np.stack(
            [preprocess(png_bytes(tissue_like(seed=seed)), spec) for seed in range(3)]
            + [preprocess(png_bytes(Image.fromarray(_unlike_image())), spec)]
        )
    }
    real = sorted(BREAKHIS_SAMPLE.glob("BreaKHis_v1/**/*.png"))
    if real:
        sets["real"] = np.stack([to_model_input(load_image_file(path), spec) for path in real])
    return sets


@pytest.fixture(scope="module")
def exported(trusted_artifact, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("export") / "bcd"
    assert main([str(trusted_artifact), "--out", str(base)]) == 0
    return base / "1"


@pytest.fixture(scope="module")
def served(exported, input_sets, tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """What the SavedModel returns for each input set, from a fresh subprocess."""
    folder = tmp_path_factory.mktemp("served")
    np.savez(folder / "inputs.npz", **input_sets)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_SCRIPT,
            str(exported),
            str(folder / "inputs.npz"),
            str(folder / "outputs.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,  # not the repository: the project's modules cannot be imported by accident
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    with np.load(folder / "outputs.npz") as outputs:
        return report, {key: outputs[key] for key in outputs.files}


@pytest.fixture(scope="module")
def analyzer(trusted_artifact) -> Analyzer:
    return Analyzer.from_path(trusted_artifact)


def _check_outputs(name: str, served, analyzer: Analyzer, inputs: np.ndarray) -> None:
    _, outputs = served
    card = analyzer.card

    def out(signature: str, key: str) -> np.ndarray:
        return outputs[f"{signature}/{name}/{key}"]

    # The Keras model itself: its sigmoid output and its logit layer.
    keras_probability = analyzer.artifact.model(inputs, training=False).numpy()[:, 0]
    assert np.allclose(out(SERVING_SIGNATURE, "raw_probability"), keras_probability, atol=1e-5)
    logits = analyzer.predictor.predict_logits(inputs)
    assert np.allclose(out(SERVING_SIGNATURE, "logit"), logits, atol=1e-4, rtol=1e-5)
    # The model core's served probability (calibrated), decision and applicability.
    probability = analyzer.predictor.predict_batch(inputs)
    assert card.calibration is not None
    assert not np.allclose(probability, sigmoid(logits))  # the calibration changes them
    assert np.allclose(out(SERVING_SIGNATURE, "probability"), probability, atol=1e-5)
    assert out(SERVING_SIGNATURE, "decision").tolist() == [
        label_of(p, card.threshold, card.labels) for p in probability
    ]
    features = analyzer.explainer.forward(inputs).features
    scores = card.applicability.scores(features)
    assert np.allclose(out(SERVING_SIGNATURE, "applicability_score"), scores, rtol=1e-4)
    assert out(SERVING_SIGNATURE, "applicability").tolist() == [
        card.applicability.verdict(float(score)) for score in scores
    ]
    # The gradcam signature is the explainer's fast Grad-CAM on the same inputs.
    explanation = analyzer.explainer.explain(inputs)
    assert out(GRADCAM_SIGNATURE, "cam").shape == explanation.heatmaps.shape == (len(inputs), 3, 5)
    assert np.allclose(out(GRADCAM_SIGNATURE, "cam"), explanation.heatmaps, atol=1e-4)
    assert out(GRADCAM_SIGNATURE, "empty").tolist() == explanation.empty.tolist()
    assert out(GRADCAM_SIGNATURE, "target").tolist() == list(explanation.targets)
    assert np.allclose(out(GRADCAM_SIGNATURE, "probability"), probability, atol=1e-5)


def test_signatures_take_the_cards_input_and_need_no_project_code(served, trusted_card):
    report, _ = served
    shape = [None, *trusted_card.config.input.shape]
    assert report["specs"] == {
        SERVING_SIGNATURE: ["float32", shape],
        GRADCAM_SIGNATURE: ["float32", shape],
    }
    assert report["modules"] == []  # none of this project's code was imported to serve


def test_exported_model_matches_on_synthetic_images(served, analyzer, input_sets):
    _check_outputs("synthetic", served, analyzer, input_sets["synthetic"])
    _, outputs = served
    # The stripes are unlike the training images, the tissue is not: both verdicts occur.
    verdicts = outputs[f"{SERVING_SIGNATURE}/synthetic/applicability"].tolist()
    assert verdicts[-1] == "unlike" and "typical" in verdicts[:-1]


def test_exported_model_matches_on_real_images(
    served, analyzer, input_sets, breakhis_sample_images
):
    assert len(input_sets["real"]) == len(breakhis_sample_images)
    _check_outputs("real", served, analyzer, input_sets["real"])


def test_an_empty_map_is_flagged_as_the_explainer_flags_it(flat_network, trusted_card, input_sets):
    from model.artifact import LoadedArtifact
    from model.export import build_module

    flat = LoadedArtifact(model=flat_network, card=trusted_card, source="in memory")
    _, signatures = build_module(flat)
    inputs = input_sets["synthetic"]
    served = signatures[GRADCAM_SIGNATURE](inputs)
    explanation = Analyzer(flat).explainer.explain(inputs)
    assert explanation.empty.all()
    assert served["empty"].numpy().tolist() == explanation.empty.tolist()
    assert np.allclose(served["cam"].numpy(), explanation.heatmaps)


def test_the_card_is_written_beside_the_saved_model(exported, trusted_artifact):
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    assert (exported / "model_card.json").read_text(encoding="utf-8") == (
        trusted_artifact / "model_card.json"
    ).read_text(encoding="utf-8")


def test_bad_inputs_exit_2_with_a_clear_message(exported, tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = [
        ([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "model artifact not found"),
        ([str(tmp_path / "not-a-model"), "--out", str(tmp_path / "o")], "is missing"),
        ([str(tmp_path / "file.txt"), "--out", str(tmp_path / "o")], "is not a model artifact"),
        ([str(tmp_path), "--out", str(exported.parent)], "exists already"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error, error


def test_the_rest_request_of_the_docs_has_the_signatures_shape(exported):
    """docs/export.md's REST request: preprocess with the exported card's input spec."""
    from model.artifact import read_card

    spec = read_card(exported).config.input
    image = png_bytes(tissue_like(seed=1))
    request = {
        "signature_name": SERVING_SIGNATURE,
        "inputs": {"images": [preprocess(image, spec).tolist()]},
    }
    decoded = json.loads(json.dumps(request))
    assert np.asarray(decoded["inputs"]["images"], np.float32).shape == (1, *spec.shape)
