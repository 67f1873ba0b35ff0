"""The plain-Python rules of the Classify page's uploads (app/uploads.py) and wording
(app/wording.py): which files are refused, which are duplicates, how they are counted, and the
gauge's layout (app/components.py). No Streamlit run here; tests/app/test_uploads_app.py
drives the real app."""

from __future__ import annotations

import doctest
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app import components, uploads, wording
from app.results import AnalysisSettings, analyze_upload
from app.uploads import DUPLICATE_COLUMN, Duplicate
from model.preprocessing import decode_image
from tests.app.helpers import tissue_like


@pytest.mark.parametrize("module", [uploads, wording])
def test_the_examples_in_the_docstrings_hold(module) -> None:
    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0 and outcome.failed == 0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a.png", None),
        ("B.JPEG", None),
        ("c.tif", None),
        ("scan.webp", None),
        ("animation.GIF", None),
        ("notes.txt", "not a supported image type (.txt)"),
        ("drawing.svg", "not a supported image type (.svg)"),
        ("archive.tar.gz", "not a supported image type (.gz)"),
        ("slide", "no file extension"),
    ],
)
def test_refusal_is_by_type_and_names_the_accepted_ones(name: str, reason: str | None) -> None:
    refused = uploads.refusal_reason(name)
    if reason is None:
        assert refused is None
    else:
        assert refused.startswith(reason)
        assert refused.endswith("upload PNG, JPEG, TIFF, BMP, WebP or GIF images")


def _gif(frames: int) -> bytes:
    images = [Image.fromarray(tissue_like(seed, 120, 180)) for seed in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=100)
    return buffer.getvalue()


def test_every_accepted_type_decodes_a_real_file() -> None:
    """The types the page accepts are the ones the one decoder reads: a file of each, written
    by Pillow, decodes to RGB (an animated one to its first frame, with the note)."""
    pixels = tissue_like(1, 120, 180)
    pillow_format = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}
    for kind in uploads.IMAGE_TYPES:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=pillow_format.get(kind, kind.upper()))
        decoded = decode_image(buffer.getvalue())
        assert decoded.pixels.shape == (120, 180, 3), kind
    animated = decode_image(_gif(3))
    assert animated.format == "GIF" and "first of 3 frames used" in animated.notes
    assert np.array_equal(  # the first frame, through GIF's 256-colour palette
        animated.pixels, decode_image(_gif(1)).pixels
    )


def test_duplicates_are_by_content_not_by_name() -> None:
    same, other = uploads.content_digest(b"pixels"), uploads.content_digest(b"other")
    items = [
        ("f1", "a.png", same),
        ("f2", "a.png", other),  # same name, other content: not a duplicate
        ("f3", "renamed.png", same),
        ("f4", "a.png", same),
        ("f5", "empty.png", None),
        ("f6", "empty2.png", None),
    ]
    assert uploads.find_duplicates(items) == {
        "f3": Duplicate("f1", "a.png"),
        "f4": Duplicate("f1", "a.png"),
    }


def test_a_duplicate_is_kept_in_the_table_but_counted_once() -> None:
    reason = uploads.refusal_reason("notes.txt")
    empty = analyze_upload(None, b"", AnalysisSettings(), file_id="f1", file_name="e.png")
    results = [
        empty,
        uploads.refused_result("f2", "notes.txt", reason),
        uploads.refused_result("f3", "notes.txt", reason),
    ]
    duplicates = {"f3": Duplicate("f2", "notes.txt")}
    table = pd.DataFrame({"file": ["e.png", "notes.txt", "notes.txt"]})
    flagged = uploads.flag_duplicates(table, ["f1", "f2", "f3"], duplicates)
    assert flagged[DUPLICATE_COLUMN].tolist() == ["", "", "notes.txt"]
    assert uploads.counted(flagged)["file"].tolist() == ["e.png", "notes.txt"]
    assert uploads.summary(results, duplicates) == (
        "**0 of 2 images classified.** 2 files could not be used: see the *error* column. "
        "1 duplicate upload (the same content as an earlier file) counted once: see the "
        "*duplicate of* column."
    )
    with pytest.raises(ValueError, match="2 file ids for a table of 3 rows"):
        uploads.flag_duplicates(table, ["f1", "f2"], duplicates)


def test_plural_wording() -> None:
    assert [wording.plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert wording.plural(1, "is", "are", with_count=False) == "is"
    assert wording.plural(3, "is", "are", with_count=False) == "are"


def test_the_gauge_caption_has_its_own_strip_below_the_ticks() -> None:
    """The caption is anchored by its top edge below the plot area, in a bottom margin that
    holds it (tests/app/test_browser.py measures the drawn boxes in Chromium)."""
    figure = components.probability_gauge(0.7, 0.42, "malignant")
    [caption] = [a for a in figure.layout.annotations if a.text.startswith("threshold")]
    assert caption.text == "threshold 0.42: at or above means malignant"
    assert (caption.yref, caption.y, caption.yanchor) == ("paper", 0, "top")
    assert caption.yshift <= -10  # below the 0% and 100% tick labels
    line_height = caption.font.size * 1.5
    assert figure.layout.margin.b >= -caption.yshift + line_height
