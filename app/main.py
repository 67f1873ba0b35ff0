"""Entry point of the research demo: ``streamlit run app/main.py`` from the repository root.

Streamlit finds the ``st.App`` below and serves the page script :mod:`app.ui` through it. The
App's lifespan starts loading the configured model (``-- --model LOCATION``, ``BCD_MODEL`` or
the newest run under ``runs/``; a URL or ``hf://`` location is fetched first, see
:mod:`model.sources`) in a background thread as soon as the server starts, so the
model is usually ready before the first visitor uploads an image, instead of only starting
to load (TensorFlow import, Keras deserialisation, graph tracing: seconds, see
docs/benchmarks.md) when the first page is opened. The server answers at once either way:
loading never blocks it.

``GET /api/model`` tells a deployment whether the model is ready (readiness probe):
``{"state": "ready", "model": "<card name>", "load_seconds": <seconds>, "error": null}``;
``state`` is ``none``, ``loading``, ``ready`` or ``failed``. It reports the model loaded at
server start (a model re-trained later is picked up by the pages, not by this endpoint).

``GET /api/sessions`` counts sessions (``active``, ``disconnected``, ``closed``) and the
uploaded images still held (``images_in_memory``). A session whose browser has been gone
for ``BCD_SESSION_GRACE_S`` seconds (default 60) is closed and its memory released
(:mod:`app.sessions`).

The same object runs under any ASGI server, e.g. ``uvicorn app.main:app`` from the repository
root (the model then comes from ``BCD_MODEL`` or ``runs/``: there is no ``-- --model``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

# Streamlit puts app/ (not the repository root) on sys.path; the app imports the `app` and
# `model` packages from the root.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from app import results, sessions, state  # noqa: E402
from app.runtime_fixes import keep_keras_session  # noqa: E402

# Before the server starts its threads: fewer malloc heaps, so memory freed when a session
# ends can be returned to the system (app.sessions.limit_malloc_arenas).
sessions.limit_malloc_arenas()

UI_SCRIPT = Path(__file__).resolve().with_name("ui.py")
MODEL_STATUS_PATH = "/api/model"
SESSIONS_PATH = "/api/sessions"


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    """At server start: keep Keras's session across script runs, start loading the model,
    start closing sessions whose browser has gone (:mod:`app.sessions`)."""
    keep_keras_session()
    state.preload_configured_model()
    sessions.start_session_reaper()
    yield


def model_status(_request: Request) -> JSONResponse:
    """Whether the model preloaded at server start is ready: 200 when it is, 503 otherwise.

    Reads the handle only (never starts a load); a plain function, so Starlette runs it in a
    worker thread.
    """
    status = state.server_model_status()
    return JSONResponse(status, status_code=200 if status["state"] == "ready" else 503)


def session_status(_request: Request) -> JSONResponse:
    """Sessions connected, disconnected (kept for a reconnect) and closed by the reaper, and
    how many uploaded images the server still holds (counts only, never names or pixels)."""
    return JSONResponse(
        {**sessions.session_counts(), "images_in_memory": results.prepared_uploads_in_memory()}
    )


app = st.App(
    UI_SCRIPT,
    lifespan=lifespan,
    routes=[Route(MODEL_STATUS_PATH, model_status), Route(SESSIONS_PATH, session_status)],
)

if __name__ == "__main__":  # `python app/main.py` works too (Streamlit's own server)
    app.run()
