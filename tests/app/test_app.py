"""The real app script (app/ui.py, served by app/main.py) driven by Streamlit's AppTest, with real
model artifacts."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.results import UNTRAINED_WARNING, format_probability, results_csv
from tests.app.helpers import (
    new_app,
    open_page,
    page_script_hash,
    png_bytes,
    run_until_loaded,
    texts,
    tissue_like,
)

pytestmark = pytest.mark.slow


def upload(app, files: list[tuple[str, bytes]]) -> None:
    """Put files in the image uploader and rerun."""
    app.file_uploader(key="images").set_value(
        [(name, data, "image/png") for name, data in files]
    ).run()


def results(app) -> pd.DataFrame:
    """The results table (the dataframe with a "file" column)."""
    return _table_with_column(app, "file")


def case_table(app) -> pd.DataFrame:
    """The cases table (the dataframe with an "images" column)."""
    return _table_with_column(app, "images")


def _table_with_column(app, column: str) -> pd.DataFrame:
    return next(frame.value for frame in app.dataframe if column in frame.value.columns)


# --- which model --------------------------------------------------------------------------
def test_no_model_opens_onboarding_with_exact_commands() -> None:
    app = new_app().run()
    assert not app.exception
    assert texts(app.title) == ["Get a model"]
    assert any("No model is loaded yet" in text for text in texts(app.info))
    commands = "\n".join(texts(app.code))
    assert "python -m train.download --dest data/" in commands
    assert "python -m train.run --preset quick --data data/BreaKHis_v1" in commands
    assert "python -m train.run --preset paper --data data/BreaKHis_v1" in commands
    assert "BCD_MODEL=runs/<name> streamlit run app/main.py" in commands
    assert "runs/<name>/model/" in "\n".join(texts(app.markdown))
    # No fake numbers anywhere, and the research notice is still there.
    assert not app.metric and not app.dataframe
    assert "not a diagnostic device" in app.main.markdown[0].value
    assert app.sidebar.file_uploader(key="model_zip") is not None


def test_open_page_refuses_a_page_not_in_the_navigation() -> None:
    app = new_app().run()  # no model: the navigation holds only "Get a model"
    with pytest.raises(ValueError, match="no page 'model-card'"):
        open_page(app, "model-card")


def test_model_from_environment_variable(monkeypatch, trained_artifact: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    assert not app.exception
    assert texts(app.title) == ["Classify images"]
    header = " ".join(texts(app.caption))
    assert "test-fixture-random-weights" in header
    assert f"run {trained_artifact.name} from BCD_MODEL" in header
    assert str(trained_artifact.parent) not in header  # the run's name, not a server path
    assert "patient-disjoint test (patient): Accuracy 85.1%" in header
    assert app.sidebar.selectbox(key="cam_method").value == "gradcam"


def test_newest_run_is_used_without_configuration(
    isolated_model_environment: Path, trained_artifact: Path, untrained_artifact: Path
) -> None:
    older = isolated_model_environment / "older"
    (older / "model").mkdir(parents=True)
    (older / "model" / "model_card.json").write_bytes(
        (untrained_artifact / "model_card.json").read_bytes()
    )
    os.utime(older / "model" / "model_card.json", (1, 1))
    newest = isolated_model_environment / trained_artifact.name
    newest.symlink_to(trained_artifact)
    app = new_app().run()
    assert f"newest run: {trained_artifact.name}" in " ".join(texts(app.caption))
    assert "test-fixture-random-weights" in " ".join(texts(app.caption))


def test_model_card_page_shows_both_protocols_and_the_leak(
    monkeypatch, trained_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    open_page(app, "model-card").run()
    assert not app.exception
    assert texts(app.title) == ["Model card"]
    metrics = app.dataframe[0].value
    assert list(metrics.columns) == [
        "patient: patient-disjoint",
        "patient (this model): patient-disjoint",
        "paper: test patients also in training",
    ]
    assert metrics.loc["Accuracy"].tolist() == ["85.1%", "86.0%", "98.2%"]
    assert metrics.loc["AUC (ROC)"].tolist() == ["0.912", "0.910", "0.995"]
    assert any("patients" in text and "overstate" in text for text in texts(app.warning))
    facts = " ".join(str(table.value) for table in app.table)
    assert "ResNet-50" in facts and "144x96 px" in facts and "0.5 (default 0.5" in facts


def test_uploaded_model_zip_is_used(trained_zip: Path, sample_images: dict[str, bytes]) -> None:
    app = new_app().run()
    assert texts(app.title) == ["Get a model"]
    app.sidebar.file_uploader(key="model_zip").set_value(
        ("model.zip", trained_zip.read_bytes(), "application/zip")
    )
    run_until_loaded(app)
    # The user is still on the onboarding page; it now points to the classifier.
    assert any("A model is loaded" in text for text in texts(app.success))
    [link] = app.get("page_link")
    assert link.proto.label == "Classify images"
    assert link.proto.page_script_hash == page_script_hash("classify")
    open_page(app, "classify").run()
    assert texts(app.title) == ["Classify images"]
    assert "uploaded in this session" in " ".join(texts(app.caption))
    name, data = next(iter(sample_images.items()))
    upload(app, [(name, data)])
    assert not app.exception
    assert len(app.metric) == 1


# --- classify -----------------------------------------------------------------------------
def test_one_upload_shows_probability_label_gauge_and_images(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    name = "SOB_M_DC-14-2523-40-010.png"
    upload(app, [(name, sample_images[name])])
    assert not app.exception
    [metric] = app.metric
    table = results(app)
    assert metric.value == format_probability(table.loc[0, "probability"])
    assert table.loc[0, "label"] in ("benign", "malignant")
    assert table.loc[0, "magnification"] == "40X"
    assert table.loc[0, "case"] == "14-2523"
    assert table.loc[0, "label_from_name"] == "malignant"
    assert [image.captions[0] for image in app.image] == [
        "original",
        "heatmap",
        "overlay (opacity 0.40)",
    ]
    assert len(app.get("plotly_chart")) == 1  # the gauge
    assert any("malignant, ductal carcinoma; patient 14-2523; 40X" in c for c in texts(app.caption))
    assert app.selectbox(key=_widget_key(app, "magnification-")).value == "40X"
    assert app.download_button(key=_widget_key(app, "download-")).label == "Download overlay (PNG)"


def test_several_uploads_with_bad_files(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    good = list(sample_images.items())[:2]
    truncated = sample_images[good[0][0]][:2000]
    huge_header = _png_header_claiming(60_000, 60_000)
    upload(
        app,
        [
            good[0],
            ("empty.png", b""),
            ("notes.png", b"this is a text file, not an image"),
            ("cut.png", truncated),
            ("bomb.png", huge_header),
            good[1],
        ],
    )
    assert not app.exception
    table = results(app)
    assert table["file"].tolist()[1:5] == ["empty.png", "notes.png", "cut.png", "bomb.png"]
    errors = table["error"].tolist()
    assert errors[0] == errors[5] == ""
    assert errors[1].startswith("empty file")
    assert errors[2].startswith("not an image")
    assert "truncated" in errors[3] or "damaged" in errors[3]
    assert errors[4].startswith("image too large")
    assert table["warnings"][1] == ""  # the error is said once, in its own column
    assert table["probability"].notna().tolist() == [True, False, False, False, False, True]
    assert "**2 of 6 images classified.** 4 files could not be used" in " ".join(
        texts(app.markdown)
    )
    shown = " ".join(texts(app.error))
    assert "empty file" in shown and "not an image" in shown
    # The server keeps serving: a new upload afterwards still classifies.
    upload(app, [good[1]])
    assert results(app)["error"].tolist() == [""]


def test_odd_and_non_h_and_e_images_get_visible_warnings(
    monkeypatch, trained_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    sixteen_bit = (tissue_like(3)[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    upload(
        app,
        [
            ("blank.png", png_bytes(np.full((460, 700, 3), 250, np.uint8))),
            ("gray16.png", png_bytes(sixteen_bit)),
            ("tiny.png", png_bytes(tissue_like(4, 40, 60))),
            ("rgba.png", png_bytes(tissue_like(5), mode="RGBA")),
        ],
    )
    assert not app.exception
    warnings = results(app)["warnings"].tolist()
    assert warnings[0].startswith("mostly blank")
    assert "grayscale" in warnings[1] and "16-bit" in warnings[1]
    assert warnings[2].startswith("tiny image: 60x40 px")
    assert "RGBA transparency flattened" in warnings[3]
    shown = " ".join(texts(app.warning))
    assert "mostly blank" in shown and "tiny image" in shown and "grayscale" in shown
    assert results(app)["error"].tolist() == ["", "", "", ""]


def test_controls_change_the_overlay_without_rerunning_the_network(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    name = "SOB_M_DC-14-2523-40-014.png"
    upload(app, [(name, sample_images[name])])
    original, heatmap, overlay = (image.value[0] for image in app.image)
    timing = _analysis_caption(app)

    app.sidebar.slider(key="opacity").set_value(0.8).run()
    assert app.image[2].captions == ["overlay (opacity 0.80)"]
    assert app.image[2].value[0] != overlay
    assert app.image[1].value[0] == heatmap
    assert _analysis_caption(app) == timing  # same stored result: the network did not run

    app.sidebar.selectbox(key="colormap").set_value("viridis").run()
    assert app.image[1].value[0] != heatmap
    assert app.image[0].value[0] == original

    coarse_heatmap = app.image[1].value[0]
    app.sidebar.radio(key="cam_layer").set_value("conv4_block6_out").run()
    assert "conv4_block6_out" in _analysis_caption(app)
    assert app.image[1].value[0] != coarse_heatmap

    app.sidebar.selectbox(key="cam_method").set_value("layercam").run()
    assert not app.exception
    assert "LayerCAM on conv4_block6_out" in _analysis_caption(app)


def test_test_time_augmentation_gives_mean_and_spread(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    """Turning TTA on for a classified batch runs only the flipped views (a spy on the real
    analyzer counts the calls): the probabilities stay, each image's mean and spread come."""
    from model.analysis import Analyzer

    calls: dict[str, list[int]] = {"with_tta": [], "analyze_many(tta=True)": []}
    real_with_tta, real_analyze_many = Analyzer.with_tta, Analyzer.analyze_many

    def with_tta(self, prepared, analyses):
        calls["with_tta"].append(len(prepared))
        return real_with_tta(self, prepared, analyses)

    def analyze_many(self, images, *args, **kwargs):
        if kwargs.get("tta"):
            calls["analyze_many(tta=True)"].append(len(images))
        return real_analyze_many(self, images, *args, **kwargs)

    monkeypatch.setattr(Analyzer, "with_tta", with_tta)
    monkeypatch.setattr(Analyzer, "analyze_many", analyze_many)
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    upload(app, list(sample_images.items())[:2])
    before = results(app)
    assert "tta_mean" not in before.columns
    app.sidebar.toggle(key="tta").set_value(True).run()
    table = results(app)
    assert calls == {"with_tta": [2], "analyze_many(tta=True)": []}
    assert table["probability"].tolist() == before["probability"].tolist()
    assert table["tta_mean"].between(0, 1).all()
    assert (table["tta_std"] >= 0).all()
    assert any("Test-time augmentation (4 views)" in text for text in texts(app.markdown))


def test_csv_download_matches_the_results_table(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    upload(app, [*sample_images.items(), ("=cmd|calc.png", b"")])
    table = results(app)
    assert app.download_button(key="download_csv").label == "Download results (CSV)"
    csv = pd.read_csv(io.BytesIO(results_csv(table)), keep_default_na=False)
    assert list(csv.columns) == [
        "file",
        "magnification",
        "case",
        "probability",
        "label",
        "probability_basis",
        "applicability",
        "applicability_score",
        "warnings",
        "label_from_name",
        "error",
        "duplicate_of",
    ]
    assert csv["file"].tolist() == [*sample_images, "'=cmd|calc.png"]  # formula defused
    assert pd.to_numeric(csv["probability"][:3]).tolist() == pytest.approx(
        table["probability"].tolist()[:3], abs=1e-4
    )
    assert csv["magnification"].tolist() == ["40X", "40X", "40X", "unknown"]
    assert csv["error"].tolist()[3].startswith("empty file")


def test_case_aggregation_by_patient_and_typed_case_id(
    monkeypatch, trained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    slide = png_bytes(tissue_like(9))
    other_slide = png_bytes(tissue_like(10))  # distinct: duplicates are tests/app/test_uploads*
    upload(app, [*sample_images.items(), ("slide-a.png", slide), ("slide-b.png", other_slide)])
    cases = case_table(app)
    assert set(cases["case"]) == {"14-2523", "14-25197"}
    assert "2 images without a case id are not included" in " ".join(texts(app.caption))

    app.text_input(key="default_case").set_value("CASE-7").run()
    table = results(app)
    cases = case_table(app).set_index("case")
    assert cases["images"].to_dict() == {"14-2523": 2, "14-25197": 1, "CASE-7": 2}
    patient = table[table["case"] == "14-2523"]["probability"]
    assert cases.loc["14-2523", "mean_probability"] == pytest.approx(patient.mean())
    expected = "malignant" if patient.mean() >= 0.5 else "benign"
    assert cases.loc["14-2523", "label"] == expected

    # A case id typed for one image moves it to its own case.
    key = _widget_key(app, "case-", index=4)
    app.text_input(key=key).set_value("CASE-8").run()
    cases = case_table(app).set_index("case")
    assert cases.loc["CASE-7", "images"] == 1 and cases.loc["CASE-8", "images"] == 1


def test_untrained_model_warns_on_every_result(
    monkeypatch, untrained_artifact: Path, sample_images: dict[str, bytes]
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(untrained_artifact))
    app = run_until_loaded(new_app())
    assert "Untrained model: meaningless output" in app.error[0].value
    upload(app, list(sample_images.items())[:2])
    assert not app.exception
    assert all(warning.startswith(UNTRAINED_WARNING) for warning in results(app)["warnings"])
    per_result = [text for text in texts(app.error) if "meaningless output" in text]
    assert len(per_result) == 3  # the banner and one per image


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ("damaged_artifact", "does not match the checksum in its model card"),
        ("bad_card_artifact", "model_card.json in"),
        ("missing", "model artifact not found"),
    ],
)
def test_unusable_artifact_gives_a_clear_message(
    request, monkeypatch, tmp_path: Path, artifact: str, message: str
) -> None:
    path = tmp_path / "nowhere" if artifact == "missing" else request.getfixturevalue(artifact)
    monkeypatch.setenv("BCD_MODEL", str(path))
    app = run_until_loaded(new_app())
    assert not app.exception
    assert texts(app.title) == ["Get a model"]
    [error] = app.error
    assert "The model could not be loaded" in error.value
    assert message in error.value
    assert app.sidebar.file_uploader(key="model_zip") is not None  # a way out


# --- helpers ------------------------------------------------------------------------------
def _widget_key(app, prefix: str, index: int = 0) -> str:
    """The user key of the index-th widget whose key starts with prefix (keys hold file ids)."""
    keys = [
        widget.key
        for kind in ("selectbox", "text_input", "download_button")
        for widget in getattr(app, kind)
        if widget.key and widget.key.startswith(prefix)
    ]
    return keys[index]


def _analysis_caption(app) -> str:
    return next(text for text in texts(app.caption) if text.startswith("Map: "))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression-bomb shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_streamlit_no_longer_resets_keras_after_each_run(monkeypatch) -> None:
    """Streamlit's per-run keras.backend.clear_session() cleared TensorFlow's kernel cache:
    every upload then paid for re-instantiating the Grad-CAM graph (docs/app.md)."""
    import keras

    calls: list[int] = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *args, **kw: calls.append(1))
    new_app().run()
    assert calls == []
