"""The Streamlit script of the research demo, served by :mod:`app.main` (``streamlit run
app/main.py`` from the repository root) and run on every page view and interaction.

Optional: ``streamlit run app/main.py -- --model LOCATION`` or ``BCD_MODEL=LOCATION`` to choose
the model (a path, ``https://...#sha256=...`` or ``hf://owner/name``); otherwise the newest run
under ``runs/`` is used, or the user uploads an artifact .zip or types a URL / ``hf://`` id
(see :mod:`app.model_source`). With no model at all, the app opens on the *Get a model* page.

Each page is a ``render(context)`` function of :mod:`app.views`; this script picks the model
once per run and hands that :class:`~app.state.ModelContext` to the pages it builds (callable
``st.Page`` objects with explicit titles and URL paths). Tests drive this script directly
with Streamlit's ``AppTest``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

# Streamlit puts app/ (not the repository root) on sys.path; the app imports the `app` and
# `model` packages from the root.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402
from streamlit.runtime.uploaded_file_manager import UploadedFile  # noqa: E402

from app import components, state  # noqa: E402
from app.runtime_fixes import keep_keras_session  # noqa: E402
from app.state import ModelContext  # noqa: E402
from app.views import classify, get_model, model_card  # noqa: E402

# Before anything else runs: Streamlit would otherwise reset Keras after every script run.
keep_keras_session()

MODEL_UPLOAD_LIMIT_MB = 300  # an artifact .zip is ~100 MB (~220 MB with the "flatten" head)


def main() -> None:
    """Pick the model, draw the sidebar and the notice, and run the selected page."""
    st.set_page_config(
        page_title="BreakHis ResNet-50 · research demo",
        page_icon=":material/biotech:",
        layout="wide",
    )
    configured = state.configured_model()
    # Open while the session has (or tried) a model of its own: a failed upload stays in
    # sight, beside its error, instead of in a collapsed panel.
    own_model = bool(st.session_state.get("model_zip") or st.session_state.get("model_location"))
    with st.sidebar:
        upload, location = _model_choice(expanded=configured[1] is None or own_model)
    context = state.model_context(upload, configured, location)
    with st.sidebar:
        _model_status(context)

    page = st.navigation(pages(context))
    components.header(context)
    page.run()


# The pages' URL paths, also their navigation ids: Streamlit hashes a page by its URL path.
# (A comment, not a docstring: Streamlit's "magic" would write a bare string on the page.)
CLASSIFY_URL, MODEL_CARD_URL, GET_A_MODEL_URL = "classify", "model-card", "get-a-model"


def pages(context: ModelContext) -> list[st.Page]:
    """The navigation for this run, each page bound to ``context``: Classify, Model card and
    Get a model when the model is usable (loaded or loading), only Get a model otherwise.

    The pages are callables (``functools.partial`` objects have no ``__name__``), so each is
    given its title and URL path explicitly, as ``st.Page`` requires.
    """
    usable = context.handle is not None and context.handle.error is None
    classify_page = st.Page(
        functools.partial(classify.render, context),
        title="Classify",
        icon=":material/biotech:",
        url_path=CLASSIFY_URL,
        default=usable,
    )
    onboarding = st.Page(
        functools.partial(get_model.render, context, classify_page if usable else None),
        title="Get a model",
        icon=":material/school:",
        url_path=GET_A_MODEL_URL,
        default=not usable,
    )
    if not usable:
        return [onboarding]
    card_page = st.Page(
        functools.partial(model_card.render, context),
        title="Model card",
        icon=":material/description:",
        url_path=MODEL_CARD_URL,
    )
    return [classify_page, card_page, onboarding]


def _model_choice(expanded: bool) -> tuple[UploadedFile | None, str]:
    label = "Use another model (.zip, URL or hf://)"
    with st.expander(label, expanded=expanded, icon=":material/upload:"):
        upload = st.file_uploader(
            "Model artifact (.zip with model.keras and model_card.json)",
            type=["zip"],
            key="model_zip",
            max_upload_size=MODEL_UPLOAD_LIMIT_MB,
            help="Used for your session only. Make one with python -m model.publish.",
        )
        location = st.text_input(
            "Model from URL or hf://",
            key="model_location",
            placeholder="https://host/model.zip#sha256=… or hf://owner/name",
            help="Used for your session only (an upload above wins). A URL needs the "
            "file's #sha256= checksum; python -m model.publish prints both lines. The model "
            "is downloaded once and loads in the background.",
        )
    return upload, location


def _model_status(context: ModelContext) -> None:
    if (refused := context.refused) is not None:
        # Said here only, beside the field or upload that failed; the pages point here.
        st.error(
            f"**{refused.label}** could not be used: {refused.error_message} "
            "This session keeps the server's model. Remove the file or clear the field to "
            "stop trying it.",
            icon=":material/error:",
        )
    handle = context.handle
    if handle is None:
        st.caption(":material/block: No model loaded.")
        return
    card = handle.card
    name = card.name if card is not None else "model"
    if handle.loading:
        st.caption(f":material/hourglass_top: **{name}**: loading...")
    elif handle.error is not None:
        st.caption(f":material/error: **{name}**: could not be loaded (see the page).")
    else:
        seconds = f" in {handle.load_seconds:.1f} s" if handle.load_seconds else ""
        st.caption(f":material/check_circle: **{name}**: ready (loaded{seconds}).")


main()
