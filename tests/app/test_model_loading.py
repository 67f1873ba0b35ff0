"""Loading the model in the background (app/model_loading.py) and the /api/model status."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.model_loading import model_status, start_model_handle
from app.model_source import ModelSource
from model.errors import ArtifactNotFoundError


def test_failed_handle_reports_a_readable_message(tmp_path: Path) -> None:
    source = ModelSource(tmp_path / "missing", "environment", "BCD_MODEL=x")
    handle = start_model_handle(source)
    assert not handle.loading and not handle.ready
    assert "model artifact not found" in handle.error_message
    with pytest.raises(ArtifactNotFoundError):
        handle.wait(timeout=1)
    assert model_status(handle) == {
        "state": "failed",
        "model": None,
        "load_seconds": None,
        "error": f"model artifact not found: {tmp_path / 'missing'}",
    }


@pytest.mark.slow
def test_model_status_follows_a_real_load(trained_artifact: Path) -> None:
    source = ModelSource(trained_artifact, "environment", "BCD_MODEL=x")
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
