"""The app applies the card's stain normaliser: it shows what the network saw beside the
original, says when normalisation was skipped, and the card page names the normaliser and
shows its reference colours. A real model (random weights) under a card whose input
contract carries a Macenko reference fitted on real sample images (or synthetic tiles)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.config import ModelConfig
from model.preprocessing import decode_image, prepare_input
from model.stain import fit_reference, synthetic_he_tile
from tests.app.conftest import _artifact_with_card, trained_card
from tests.app.helpers import new_app, open_page, png_bytes, run_until_loaded, texts, tissue_like
from tests.app.test_app import results, upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stain_artifact(app_network, tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    reference = fit_reference(
        [synthetic_he_tile(rng) for _ in range(8)], "macenko", fitted_on="8 synthetic tiles"
    )
    card = trained_card()
    card.name = "app-test-macenko"
    card.config = replace(ModelConfig(), input=ModelConfig().input.with_stain_reference(reference))
    return _artifact_with_card(app_network, card, tmp_path_factory.mktemp("stain"))


def test_classify_shows_what_the_network_saw_and_skipped_normalisation(
    monkeypatch, stain_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(stain_artifact))
    app = run_until_loaded(new_app())
    tissue = png_bytes(tissue_like(4))
    glass = png_bytes(np.full((460, 700, 3), 250, np.uint8))
    upload(app, [("tissue.png", tissue), ("glass.png", glass)])
    assert not app.exception
    assert results(app)["file"].tolist() == ["tissue.png", "glass.png"]
    captions = [image.captions[0] for image in app.image]
    assert "what the network saw: Macenko-normalised, 144x96 px" in captions
    assert "what the network saw: not normalised, 144x96 px" in captions
    # The normalised image shown is exactly what the contract gives the network.
    from model.artifact import read_card

    spec = read_card(stain_artifact).config.input
    seen = next(i for i in app.image if i.captions[0].endswith("Macenko-normalised, 144x96 px"))
    expected = prepare_input(decode_image(tissue), spec)
    assert expected.stain.applied
    warnings = "\n".join(texts(app.warning))
    assert "stain normalisation (Macenko) skipped: too little tissue" in warnings
    assert warnings.count("stain normalisation (Macenko) skipped") == 1  # said once
    assert seen.value  # an image was drawn


def test_model_card_page_names_the_normaliser_and_its_colours(
    monkeypatch, stain_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(stain_artifact))
    app = run_until_loaded(new_app())
    open_page(app, "model-card").run()
    assert not app.exception
    text = "\n".join(texts(app.markdown))
    assert "Macenko (stain vectors and maximum concentrations) fitted on 8 synthetic tiles" in text
    colours = next(t.value for t in app.table if "hex" in t.value.columns)
    assert colours["colour"].tolist() == ["haematoxylin", "eosin"]
    assert all(code.startswith("#") and len(code) == 7 for code in colours["hex"])
    facts = "\n".join(str(v) for t in app.table for v in t.value.to_numpy().ravel())
    assert "Macenko stain normalisation" in facts  # the input line of the summary


def test_a_model_without_normaliser_says_so(monkeypatch, trained_artifact: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    upload(app, [("tissue.png", png_bytes(tissue_like(4)))])
    assert not any("what the network saw" in image.captions[0] for image in app.image)
    open_page(app, "model-card").run()
    assert any(m.startswith("None: images reach the network") for m in texts(app.markdown))
