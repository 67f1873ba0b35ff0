"""The loaded model's card: what it is, how it was trained, how well it did and how measured."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from app import card_text, components
from app.state import ModelContext


def render(context: ModelContext) -> None:
    """Architecture, input, training, evaluation (patient-disjoint vs paper), threshold, date."""
    st.title("Model card")
    handle = context.handle
    card = handle.card if handle is not None else None
    if handle is None or card is None:
        st.info("No model card to show: no model is loaded.", icon=":material/info:")
        return
    if handle.loading:
        st.caption(":material/hourglass_top: The model is still loading; this is its card.")
    source_label = "uploaded in this session" if context.uploaded else handle.label

    st.subheader("Evidence level")
    components.trust_banner(card, where="model-card")
    st.caption(
        "Levels (from this model's own test on patients it never saw, with the "
        "patient-clustered bootstrap 95% CI of its AUC): *evaluated* when the CI's lower "
        "bound is at least 0.80; *weak* when it is above 0.5; otherwise *not shown to be "
        "better than chance*, and no label is shown. Defined in `model/trust.py`."
    )

    st.subheader("Summary")
    _facts_table(components.card_facts(card, source_label))

    st.subheader("Evaluation")
    components.show_metrics(card)

    st.subheader("Stain normalisation")
    st.markdown(card_text.stain_text(card))
    colours = card_text.stain_colours(card)
    if not colours.empty:
        swatches = np.concatenate(
            [np.full((40, 120, 3), _rgb(code), np.uint8) for code in colours["hex"]], axis=1
        )
        st.image(swatches, caption="  |  ".join(colours["colour"]), output_format="PNG")
        st.table(colours, hide_index=True, border="horizontal")

    st.subheader("Training")
    if not card.is_trained:
        st.error(components.UNTRAINED_BANNER, icon=":material/warning:")
    _facts_table(card_text.training_description(card))

    st.subheader("Intended use")
    st.markdown(card.intended_use)

    with st.expander("Software, checksum and the full card (JSON)"):
        _facts_table(
            [
                *[(name, version) for name, version in card.software.items()],
                ("Weights SHA-256", card.model_sha256 or "not recorded"),
                ("Card schema", str(card.schema_version)),
            ]
        )
        st.code(json.dumps(card.to_dict(), indent=2), language="json")


def _facts_table(rows: list[tuple[str, str]]) -> None:
    """Label/value rows as a compact two-column table."""
    st.table(
        pd.DataFrame(rows, columns=["field", "value"]),
        hide_index=True,
        hide_header=True,
        border="horizontal",
    )


def _rgb(hex_code: str) -> tuple[int, int, int]:
    return tuple(int(hex_code[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
