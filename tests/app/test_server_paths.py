"""No absolute server path reaches a visitor, even inside a library's error message: Keras
names the file it could not read by its full path, and an uploaded ``.zip`` is read from a
scratch folder. The real app (AppTest) with real artifacts whose ``model.keras`` Keras
cannot read, and the ``/api/model`` status built from the same handle."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from app.model_loading import model_status, start_model_handle
from app.model_source import resolve_model_source
from tests.app.helpers import new_app, run_until_loaded, texts

pytestmark = pytest.mark.slow

PRIVATE_FOLDER = "private-server-folder"
"""A folder name only the server knows: it must never be shown."""
KERAS_FAILURE = "could not be read by Keras"


def every_text(app) -> str:
    """Everything the run drew, main page and sidebar."""
    kinds = ("title", "subheader", "markdown", "caption", "code", "error", "warning", "info")
    return "\n".join(text for kind in (*kinds, "success") for text in texts(getattr(app, kind)))


def unreadable_card(trained_artifact: Path) -> str:
    """The fixture's card without its weights checksum, so loading gets as far as Keras."""
    card = json.loads((trained_artifact / "model" / "model_card.json").read_text("utf-8"))
    card.pop("model_sha256", None)
    return json.dumps(card)


@pytest.fixture
def unreadable_run(trained_artifact: Path, tmp_path: Path) -> Path:
    """A run folder deep in the server's disk whose ``model.keras`` is not a Keras file."""
    model = tmp_path / PRIVATE_FOLDER / "runs" / "keras-damaged" / "model"
    model.mkdir(parents=True)
    (model / "model_card.json").write_text(unreadable_card(trained_artifact), "utf-8")
    (model / "model.keras").write_bytes(b"PK\x03\x04 not a keras archive")
    return model.parent


def test_a_keras_error_names_the_run_not_the_server_path(monkeypatch, unreadable_run: Path) -> None:
    monkeypatch.setenv("BCD_MODEL", str(unreadable_run))
    app = run_until_loaded(new_app())
    assert not app.exception
    assert texts(app.title) == ["Get a model"]
    [error] = texts(app.error)
    assert f"model.keras in run keras-damaged {KERAS_FAILURE}" in error
    assert "filepath=model.keras" in error  # Keras's own words, cut to the file's name
    shown = every_text(app)
    assert PRIVATE_FOLDER not in shown and str(unreadable_run.parent) not in shown


def test_the_status_endpoint_names_no_server_path(unreadable_run: Path) -> None:
    source = resolve_model_source([], {"BCD_MODEL": str(unreadable_run)})
    assert source is not None
    handle = start_model_handle(source)
    with pytest.raises(Exception, match=KERAS_FAILURE):  # the raw error still has the path
        handle.wait(timeout=120)
    status = model_status(handle)
    assert status["state"] == "failed" and KERAS_FAILURE in status["error"]
    assert PRIVATE_FOLDER not in json.dumps(status)


def test_an_uploaded_zip_keras_cannot_read_names_no_scratch_folder(
    monkeypatch, trained_artifact: Path
) -> None:
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model_card.json", unreadable_card(trained_artifact))
        archive.writestr("model.keras", b"PK\x03\x04 not a keras archive")
    app.sidebar.file_uploader(key="model_zip").set_value(
        ("colleague.zip", buffer.getvalue(), "application/zip")
    )
    run_until_loaded(app)
    assert not app.exception
    assert texts(app.title) == ["Classify images"]  # the server's model still serves
    [refusal] = texts(app.sidebar.error)
    assert f"model.keras in uploaded file colleague.zip {KERAS_FAILURE}" in refusal
    shown = every_text(app)
    assert tempfile.gettempdir() not in shown and "/tmp" not in shown
