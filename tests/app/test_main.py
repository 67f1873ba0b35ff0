"""The entry point app/main.py: an st.App whose lifespan loads the model at server start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.web.server.app_discovery import discover_asgi_app

from app.launch import get_json, start_streamlit, stop, wait_until_healthy
from tests.app.helpers import REPO_ROOT

MAIN = REPO_ROOT / "app" / "main.py"


def test_streamlit_run_serves_main_through_its_st_app() -> None:
    # `streamlit run app/main.py` looks for an ASGI app in the file without running it; only
    # then does the lifespan (model preloading) and the /api/model route exist.
    discovery = discover_asgi_app(MAIN)
    assert discovery.is_asgi_app
    assert discovery.app_name == "app"


def poll_model(url: str, until: set[str], timeout: float) -> list[tuple[int, dict]]:
    """GET /api/model until its state is in ``until``; every answer seen, in order."""
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers.append(get_json(f"{url}/api/model"))
        if answers[-1][1]["state"] in until:
            return answers
        time.sleep(0.25)
    raise TimeoutError(f"/api/model never reached {until}: {answers[-3:]}")


@pytest.mark.slow
def test_model_loads_at_server_start_before_any_visitor(
    trained_artifact: Path, tmp_path: Path
) -> None:
    log = tmp_path / "streamlit.log"
    process, url = start_streamlit(trained_artifact, tmp_path, log)
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        # No page is ever opened: only the lifespan can have started the loading.
        answers = poll_model(url, until={"ready", "failed", "none"}, timeout=180)
        code, body = answers[-1]
        assert (code, body["state"], body["error"]) == (200, "ready", None)
        assert body["model"] == "test-fixture-random-weights"
        assert body["load_seconds"] > 0
        # before it was ready, it said so with 503 (a readiness probe waits)
        assert all(code == 503 and body["state"] == "loading" for code, body in answers[:-1])
    finally:
        stop(process)


@pytest.mark.slow
def test_a_missing_model_is_reported_and_the_server_keeps_serving(tmp_path: Path) -> None:
    log = tmp_path / "streamlit.log"
    missing = tmp_path / "no-such-model"
    process, url = start_streamlit(None, tmp_path, log, script_args=("--model", str(missing)))
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        code, body = poll_model(url, until={"failed"}, timeout=30)[-1]
        assert code == 503
        assert body["error"] == f"model artifact not found: {missing.name}"  # no server path
        assert get_json(f"{url}/api/model")[0] == 503  # asked again: same answer, still up
        assert process.poll() is None
    finally:
        stop(process)


@pytest.mark.slow
def test_a_bare_model_flag_is_reported_not_fatal(tmp_path: Path) -> None:
    # argparse would exit the process on `-- --model` with no path; the server must start
    log = tmp_path / "streamlit.log"
    process, url = start_streamlit(None, tmp_path, log, script_args=("--model",))
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        code, body = poll_model(url, until={"failed"}, timeout=30)[-1]
        assert code == 503
        assert "--model needs a path" in body["error"]
    finally:
        stop(process)


@pytest.mark.slow
def test_no_model_at_all_is_state_none(tmp_path: Path) -> None:
    log = tmp_path / "streamlit.log"
    process, url = start_streamlit(None, tmp_path, log)  # empty runs dir, no BCD_MODEL
    try:
        wait_until_healthy(process, url, timeout=90, log=log)
        assert get_json(f"{url}/api/model") == (
            503,
            {"state": "none", "model": None, "load_seconds": None, "error": None},
        )
    finally:
        stop(process)
