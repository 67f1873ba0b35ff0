"""Onboarding: how to get a model, shown first when there is none (or it failed to load)."""

from __future__ import annotations

import streamlit as st

from app import model_source
from app.state import ModelContext


def render(context: ModelContext, classify_page: st.Page | None = None) -> None:
    """Explain exactly how to get a model: download BreakHis, train, or upload an artifact.

    ``classify_page`` is the navigation's *Classify* page, linked to when a model is loaded
    (None while there is no usable model, when that page is not in the navigation).
    """
    st.title("Get a model")
    message = context.handle.error_message if context.handle is not None else None
    if message is not None:
        origin = "this upload" if context.uploaded else context.handle.label
        st.error(
            f"**The model could not be loaded** ({origin}): {message}", icon=":material/error:"
        )
        st.markdown(
            "Fix or replace the artifact (a folder with `model.keras` and `model_card.json`, "
            "a run folder holding `model/`, or a `.zip` of the two files), then reload the page."
        )
    elif context.handle is not None and context.handle.loading:
        st.info(
            "**A model is loading**"
            + (" (uploaded in this session)." if context.uploaded else ".")
            + " *Classify* takes images already; they are classified once it is ready.",
            icon=":material/hourglass_top:",
        )
        if classify_page is not None:
            st.page_link(classify_page, label="Classify images", icon=":material/biotech:")
    elif context.has_model:
        st.success(
            "**A model is loaded**"
            + (" (uploaded in this session)." if context.uploaded else ".")
            + " Classify images with it:",
            icon=":material/check_circle:",
        )
        if classify_page is not None:
            st.page_link(classify_page, label="Classify images", icon=":material/biotech:")
    else:
        st.info(
            "**No model is loaded yet.** The app classifies images with a model you train "
            "(or receive as an artifact). No numbers are shown until there is one.",
            icon=":material/info:",
        )
    runs_folder = model_source.runs_directory_name()  # never the server's path
    st.subheader("1. Download BreakHis")
    st.markdown(
        "The dataset (7,909 H&E images of 82 patients, about 4 GB) is public. This fetches "
        "and extracts it into `data/BreaKHis_v1`:"
    )
    st.code("python -m train.download --dest data/", language="bash")
    st.subheader("2. Train")
    st.markdown(
        "**Quick, on a CPU (minutes):** the ImageNet ResNet-50 stays frozen and only the "
        "head trains. Good enough to try the app, not to judge the method."
    )
    st.code("python -m train.run --preset quick --data data/BreaKHis_v1", language="bash")
    st.markdown(
        "**Offline (no internet):** the quick run downloads ResNet-50's ImageNet weights "
        "(about 95 MB) once. Without internet, pass a copy of that file with `--weights` "
        "(or put it in `~/.keras/models/`, where Keras looks first), or start from random "
        "weights with `--weights none`:"
    )
    st.code(
        "python -m train.run --preset quick --data data/BreaKHis_v1 \\\n"
        "    --weights path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5\n"
        "python -m train.run --preset quick --data data/BreaKHis_v1 --weights none",
        language="bash",
    )
    st.warning(
        "**Without ImageNet weights the model is far weaker.** The quick run keeps ResNet-50 "
        "frozen, so with `--weights none` only the head learns, on the features of a random "
        "network: expect results near chance. The app's quality gate will then most likely "
        "refuse to show labels (*not shown to be better than chance*). Use it to try the "
        "app offline, not to judge the method.",
        icon=":material/warning:",
    )
    st.markdown(
        "**The paper's run (GPU):** fine-tunes the whole network under the paper's protocol "
        "(train on 100X/200X/400X, test on 40X: every test patient is also a training "
        "patient, so its numbers are optimistic) and, in the same run, under the honest "
        "patient-disjoint protocol (5 random 70/30 patient splits):"
    )
    st.code("python -m train.run --preset paper --data data/BreaKHis_v1", language="bash")
    st.markdown(
        f"Each run writes `runs/<name>/`, with the model artifact in `runs/<name>/model/`. "
        f"The app picks the **newest run** in {_as_code(runs_folder)} by itself: reload this "
        "page when training has finished."
    )
    st.subheader("3. Or point the app at a model")
    st.code(
        "BCD_MODEL=runs/<name> streamlit run app/main.py\n"
        "streamlit run app/main.py -- --model runs/<name>    # same, as an argument\n"
        "streamlit run app/main.py -- --model 'https://host/model.zip#sha256=<hex>'\n"
        "streamlit run app/main.py -- --model hf://owner/name",
        language="bash",
    )
    st.markdown(
        "Or, for this session, **upload an artifact `.zip`** or type a **URL or `hf://` "
        "id** in the sidebar (*Use another model*). A colleague's model comes as such a "
        "line; make a shareable `.zip` of a run (and the lines to share) with:"
    )
    st.code("python -m model.publish runs/<name> --out model.zip", language="bash")


def _as_code(folder_name: str) -> str:
    """``runs/`` as code; a sentence about another folder as plain words."""
    return f"`{folder_name}`" if folder_name.endswith("/") else folder_name
