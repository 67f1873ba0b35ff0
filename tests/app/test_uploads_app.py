"""The real app (app/ui.py through AppTest, real artifacts, real image files written by
Pillow): every chosen file appears and is counted, WebP and GIF are classified, duplicates
count once, a failed session model falls back to the server's, no server path is shown, and
the wording agrees with its numbers."""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from app.results import results_csv
from tests.app.helpers import (
    new_app,
    open_page,
    png_bytes,
    run_until_loaded,
    texts,
    tissue_like,
)

pytestmark = pytest.mark.slow

SERVER_MODEL = "test-fixture-random-weights"
MIME = {"png": "image/png", "webp": "image/webp", "gif": "image/gif", "txt": "text/plain"}


def upload(app, files: list[tuple[str, bytes]]) -> None:
    """Put files in the image uploader (each with the MIME type of its extension) and rerun."""
    app.file_uploader(key="images").set_value(
        [
            (name, data, MIME.get(name.rsplit(".", 1)[-1], "application/octet-stream"))
            for name, data in files
        ]
    ).run()


def results(app) -> pd.DataFrame:
    return next(frame.value for frame in app.dataframe if "file" in frame.value.columns)


def case_table(app) -> pd.DataFrame:
    return next(frame.value for frame in app.dataframe if "images" in frame.value.columns)


def all_text(app) -> str:
    """Every piece of text the run drew, main page and sidebar."""
    kinds = ("title", "subheader", "markdown", "caption", "code", "error", "warning", "info")
    return "\n".join(text for kind in (*kinds, "success") for text in texts(getattr(app, kind)))


def summary_line(app) -> str:
    return next(text for text in texts(app.markdown) if " classified.**" in text)


def webp_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tissue_like(seed, 230, 350)).save(buffer, format="WEBP")
    return buffer.getvalue()


def animated_gif_bytes(frames: int = 3) -> bytes:
    images = [Image.fromarray(tissue_like(20 + seed, 230, 350)) for seed in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=100)
    return buffer.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@pytest.fixture
def served(monkeypatch, trained_artifact: Path):
    """The app with the server's model (a run folder from BCD_MODEL), loaded."""
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    return run_until_loaded(new_app())


# --- formats and counts -------------------------------------------------------------------
def test_the_uploader_lets_every_file_through_to_the_server(served) -> None:
    """No type filter: the browser would drop other files before the server saw them."""
    assert list(served.file_uploader(key="images").proto.type) == []
    assert "WebP, GIF" in served.file_uploader(key="images").label


def test_webp_and_an_animated_gif_are_classified_the_gif_by_its_first_frame(served) -> None:
    upload(
        served,
        [
            ("scan.webp", webp_bytes(1)),
            ("scan.gif", animated_gif_bytes(3)),
            ("scan.png", png_bytes(tissue_like(2))),
        ],
    )
    assert not served.exception
    table = results(served)
    assert table["file"].tolist() == ["scan.webp", "scan.gif", "scan.png"]
    assert table["error"].tolist() == ["", "", ""]
    assert table["probability"].notna().all()
    assert "first of 3 frames used" in table.loc[1, "warnings"]
    assert "frames" not in table.loc[0, "warnings"]
    assert any("first of 3 frames used" in text for text in texts(served.warning))
    assert summary_line(served) == "**3 of 3 images classified.**"
    assert len(served.metric) == 3 and len(served.image) == 9  # each drawn, GIF included


def test_refused_files_appear_with_their_reason_and_are_counted(served) -> None:
    upload(
        served,
        [
            ("scan.png", png_bytes(tissue_like(3))),
            ("notes.txt", b"this is a text file"),
            ("drawing.svg", SVG),
            ("slide", png_bytes(tissue_like(4))),  # even image bytes: its type is unknown
        ],
    )
    assert not served.exception
    table = results(served)
    assert table["file"].tolist() == ["scan.png", "notes.txt", "drawing.svg", "slide"]
    errors = table["error"].tolist()
    assert errors[0] == ""
    assert errors[1] == (
        "not a supported image type (.txt): upload PNG, JPEG, TIFF, BMP, WebP or GIF images"
    )
    assert errors[2].startswith("not a supported image type (.svg)")
    assert errors[3].startswith("no file extension")
    # Said once per row (the error column), not repeated in the warnings column.
    assert table["warnings"].tolist()[1:] == ["", "", ""]
    assert summary_line(served) == (
        "**1 of 4 images classified.** 3 files could not be used: see the *error* column."
    )
    shown = texts(served.error)
    assert f"Not classified: {errors[1]}" in shown and f"Not classified: {errors[3]}" in shown
    csv = pd.read_csv(io.BytesIO(results_csv(table)), keep_default_na=False)
    assert csv["file"].tolist() == table["file"].tolist()
    assert csv["error"].tolist() == errors
    # The app keeps serving: the next upload classifies.
    upload(served, [("again.webp", webp_bytes(5))])
    assert results(served)["error"].tolist() == [""]


def test_the_same_file_twice_is_flagged_and_counted_once_in_its_case(
    served, sample_images: dict[str, bytes]
) -> None:
    first, second, other_patient = sample_images
    upload(
        served,
        [
            (first, sample_images[first]),
            (second, sample_images[second]),
            (first, sample_images[first]),  # the same file chosen again
            (other_patient, sample_images[other_patient]),
            (other_patient, png_bytes(tissue_like(7))),  # same name, other content
        ],
    )
    assert not served.exception
    table = results(served)
    assert len(table) == 5
    assert table["duplicate_of"].tolist() == ["", "", first, "", ""]
    assert table.loc[2, "probability"] == table.loc[0, "probability"]  # its result, reused
    cases = case_table(served).set_index("case")
    assert cases["images"].to_dict() == {"14-2523": 2, "14-25197": 2}
    assert summary_line(served) == (
        "**4 of 4 images classified.** 1 duplicate upload (the same content as an earlier "
        "file) counted once: see the *duplicate of* column."
    )
    assert any(text.startswith("Duplicate of 1. SOB") for text in texts(served.info))
    assert len(served.metric) == 4  # the duplicate's result is not drawn again
    csv = pd.read_csv(io.BytesIO(results_csv(table)), keep_default_na=False)
    assert csv["duplicate_of"].tolist() == ["", "", first, "", ""]


def test_counts_are_worded_in_the_singular_for_one(served, sample_images: dict[str, bytes]) -> None:
    breakhis = next(iter(sample_images.items()))
    upload(served, [("slide-a.png", png_bytes(tissue_like(9)))])
    assert summary_line(served) == "**1 of 1 image classified.**"
    upload(served, [breakhis, ("slide-a.png", png_bytes(tissue_like(9)))])
    note = next(text for text in texts(served.caption) if text.startswith("Case label"))
    assert "1 image without a case id is not included" in note
    upload(
        served,
        [
            breakhis,
            ("slide-a.png", png_bytes(tissue_like(9))),
            ("b.png", png_bytes(tissue_like(8))),
        ],
    )
    note = next(text for text in texts(served.caption) if text.startswith("Case label"))
    assert "2 images without a case id are not included" in note
    assert "(s)" not in all_text(served)


# --- maps only for the details on screen --------------------------------------------------
def maps_computed(app) -> list[tuple]:
    """(file id, method, layer, target) of every map the session holds."""
    held = app.session_state.get("bcd_maps", {})
    return [(key[0], *key[2:]) for key in held]


def test_maps_are_computed_for_the_page_on_screen_and_kept(served) -> None:
    """Eight images, six details a page: the network explains the six on screen, a method
    switch explains those six again, the next page only its two, and going back costs
    nothing (item 2 of issue 10: 83 images once took 55 s for one method switch)."""
    from app.views.classify import DETAILS_PER_PAGE

    assert DETAILS_PER_PAGE == 6
    upload(served, [(f"slide-{seed}.png", png_bytes(tissue_like(30 + seed))) for seed in range(8)])
    assert not served.exception
    assert results(served)["probability"].notna().sum() == 8
    first_page = maps_computed(served)
    assert len(first_page) == 6 and {key[1] for key in first_page} == {"gradcam"}
    assert len(served.image) == 6 * 3  # original, heatmap and overlay of each detail

    served.sidebar.selectbox(key="cam_method").set_value("layercam").run()
    switched = maps_computed(served)
    assert len(switched) == 12
    assert {key[0] for key in switched if key[1] == "layercam"} == {key[0] for key in first_page}

    served.selectbox(key="details_page").set_value(1).run()
    assert len(maps_computed(served)) == 14 and len(served.image) == 2 * 3
    served.selectbox(key="details_page").set_value(0).run()
    assert len(maps_computed(served)) == 14  # page one's LayerCAM maps were kept


# --- a session's model that fails ---------------------------------------------------------
@pytest.fixture(scope="module")
def mismatched_zip(trained_zip: Path, tmp_path_factory) -> Path:
    """A readable artifact whose card says another input size than its network takes: the
    card reads (its name is previewed), loading fails in the background."""
    with zipfile.ZipFile(trained_zip) as archive:
        card = json.loads(archive.read("model_card.json"))
        weights = archive.read("model.keras")
    card["name"] = "mismatched-model"
    card["config"]["input"]["height"] = 128
    path = tmp_path_factory.mktemp("mismatched") / "mismatched.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model_card.json", json.dumps(card))
        archive.writestr("model.keras", weights)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", "uploaded file broken.zip is not a readable .zip archive"),
        ("mismatched", "takes input (None, 96, 144, 3), but its card says (None, 128, 144, 3)"),
    ],
)
def test_a_failed_model_upload_keeps_classify_on_the_server_model(
    served, request, kind: str, message: str, trained_artifact: Path
) -> None:
    if kind == "corrupt":
        name, data = "broken.zip", b"PK\x03\x04 this is not really a zip archive"
    else:
        name, data = "mismatched.zip", request.getfixturevalue("mismatched_zip").read_bytes()
    served.sidebar.file_uploader(key="model_zip").set_value((name, data, "application/zip"))
    run_until_loaded(served)
    assert not served.exception
    assert texts(served.title) == ["Classify images"]  # the page is still there
    [refusal] = texts(served.sidebar.error)
    assert refusal.startswith(f"**uploaded file {name}** could not be used: ")
    assert message in refusal and "keeps the server's model" in refusal
    # The failed upload stays in sight: the panel is open and the file still in it.
    [panel] = served.sidebar.expander
    assert panel.proto.expanded
    assert served.sidebar.file_uploader(key="model_zip").value.name == name
    header = next(text for text in texts(served.caption) if text.startswith("Model: "))
    assert f"**{SERVER_MODEL}** (run {trained_artifact.name} from BCD_MODEL)" in header
    assert "mismatched-model" not in all_text(served)
    assert any("could not be used (the sidebar says why)" in t for t in texts(served.warning))
    # and the server's model classifies
    upload(served, [("scan.png", png_bytes(tissue_like(6)))])
    assert results(served)["error"].tolist() == [""] and len(served.metric) == 1


def test_the_model_panel_is_closed_while_the_server_model_is_used(served) -> None:
    [panel] = served.sidebar.expander
    assert not panel.proto.expanded


def test_a_failed_upload_without_a_server_model_is_never_named(mismatched_zip: Path) -> None:
    app = new_app().run()
    app.sidebar.file_uploader(key="model_zip").set_value(
        ("mismatched.zip", mismatched_zip.read_bytes(), "application/zip")
    )
    run_until_loaded(app)
    assert not app.exception
    assert texts(app.title) == ["Get a model"]
    assert any("takes input (None, 96, 144, 3)" in text for text in texts(app.error))
    assert "Model: none loaded." in texts(app.caption)
    assert "mismatched-model" not in all_text(app)


# --- no server paths ----------------------------------------------------------------------
def test_header_and_get_a_model_name_the_run_not_its_path(
    served, trained_artifact: Path, isolated_model_environment: Path
) -> None:
    header = next(text for text in texts(served.caption) if text.startswith("Model: "))
    assert f"(run {trained_artifact.name} from BCD_MODEL)" in header
    open_page(served, "get-a-model").run()
    shown = all_text(served)
    assert "newest run** in the folder BCD_RUNS_DIR names on this server" in shown
    for private in (str(trained_artifact.parent), str(isolated_model_environment), "/tmp"):
        assert private not in shown


def test_a_missing_model_is_named_without_its_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(tmp_path / "runs-elsewhere" / "nowhere"))
    app = run_until_loaded(new_app())
    assert texts(app.title) == ["Get a model"]
    [error] = texts(app.error)
    assert "(nowhere from BCD_MODEL): model artifact not found: nowhere" in error
    assert str(tmp_path) not in all_text(app)


# --- Get a model: the offline route -------------------------------------------------------
def test_get_a_model_gives_the_offline_route_with_real_flags_and_its_cost() -> None:
    from train.run import build_parser

    app = new_app().run()
    commands = [
        line
        for block in texts(app.code)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("python -m train.run")
    ]
    offline = [line for line in commands if "--weights" in line]
    assert {shlex.split(line)[-1] for line in offline} == {
        "none",
        "path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }
    for line in commands:  # every command the page shows parses with the real flags
        arguments = build_parser().parse_args(shlex.split(line)[3:])
        assert arguments.data == "data/BreaKHis_v1"
    warning = " ".join(texts(app.warning))
    assert "far weaker" in warning and "refuse to show labels" in warning
