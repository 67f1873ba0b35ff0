"""What the app shows for each evidence level, for images unlike the training images and for
empty maps: real models (random weights) under cards that are evaluated, weak or not shown
to be better than chance, driven through the real page with AppTest."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.results import NOT_MEANINGFUL, results_csv
from model.trust import WITHHELD_LABEL
from tests.app.helpers import new_app, open_page, png_bytes, run_until_loaded, texts, tissue_like
from tests.app.test_app import case_table, results, upload

pytestmark = pytest.mark.slow
CLASS_WORDS = re.compile(r"\b(benign|malignant)\b", re.IGNORECASE)


def _images() -> list[tuple[str, bytes]]:
    # Not BreakHis names: the class a file name states is not a model output, keep it out.
    return [(f"case-17-field-{k}.png", png_bytes(tissue_like(k))) for k in range(3)]


def _visible_text(app) -> str:
    """Everything the page shows as text (the sidebar's Grad-CAM controls excluded: they
    name the classes whose evidence a map can show)."""
    parts = [
        *texts(app.markdown),
        *texts(app.caption),
        *texts(app.info),
        *texts(app.warning),
        *texts(app.error),
        *texts(app.success),
        *(str(metric.value) for metric in app.metric),
    ]
    parts += [str(badge.proto.label) for badge in app.get("badge")] if app.get("badge") else []
    return "\n".join(parts)


def test_a_model_not_shown_to_beat_chance_gives_no_label_anywhere(
    monkeypatch, unproven_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(unproven_artifact))
    app = run_until_loaded(new_app())
    app.text_input(key="default_case").set_value("CASE-17").run()
    upload(app, _images())
    assert not app.exception
    header = "\n".join(texts(app.error))
    assert "Not shown to be better than chance" in header
    assert "0.35" in header  # the interval that says so
    table = results(app)
    assert table["label"].tolist() == [WITHHELD_LABEL] * 3
    assert table["probability"].isna().all()
    assert table["probability_basis"].tolist() == [NOT_MEANINGFUL] * 3
    csv = results_csv(table).decode()
    assert not CLASS_WORDS.search(csv.split("\n", 1)[1].replace("malignant evidence", ""))
    cases = case_table(app)
    assert cases["label"].tolist() == [WITHHELD_LABEL]
    assert cases["malignant_images"].tolist() == [""]  # no count from hidden probabilities
    assert not app.get("plotly_chart")  # no gauge
    page = _visible_text(app)
    assert CLASS_WORDS.findall(page) == [], page
    assert "Probability not meaningful" in page

    app.toggle(key="show_unbacked").set_value(True).run()  # the research view
    table = results(app)
    assert table["probability"].notna().all()  # shown, marked...
    assert table["probability_basis"].tolist() == [NOT_MEANINGFUL] * 3
    assert table["label"].tolist() == [WITHHELD_LABEL] * 3  # ...but never labelled


def test_a_weak_model_warns_on_every_result_table_row_and_csv_line(
    monkeypatch, weak_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(weak_artifact))
    app = run_until_loaded(new_app())
    upload(app, _images())
    assert any("Weak: better than chance" in text for text in texts(app.warning))
    table = results(app)
    assert table["warnings"].str.contains("WEAK MODEL").all()
    assert table["label"].isin(["benign", "malignant"]).all()
    csv = pd.read_csv(io.BytesIO(results_csv(table)), keep_default_na=False)
    assert csv["warnings"].str.contains("WEAK MODEL").all()
    per_result = [text for text in texts(app.error) if text.startswith("**WEAK MODEL")]
    assert len(per_result) == 3


def test_an_evaluated_model_says_so_and_labels(monkeypatch, trained_artifact: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    upload(app, _images()[:1])
    assert any("Evaluated on unseen patients" in text for text in texts(app.success))
    assert results(app)["label"].isin(["benign", "malignant"]).all()
    open_page(app, "model-card").run()
    assert any("Evidence: Evaluated" in text for text in texts(app.success))


def test_an_empty_map_is_said_not_drawn(monkeypatch, empty_map_artifact: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(empty_map_artifact))
    app = run_until_loaded(new_app())
    upload(app, _images()[:1])
    assert not app.exception
    messages = [text for text in texts(app.info) if text.startswith("Empty map")]
    assert messages and "Try the fine layer" in messages[0]
    assert [image.captions[0] for image in app.image] == ["original"]  # no blue square
    assert "Empty map" in results(app).loc[0, "warnings"]


def test_noise_is_flagged_in_the_table(monkeypatch, trained_artifact: Path) -> None:
    """The fixture card has no feature summary (an older card): the column says nothing
    rather than guessing, and the pixel checks still speak."""
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    noise = np.random.default_rng(0).integers(0, 256, (460, 700, 3), dtype=np.uint8)
    upload(app, [("noise.png", png_bytes(noise)), ("one-pixel.png", png_bytes(noise[:1, :1]))])
    table = results(app)
    assert table["applicability"].tolist() == ["", ""]
    tiny = table.iloc[1]
    assert tiny["label"] == WITHHELD_LABEL and "too small to classify" in tiny["warnings"]
