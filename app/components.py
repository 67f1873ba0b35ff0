"""Small pieces of UI shared by the pages: notices, the probability gauge, the model summary."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app import card_text
from app.results import format_probability
from app.state import ModelContext
from model.card import ModelCard

MALIGNANT_COLOUR = "#a93226"
BENIGN_COLOUR = "#1f618d"

RESEARCH_NOTICE = (
    "**Research use only: not a diagnostic device.** This demo reproduces a published "
    "ResNet-50 classifier for BreakHis H&E images. Its output must not be used to diagnose, "
    "treat or triage anyone."
)
UNTRAINED_BANNER = (
    "**Untrained model: meaningless output.** This model's card says its classification head "
    "was never trained (random or ImageNet-only weights). Probabilities, labels and heatmaps "
    "below are noise. Train one with `python -m train.run --preset quick --data "
    "data/BreaKHis_v1` (see *Get a model*)."
)


def header(context: ModelContext) -> None:
    """The always-visible notice naming the model in use and how it was evaluated."""
    with st.container(border=True, key="research-notice"):
        st.markdown(f":material/science: {RESEARCH_NOTICE}")
        handle = context.handle
        # A failed model has no card (ModelHandle.card): the header never names it.
        card = handle.card if handle is not None else None
        if card is None:
            st.caption("Model: none loaded.")
        else:
            where = "uploaded in this session" if context.uploaded else handle.label
            if handle.loading:
                where += "; still loading"
            st.caption(
                f"Model: **{card.name}** ({where}). Evaluation: "
                f"{card_text.evaluation_summary(card)}."
            )
    if card is None:
        return
    if not card.is_trained:
        st.error(UNTRAINED_BANNER, icon=":material/warning:")
    trust_banner(card, where="header")


def trust_banner(card: ModelCard, where: str) -> None:
    """The model's evidence level (quality gate) and why, in plain words (``where`` keeps
    the element keys of the header's and a page's banner apart)."""
    level, title, sentence = card_text.trust_text(card)
    show = {"evaluated": st.success, "weak": st.warning, "unproven": st.error}[level]
    icon = {"evaluated": ":material/verified:", "weak": ":material/warning:"}.get(
        level, ":material/block:"
    )
    with st.container(key=f"trust-{where}-{level}"):
        show(f"**Evidence: {title}.** {sentence}", icon=icon)


NEUTRAL_COLOUR = "#7f8c8d"
GAUGE_TICKS = (0, 25, 50, 75, 100)
GAUGE_CAPTION_GAP_PX = 16
"""Pixels between the bottom of the gauge's plot area and the top of its threshold caption."""


def probability_gauge(
    probability: float, threshold: float, label: str | None, positive_label: str = "malignant"
) -> go.Figure:
    """A 0-100 % gauge of the probability of ``positive_label`` with the decision threshold
    marked; grey when no label is shown (``label`` None)."""
    if label is None:
        colour = NEUTRAL_COLOUR
    else:
        colour = MALIGNANT_COLOUR if label == positive_label else BENIGN_COLOUR
    figure = go.Figure(
        go.Indicator(
            mode="gauge",
            value=probability * 100,
            title={"text": f"probability: {positive_label}", "font": {"size": 13}},
            gauge={
                # The labels are given as text: with explicit tick values plotly.js drew the
                # numbers without the "ticksuffix" (a browser test reads them).
                "axis": {
                    "range": [0, 100],
                    "tickvals": list(GAUGE_TICKS),
                    "ticktext": [f"{tick}%" for tick in GAUGE_TICKS],
                },
                "bar": {"color": colour, "thickness": 0.35},
                "steps": [
                    {"range": [0, threshold * 100], "color": "#e8f1f8"},
                    {"range": [threshold * 100, 100], "color": "#f9e9e7"},
                ],
                "threshold": {
                    "line": {"color": "#17202a", "width": 3},
                    "thickness": 0.9,
                    "value": threshold * 100,
                },
            },
        )
    )
    # The number is an annotation, not the indicator's own, so it reads exactly like the
    # metric beside it ("<0.1%" rather than a rounded "0.0 %").
    figure.add_annotation(
        x=0.5,
        y=0.08,
        showarrow=False,
        text=format_probability(probability),
        font={"size": 28, "color": colour},
    )
    # The threshold caption sits in its own strip below the plot area, anchored by its top
    # edge and shifted down in pixels: the 0% and 100% tick labels reach the bottom of the
    # plot area, and a caption placed inside it (or at a fraction of its height, which
    # shrinks with the figure) ran into them.
    figure.add_annotation(
        x=0.5,
        y=0,
        xref="paper",
        yref="paper",
        yanchor="top",
        yshift=-GAUGE_CAPTION_GAP_PX,
        showarrow=False,
        text=f"threshold {threshold:.3g}: at or above means {positive_label}",
        font={"size": 11, "color": "#566573"},
    )
    figure.update_layout(height=210, margin={"l": 25, "r": 25, "t": 40, "b": 45})
    return figure


def card_facts(card: ModelCard, source_label: str) -> list[tuple[str, str]]:
    """The card's key facts as (label, value) rows for a compact summary."""
    return [
        ("Name", card.name),
        ("Source", source_label),
        ("Architecture", card.architecture),
        ("Input", card_text.input_description(card)),
        ("Decision threshold", f"{card.threshold:.3g} ({card.threshold_source})"),
        ("Probability", card_text.calibration_text(card)),
        ("Like the training images?", card_text.applicability_text(card)),
        ("Classes", ", ".join(f"{k}: {v}" for k, v in sorted(card.labels.items()))),
        ("Created", card_text.short_date(card.created)),
    ]


def show_metrics(card: ModelCard) -> None:
    """Evaluation metrics side by side, with the leakage caveat where it applies."""
    if not card.evaluation:
        st.warning("This model's card has no evaluation results.", icon=":material/info:")
        return
    st.dataframe(card_text.metrics_table(card), width="stretch")
    for _, evaluation in card.ordered_evaluations():
        if evaluation.description:
            st.caption(f"**{evaluation.heading}**: {evaluation.description}")
    if any(not evaluation.patient_disjoint for evaluation in card.evaluation.values()):
        st.warning(card_text.LEAK_NOTE, icon=":material/warning:")
