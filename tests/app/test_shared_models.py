"""Shared models in the real app (app/ui.py under AppTest): a model given by a pinned URL
(``BCD_MODEL``, ``-- --model``, the sidebar field) is fetched from a real HTTP server on
127.0.0.1, loads, and is named by its short name, never by where it is cached."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.helpers import new_app, run_until_loaded, texts
from tests.http_server import FileServer

pytestmark = pytest.mark.slow


@pytest.fixture
def shared(trained_zip: Path) -> Iterator[tuple[FileServer, str]]:
    """A local server holding the fixture artifact .zip, and its pinned location."""
    data = trained_zip.read_bytes()
    with FileServer() as server:
        url = server.serve("/team/model.zip", data)
        yield server, f"{url}#sha256={hashlib.sha256(data).hexdigest()}"


def all_text(app) -> str:
    """Every text the app showed (main area and sidebar)."""
    kinds = ("title", "caption", "markdown", "info", "success", "warning", "error")
    return "\n".join(text for kind in kinds for text in texts(getattr(app, kind)))


def short(location: str) -> str:
    return f"model.zip@sha256:{location.rsplit('=', 1)[1][:12]}"


@pytest.mark.parametrize("how", ["BCD_MODEL", "--model"])
def test_a_model_from_a_pinned_url_loads_and_is_named_by_its_short_name(
    monkeypatch, tmp_path: Path, shared: tuple[FileServer, str], how: str
) -> None:
    server, location = shared
    if how == "BCD_MODEL":
        monkeypatch.setenv("BCD_MODEL", location)
        expected = f"BCD_MODEL={short(location)}"
    else:  # what `streamlit run app/main.py -- --model LOCATION` leaves in sys.argv
        monkeypatch.setattr(sys, "argv", ["app/main.py", "--model", location])
        expected = f"--model {short(location)}"
    app = run_until_loaded(new_app())
    assert not app.exception
    assert texts(app.title) == ["Classify images"]
    header = " ".join(texts(app.caption))
    assert f"Model: **test-fixture-random-weights** ({expected})" in header
    # Neither the cache folder nor the server's address is shown anywhere.
    shown = all_text(app)
    assert str(tmp_path) not in shown and server.url not in shown
    assert server.requests == ["/team/model.zip"]
    cached = list((tmp_path / "bcd-cache" / "models").iterdir())
    assert [path.name for path in cached] == [f"{location.rsplit('=', 1)[1]}.zip"]


def test_the_sidebar_field_loads_a_url_and_a_failure_keeps_the_servers_model(
    monkeypatch, trained_artifact: Path, shared: tuple[FileServer, str]
) -> None:
    server, location = shared
    monkeypatch.setenv("BCD_MODEL", str(trained_artifact))
    app = run_until_loaded(new_app())
    field = app.sidebar.text_input(key="model_location")
    assert field.label == "Model from URL or hf://"

    # A URL that is not there: said in the sidebar; the session keeps the server's model.
    gone = f"{server.url}/gone/model.zip#sha256={'d' * 64}"
    field.input(gone)
    run_until_loaded(app)  # reruns while the typed model "loads" (its 404 comes from a thread)
    assert texts(app.title) == ["Classify images"], all_text(app)
    [error] = texts(app.sidebar.error)
    assert error.startswith("**chosen in this session: model.zip@sha256:dddddddddddd** could not")
    assert "answered HTTP 404 Not Found" in error and "keeps the server's model" in error
    assert texts(app.title) == ["Classify images"]
    assert f"run {trained_artifact.name} from BCD_MODEL" in " ".join(texts(app.caption))

    # A good one: it takes over for this session, named by its short name.
    app.sidebar.text_input(key="model_location").input(location)
    run_until_loaded(app)
    assert not app.exception and not app.sidebar.error
    header = " ".join(texts(app.caption))
    assert f"(chosen in this session: {short(location)})" in header
    assert server.requests == ["/gone/model.zip", "/team/model.zip"]

    # A path on the server is refused in this field (visitors must not reach the disk).
    app.sidebar.text_input(key="model_location").input(str(trained_artifact)).run()
    [error] = texts(app.sidebar.error)
    assert "is not a URL or hf:// id: this field takes" in error
