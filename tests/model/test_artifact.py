"""Artifacts: the model and its card saved together; identical predictions after loading;
missing, corrupt and incompatible files refused with a clear message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.artifact import (
    CARD_FILE,
    MODEL_FILE,
    export_zip,
    load_artifact,
    load_artifact_bytes,
    read_card,
    read_card_from_zip,
    save_artifact,
)
from model.card import Evaluation, ModelCard
from model.config import InputSpec, ModelConfig
from model.errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactIncompatibleError,
    ArtifactNotFoundError,
)


@pytest.fixture
def artifact_copy(artifact_dir, tmp_path):
    """A private copy of the session artifact that a test may damage."""
    return shutil.copytree(artifact_dir, tmp_path / "model")


def _probe_inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 60, (3, 96, 144, 3)).astype("float32")


def test_round_trip_gives_identical_predictions(random_model, artifact_dir):
    loaded = load_artifact(artifact_dir)
    x = _probe_inputs()
    before = random_model(x, training=False).numpy()
    after = loaded.model(x, training=False).numpy()
    assert np.array_equal(before, after)


def test_round_trip_preserves_the_card(artifact_dir, trained_card):
    card = load_artifact(artifact_dir).card
    assert card.name == trained_card.name
    assert card.threshold == pytest.approx(0.42)
    assert card.threshold_source == "Youden J on validation"
    assert card.config == trained_card.config
    assert card.labels == {0: "benign", 1: "malignant"}
    assert card.training == trained_card.training and card.is_trained
    assert card.evaluation == trained_card.evaluation
    assert card.software["keras"] and card.software["tensorflow"]
    assert len(card.model_sha256) == 64
    assert read_card(artifact_dir) == card


def test_run_folder_and_zip_load_too(artifact_dir, tmp_path):
    run = tmp_path / "runs" / "demo"
    shutil.copytree(artifact_dir, run / "model")
    assert load_artifact(run).card.name == "test-run"
    bundle = export_zip(artifact_dir, tmp_path / "demo.zip")
    assert load_artifact(bundle).card.name == "test-run"
    assert load_artifact_bytes(bundle.read_bytes()).card.name == "test-run"


def test_missing_folder_and_files(artifact_copy, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        load_artifact(tmp_path / "nowhere")
    (artifact_copy / MODEL_FILE).unlink()
    with pytest.raises(ArtifactNotFoundError, match=f"missing {MODEL_FILE}"):
        load_artifact(artifact_copy)


def test_truncated_weights_fail_the_checksum(artifact_copy):
    weights = artifact_copy / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactCorruptError, match="does not match the checksum"):
        load_artifact(artifact_copy)


def test_unreadable_weights_without_checksum(artifact_copy):
    card = json.loads((artifact_copy / CARD_FILE).read_text())
    card["model_sha256"] = None
    (artifact_copy / CARD_FILE).write_text(json.dumps(card))
    (artifact_copy / MODEL_FILE).write_bytes(b"PK\x03\x04 not really a keras file")
    with pytest.raises(ArtifactCorruptError, match="could not be read by Keras"):
        load_artifact(artifact_copy)


def test_card_that_is_not_json(artifact_copy):
    (artifact_copy / CARD_FILE).write_text("{ this is not json")
    with pytest.raises(ArtifactCorruptError, match="not valid JSON"):
        load_artifact(artifact_copy)


def test_card_of_another_schema(artifact_copy):
    card = json.loads((artifact_copy / CARD_FILE).read_text())
    card["schema_version"] = 99
    (artifact_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactIncompatibleError, match="schema version 99"):
        load_artifact(artifact_copy)


def test_card_with_unknown_fields(artifact_copy):
    card = json.loads((artifact_copy / CARD_FILE).read_text())
    card["surprise"] = 1
    (artifact_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactCorruptError, match="malformed"):
        load_artifact(artifact_copy)


def test_network_that_does_not_fit_its_card(random_model, tmp_path):
    wrong = ModelCard(name="wrong", config=ModelConfig(input=InputSpec(height=128, width=128)))
    folder = save_artifact(random_model, wrong, tmp_path / "wrong")
    with pytest.raises(ArtifactIncompatibleError, match=r"takes input \(None, 96, 144, 3\)"):
        load_artifact(folder)


def test_foreign_keras_model_is_incompatible(tmp_path):
    import keras

    other = keras.Sequential(
        [keras.Input((96, 144, 3)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    folder = save_artifact(other, ModelCard(name="other"), tmp_path / "other")
    with pytest.raises(ArtifactIncompatibleError, match=r"not built by model\.network"):
        load_artifact(folder)


def test_bad_zip_uploads(tmp_path):
    with pytest.raises(ArtifactCorruptError, match=r"not a readable \.zip"):
        load_artifact_bytes(b"definitely not a zip")
    bundle = tmp_path / "card-only.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr(CARD_FILE, "{}")
    with pytest.raises(ArtifactNotFoundError, match=f"lacks {MODEL_FILE}"):
        load_artifact(bundle)


def test_every_artifact_error_is_an_artifact_error(tmp_path):
    for call in (lambda: load_artifact(tmp_path / "x"), lambda: load_artifact_bytes(b"x")):
        with pytest.raises(ArtifactError):
            call()


def test_save_replaces_an_existing_artifact_atomically(random_model, artifact_copy):
    save_artifact(random_model, ModelCard(name="second"), artifact_copy)
    assert load_artifact(artifact_copy).card.name == "second"
    leftovers = [p.name for p in artifact_copy.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_card_json_round_trip():
    card = ModelCard(
        name="demo", evaluation={"paper": Evaluation("paper", metrics={"accuracy": 0.99})}
    )
    assert ModelCard.from_json(card.to_json()) == card
    assert not card.is_trained


def test_reading_a_card_is_cheap_and_works_on_zips(artifact_dir, tmp_path):
    bundle = export_zip(artifact_dir, tmp_path / "bundle.zip")
    assert read_card(bundle).name == read_card(artifact_dir).name == "test-run"
    assert read_card_from_zip(bundle.read_bytes()).name == "test-run"
    # In a fresh interpreter: reading a card must not import Keras/TensorFlow (seconds).
    code = (
        "import sys; from model.artifact import read_card; "
        f"read_card({str(artifact_dir)!r}); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_reading_a_card_gives_specific_errors(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        read_card(tmp_path / "missing")
    with pytest.raises(ArtifactNotFoundError, match=r"missing model_card\.json"):
        read_card(tmp_path)
    (tmp_path / CARD_FILE).write_text("{oops")
    with pytest.raises(ArtifactCorruptError, match="not valid JSON"):
        read_card(tmp_path)
    (tmp_path / CARD_FILE).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ArtifactIncompatibleError, match="schema version 99"):
        read_card(tmp_path)
    with pytest.raises(ArtifactCorruptError, match=r"not a readable \.zip"):
        read_card_from_zip(b"PK\x03\x04broken", "upload")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threshold", 1.0, "strictly between 0 and 1"),
        ("threshold", "abc", "strictly between 0 and 1"),
        ("labels", ["benign", "malignant"], "labels must be a JSON object"),
        ("evaluation", [], "evaluation must be a JSON object"),
        ("evaluation", {"patient": 0.9}, "each evaluation entry"),
    ],
)
def test_malformed_card_values_are_refused(artifact_copy, field, value, message):
    card = json.loads((artifact_copy / CARD_FILE).read_text())
    card[field] = value
    (artifact_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactCorruptError, match=message):
        read_card(artifact_copy)


def test_zip_members_are_size_checked_before_unpacking(artifact_dir, tmp_path, monkeypatch):
    import model.artifact as artifact

    bundle = export_zip(artifact_dir, tmp_path / "bundle.zip")
    monkeypatch.setattr(artifact, "MAX_MODEL_BYTES", 1024)  # a limit, not a stand-in
    with pytest.raises(ArtifactCorruptError, match="would unpack to"):
        load_artifact_bytes(bundle.read_bytes())


def test_an_exported_zip_depends_on_the_artifact_only(artifact_dir, tmp_path):
    # A pinned URL (#sha256=) stays valid when an unchanged model is exported again, even
    # after its files were touched (the entries carry a fixed date, not the files' times).
    first = export_zip(artifact_dir, tmp_path / "first.zip")
    copy = shutil.copytree(artifact_dir, tmp_path / "copy")  # new file times
    second = export_zip(copy, tmp_path / "second.zip")
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "first.zip", "second.zip"]
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == [CARD_FILE, MODEL_FILE]
        assert archive.read(MODEL_FILE) == (artifact_dir / MODEL_FILE).read_bytes()
    (copy / MODEL_FILE).unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"missing model\.keras"):
        export_zip(copy, tmp_path / "none.zip")
    assert not (tmp_path / "none.zip").exists()


def test_a_display_name_replaces_the_path_in_messages(artifact_copy, tmp_path):
    (artifact_copy / MODEL_FILE).write_bytes(b"PK\x03\x04 damaged")
    bundle = export_zip(artifact_copy, tmp_path / "cached.zip")
    for path in (artifact_copy, bundle):
        with pytest.raises(ArtifactCorruptError) as raised:
            load_artifact(path, source="hf://bcd-lab/model")
        assert "model.keras in hf://bcd-lab/model does not match the checksum" in str(raised.value)
        assert str(tmp_path) not in str(raised.value)
    with pytest.raises(ArtifactNotFoundError, match=r"^model artifact not found: hf://x$"):
        read_card(tmp_path / "gone", source="hf://x")
