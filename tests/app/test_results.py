"""Per-image results, tables, CSV and cases (app/results.py)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.results import (
    RESULT_COLUMNS,
    UNTRAINED_WARNING,
    AnalysisSettings,
    ImageResult,
    aggregate_cases,
    analyze_upload,
    download_name,
    format_probability,
    overlay_png,
    result_warnings,
    results_csv,
    results_table,
)
from model.analysis import ImageAnalysis
from model.breakhis import read_breakhis_filename
from tests.app.helpers import png_bytes, tissue_like


def _id(name: str) -> str:
    return f"id-{name}"


def _result(name: str, probability: float | None, **extra) -> ImageResult:
    if probability is None:
        return ImageResult(
            _id(name), name, read_breakhis_filename(name), error=extra.pop("error", "bad")
        )
    analysis = ImageAnalysis(
        probability=probability,
        label="malignant" if probability >= 0.5 else "benign",
        threshold=0.5,
        cam=np.zeros((3, 5), np.float32),
        method="gradcam",
        layer="conv5_block3_out",
        target="malignant",
        tta=extra.pop("tta", None),
    )
    return ImageResult(_id(name), name, read_breakhis_filename(name), analysis=analysis, **extra)


def test_results_table_cases_and_csv() -> None:
    results = [
        _result("SOB_M_DC-14-2523-40-010.png", 0.9),
        _result("SOB_M_DC-14-2523-100-011.png", 0.6),
        _result("SOB_B_F-14-25197-40-023.png", 0.2, quality=("tiny image: 10x10 px",)),
        _result("scan.png", 0.4),
        _result("broken.png", None, error="empty file: it contains no bytes"),
    ]
    table = results_table(results, magnifications={_id("scan.png"): "200X"}, default_case="")
    assert table["magnification"].tolist() == ["40X", "100X", "40X", "200X", "unknown"]
    assert table["case"].tolist() == ["14-2523", "14-2523", "14-25197", "", ""]
    assert table["warnings"].tolist()[2] == "tiny image: 10x10 px"
    assert table["error"].tolist()[4] == "empty file: it contains no bytes"
    assert table["warnings"].tolist()[4] == "not classified: empty file: it contains no bytes"

    cases = aggregate_cases(table, threshold=0.5).set_index("case")
    assert cases.loc["14-2523", "mean_probability"] == pytest.approx(0.75)
    assert cases.loc["14-2523", "label"] == "malignant"
    assert cases.loc["14-2523", "magnifications"] == "40X, 100X"
    assert cases.loc["14-2523", "malignant_images"] == "2/2"
    assert cases.loc["14-25197", "label"] == "benign"
    assert "" not in cases.index  # images without a case id are not lumped together

    typed = results_table(
        results, cases={_id("SOB_M_DC-14-2523-40-010.png"): "A"}, default_case="B"
    )
    assert typed["case"].tolist() == ["A", "14-2523", "14-25197", "B", "B"]

    csv = pd.read_csv(io.BytesIO(results_csv(table)), keep_default_na=False)
    assert csv.columns.tolist() == list(RESULT_COLUMNS)
    assert pd.to_numeric(csv["probability"][:4]).tolist() == [0.9, 0.6, 0.2, 0.4]


def test_choices_follow_the_file_id_not_the_position() -> None:
    first, second = _result("a.png", 0.9), _result("b.png", 0.1)
    choices = {_id("b.png"): "400X"}
    cases = {_id("a.png"): "CASE-A"}
    forward = results_table([first, second], choices, cases)
    backward = results_table([second, first], choices, cases)
    assert forward["magnification"].tolist() == ["unknown", "400X"]
    assert backward["magnification"].tolist() == ["400X", "unknown"]
    assert backward["case"].tolist() == ["", "CASE-A"]


def test_untrained_and_unstable_results_are_flagged() -> None:
    from model.predictor import TTAResult

    tta = TTAResult(np.array([[0.55, 0.3, 0.3, 0.3]]), ("a", "b", "c", "d"))
    result = _result("x.png", 0.55, tta=tta)
    warnings = result_warnings(result, untrained=True)
    assert warnings[0] == UNTRAINED_WARNING
    assert warnings[1].startswith("unstable: the flipped/rotated views average 0.36")
    assert result_warnings(_result("y.png", None), untrained=True) == ["not classified: bad"]


def test_csv_defuses_spreadsheet_formulas() -> None:
    table = results_table([_result("=HYPERLINK(1).png", None, error="-oops")])
    text = results_csv(table).decode()
    assert "'=HYPERLINK(1).png" in text and "'-oops" in text


def test_a_result_holds_an_analysis_or_an_error() -> None:
    assert _result("a.png", 0.7).ok and not _result("b.png", None).ok
    with pytest.raises(ValueError, match="either an analysis or an error"):
        ImageResult("f", "a.png", None)


def test_bad_files_become_results_with_their_reason() -> None:
    settings = AnalysisSettings()
    empty = analyze_upload(None, b"", settings, file_id="f1", file_name="empty.png")
    assert (empty.file_id, empty.ok) == ("f1", False)
    assert empty.error.startswith("empty file")


def test_the_overlay_png_is_drawn_over_the_given_pixels() -> None:
    pixels = tissue_like(1, 46, 70)
    analysis = _result("a.png", 0.7).analysis
    png = overlay_png(analysis, pixels, opacity=0.5, colormap="jet")
    drawn = np.asarray(Image.open(io.BytesIO(png)))
    assert drawn.shape == pixels.shape
    assert np.array_equal(drawn, analysis.overlay(pixels, 0.5, "jet"))
    assert png_bytes(pixels) != png  # the map changed the picture


def test_formatting_helpers() -> None:
    assert format_probability(0.0004) == "<0.1%"
    assert format_probability(0.9996) == ">99.9%"
    assert format_probability(0.4567) == "45.7%"
    assert download_name("a/SOB_M_DC-14-2523-40-010.png", "overlay") == (
        "SOB_M_DC-14-2523-40-010_overlay.png"
    )


@pytest.mark.slow
def test_a_network_failure_on_a_batch_names_no_server_path(monkeypatch, trained_artifact) -> None:
    """An error the network raises mid-batch (here one that quotes a server file, as a traced
    graph's errors do) becomes each image's error, worded without the server's folders; the
    other results of the call are not lost."""
    from app.results import classify_uploads, prepare_upload
    from model.analysis import Analyzer

    analyzer = Analyzer.from_path(trained_artifact)
    uploads = [
        prepare_upload(
            analyzer, png_bytes(tissue_like(seed=seed)), file_id=f"f{seed}", file_name=f"{seed}.png"
        )
        for seed in range(3)
    ]
    real = Analyzer.analyze_many
    calls = []

    def fails_on_the_second_batch(self, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("out of memory in /srv/bcd/runs/run-7/model/model.keras")
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(Analyzer, "analyze_many", fails_on_the_second_batch)
    results = classify_uploads(analyzer, uploads, batch_size=2)
    assert calls == [2, 1]
    assert [result.ok for result in results] == [True, True, False]
    assert "/srv" not in results[2].error
    assert results[2].error.startswith("could not analyse this image (RuntimeError: out of memory")
