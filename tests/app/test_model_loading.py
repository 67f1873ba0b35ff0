"""Loading the model in the background (app/model_loading.py) and the /api/model status."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.model_loading import WARM_UP_CONTROLS_ENV, model_status, start_model_handle
from app.model_source import ModelSource
from model.errors import ArtifactNotFoundError, ModelLocationError, RemoteModelNotFoundError
from tests.http_server import FileServer


def test_failed_handle_reports_a_readable_message(tmp_path: Path) -> None:
    source = ModelSource(str(tmp_path / "missing"), "environment", "BCD_MODEL=x")
    handle = start_model_handle(source)
    assert not handle.loading and not handle.ready
    assert "model artifact not found" in handle.error_message
    with pytest.raises(ArtifactNotFoundError):
        handle.wait(timeout=1)
    assert model_status(handle) == {
        "state": "failed",
        "model": None,
        "load_seconds": None,
        "error": "model artifact not found: missing",  # its name, never the server's path
    }


@pytest.mark.slow
def test_model_status_follows_a_real_load(trained_artifact: Path) -> None:
    source = ModelSource(str(trained_artifact), "environment", "BCD_MODEL=x")
    handle = start_model_handle(source)
    early = model_status(handle)
    # the card is read before loading starts, so the model is named while it loads
    assert early["model"] == "test-fixture-random-weights"
    assert early["state"] in {"loading", "ready"}
    handle.wait(timeout=180)
    status = model_status(handle)
    assert (status["state"], status["error"]) == ("ready", None)
    assert status["load_seconds"] == round(handle.load_seconds, 2) > 0
    assert set(handle.timings) == {
        "import TensorFlow",
        "read artifact",
        "build analyzer",
        "trace Grad-CAM",
    }
    assert model_status(None)["state"] == "none"


@pytest.mark.slow
def test_a_loaded_model_warms_up_every_map_control_in_the_background(
    monkeypatch, trained_artifact: Path
) -> None:
    """Once the model is ready, a background thread traces the other layer's maps and TTA
    (the first switch of either then costs only computing); ``BCD_WARM_UP_CONTROLS=0``
    turns it off."""
    from model.config import CAM_LAYERS, CAM_METHODS, COARSE_LAYER

    source = ModelSource(str(trained_artifact), "environment", "BCD_MODEL=x")
    monkeypatch.setenv(WARM_UP_CONTROLS_ENV, "0")
    cold = start_model_handle(source)
    # The load traces the coarse layer's graph, which gives every method's map.
    coarse = {(method, COARSE_LAYER) for method in CAM_METHODS}
    assert cold.wait(timeout=180).explainer.traced() == coarse
    assert cold.warmed_up(timeout=0) is False

    monkeypatch.setenv(WARM_UP_CONTROLS_ENV, "1")
    warm = start_model_handle(source)
    analyzer = warm.wait(timeout=180)
    assert warm.warmed_up(timeout=300)
    pairs = {(method, layer) for method in CAM_METHODS for layer in CAM_LAYERS}
    assert analyzer.explainer.traced() == pairs
    assert "warm up every map and TTA (background)" in warm.timings


def test_a_malformed_remote_location_fails_at_once() -> None:
    source = ModelSource("https://example.org/model.zip", "environment", "BCD_MODEL=x")
    handle = start_model_handle(source)
    assert not handle.loading and handle.started is None  # nothing was fetched
    with pytest.raises(ModelLocationError):
        handle.wait(timeout=1)
    assert "has no pinned checksum: add #sha256=" in handle.error_message


def test_a_remote_model_is_fetched_in_the_background_and_its_failure_reported() -> None:
    with FileServer() as server:
        url = f"{server.url}/gone/model.zip#sha256={'c' * 64}"
        handle = start_model_handle(ModelSource(url, "command line", "--model model.zip@..."))
        assert handle.started is not None and handle.card is None  # no card before the fetch
        with pytest.raises(RemoteModelNotFoundError):
            handle.wait(timeout=30)
    assert server.requests == ["/gone/model.zip"]
    assert handle.error_message.startswith(
        f"model.zip@sha256:cccccccccccc: {server.url}/gone/model.zip answered HTTP 404"
    )
    assert set(handle.timings) == {"fetch model"}  # failed before TensorFlow was imported
    assert model_status(handle)["state"] == "failed"
