"""Classify page: upload images, see probability, label, Grad-CAM; table, CSV and cases.

Per-image choices (magnification, case id) and widgets are keyed by the upload's file id;
each image's original, heatmap and overlay are drawn on its display copy (app.results), and
maps are computed only for the details on screen (app.state.with_maps).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from app import components, results, state, uploads
from app.model_loading import ModelHandle
from app.results import AnalysisSettings, ImageResult
from app.state import ModelContext
from app.uploads import Duplicate
from app.wording import plural
from model.config import CAM_LAYERS, CAM_METHODS, CAM_TARGETS, Target
from model.overlay import COLORMAPS, DEFAULT_COLORMAP, DEFAULT_OPACITY
from model.stain import STAIN_METHODS
from model.trust import WITHHELD_LABEL, ModelTrust, assess_model

if TYPE_CHECKING:  # importing it at run time would import TensorFlow
    from model.analysis import ImageAnalysis

IMAGE_UPLOAD_LIMIT_MB = 50  # per file; a BreakHis PNG is ~0.5 MB
DETAILS_PER_PAGE = 6  # drawing three images and a chart per result is the slow part
TARGETS: dict[Target, str] = {
    "predicted": "the predicted class",
    "malignant": "malignant evidence",
    "benign": "benign evidence",
}
"""How the sidebar names each of :data:`model.config.CAM_TARGETS`."""


@dataclass(frozen=True)
class DisplaySettings:
    """How results are drawn (cheap: no network run when these change).

    ``show_unbacked``: the research view, which shows the probabilities of a model that is
    not shown to be better than chance (never its labels).
    """

    opacity: float = DEFAULT_OPACITY
    colormap: str = DEFAULT_COLORMAP
    show_unbacked: bool = False


def render(context: ModelContext) -> None:
    """The main page."""
    st.title("Classify images")
    handle = context.handle
    if handle is None:  # ui.py routes to onboarding; kept for safety
        st.info("No model is loaded: see *Get a model*.", icon=":material/info:")
        return
    if handle.loading:
        _loading_status(handle)
    if context.refused is not None:
        st.warning(
            f"**{context.refused.label}** could not be used (the sidebar says why): images "
            "are classified with the server's model.",
            icon=":material/swap_horiz:",
        )

    # Any file is accepted here: a type filter would make the browser drop other files
    # before the server sees them, so they would vanish from the table and the count. A
    # file of another type gets its reason in the table instead (app.uploads).
    files = st.file_uploader(
        "H&E microscopy images (PNG, JPEG, TIFF, BMP, WebP, GIF); several at once for a case",
        type=None,
        accept_multiple_files=True,
        key="images",
        max_upload_size=IMAGE_UPLOAD_LIMIT_MB,
        help="Images stay in this server's memory for your session only: they are never "
        "written to disk or logged. BreakHis file names (SOB_M_DC-14-2523-40-010.png) "
        "give the magnification and the patient. An animated GIF or WebP is classified "
        "by its first frame.",
    )
    default_case = st.text_input(
        "Case id for images without a BreakHis patient id",
        key="default_case",
        placeholder="e.g. CASE-017 (optional)",
        help="Images are grouped into cases by the patient id in BreakHis file names; other "
        "images join the case typed here (or a case typed for the image itself below).",
    )
    if not files and handle.loading:
        st.caption("Grad-CAM settings appear in the sidebar once the model has loaded.")
        return
    try:
        with st.spinner("Loading the model (TensorFlow and ResNet-50, about 10 s on a CPU)..."):
            handle.wait()
    except Exception:
        if context.uploaded:  # the next run falls back to the server's model, if it has one
            st.rerun()
        st.error(
            f"**The model could not be loaded**: {handle.error_message}", icon=":material/error:"
        )
        return
    card = handle.card
    assert card is not None
    trust = assess_model(card)
    settings, display = _controls(trust)
    if not files:
        st.caption(
            "Upload one image to see its malignancy probability and Grad-CAM heatmap, or "
            "several to get a results table, a CSV and a per-case summary."
        )
        return

    duplicates = state.upload_duplicates(files)
    analysed = state.analyses(files, handle, settings, duplicates)
    # Maps only for the details on screen (cached), then every map known so far for the table.
    first, last = _details_range(len(analysed))
    state.with_maps(analysed[first:last], handle, settings)
    analysed = state.with_cached_maps(analysed, handle, settings)
    untrained = not card.is_trained
    state.forget_choices(state.MAGNIFICATION_CHOICES, {upload.file_id for upload in files})
    state.forget_choices(state.CASE_CHOICES, {upload.file_id for upload in files})
    magnifications = state.per_image_choices(state.MAGNIFICATION_CHOICES)
    cases = state.per_image_choices(state.CASE_CHOICES)
    table = results.results_table(
        analysed,
        magnifications,
        cases,
        untrained=untrained,
        default_case=default_case,
        trust=trust,
        show_unbacked=display.show_unbacked,
    )
    if not settings.tta:
        table = table.drop(columns=["tta_mean", "tta_std"])
    table = uploads.without_repeated_errors(table)
    table = uploads.flag_duplicates(table, [upload.file_id for upload in files], duplicates)
    by_id = {upload.file_id: upload for upload in files}

    view = _View(settings, display, default_case, untrained, trust, card.labels)

    def details() -> None:
        _details(by_id, analysed, magnifications, view, duplicates)

    st.markdown(uploads.summary(analysed, duplicates))
    if len(analysed) == 1:  # one image: its result first, the table is secondary
        details()
        _results_table(table)
        _cases(table, card.threshold, card.labels)
    else:  # a batch: the overview first
        _results_table(table)
        _cases(table, card.threshold, card.labels)
        details()


@dataclass(frozen=True)
class _View:
    """Everything the details of one result are drawn with."""

    settings: AnalysisSettings
    display: DisplaySettings
    default_case: str
    untrained: bool
    trust: ModelTrust
    labels: Mapping[int, str]

    @property
    def probabilities_meaningful(self) -> bool:
        return self.trust.shows_labels


# --- pieces -------------------------------------------------------------------------------
@st.fragment(run_every=1.0)
def _loading_status(handle: ModelHandle) -> None:
    """Shows loading progress; reruns the page once the model is ready."""
    if handle.loading:
        st.info(
            f"Loading the model ({handle.elapsed:.0f} s): importing TensorFlow, reading the "
            "weights, preparing Grad-CAM. You can upload images already.",
            icon=":material/hourglass_top:",
        )
    else:
        st.rerun()


def _controls(trust: ModelTrust) -> tuple[AnalysisSettings, DisplaySettings]:
    """Grad-CAM and TTA settings in the sidebar, and the research view for a model that is
    not shown to be better than chance."""
    with st.sidebar:
        show_unbacked = False
        if not trust.shows_labels:
            st.subheader("Research view")
            show_unbacked = st.toggle(
                "Show probabilities that are not meaningful",
                key="show_unbacked",
                help="This model is not shown to be better than chance, so its "
                "probabilities are hidden and no label is given. For research on the model "
                "itself, this shows the probabilities (marked not meaningful); labels stay "
                "hidden.",
            )
        st.subheader("Grad-CAM")
        method = st.selectbox(
            "Method", list(CAM_METHODS), format_func=CAM_METHODS.__getitem__, key="cam_method"
        )
        layer = st.radio(
            "Layer", list(CAM_LAYERS), format_func=CAM_LAYERS.__getitem__, key="cam_layer"
        )
        target = st.selectbox(
            "Explain", list(CAM_TARGETS), format_func=TARGETS.__getitem__, key="cam_target"
        )
        opacity = st.slider("Overlay opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="opacity")
        colormap = st.selectbox(
            "Colormap", COLORMAPS, index=COLORMAPS.index(DEFAULT_COLORMAP), key="colormap"
        )
        tta = st.toggle(
            "Test-time augmentation",
            key="tta",
            help="Also classify the image flipped left-right, flipped up-down and rotated by "
            "180°, and report the mean and spread of the four probabilities. (Quarter turns "
            "are left out: they would change the 144x96 input shape.)",
        )
        if method != "gradcam":
            st.caption(
                "Grad-CAM++ and LayerCAM take a few seconds the first time (graph tracing), "
                "then about half a second per image."
            )
    return (
        AnalysisSettings(method=method, layer=layer, target=target, tta=tta),
        DisplaySettings(opacity=opacity, colormap=colormap, show_unbacked=show_unbacked),
    )


def _results_table(table: pd.DataFrame) -> None:
    st.subheader("Results")
    st.dataframe(
        table,
        hide_index=True,
        key="results_table",
        column_config={
            "probability": st.column_config.ProgressColumn(
                "probability", min_value=0.0, max_value=1.0, format="%.3f"
            ),
            "tta_mean": st.column_config.NumberColumn("TTA mean", format="%.3f"),
            "tta_std": st.column_config.NumberColumn("TTA spread (sd)", format="%.3f"),
            "label_from_name": st.column_config.TextColumn(
                "class in file name", help="The BreakHis ground truth the file name states"
            ),
            "probability_basis": st.column_config.TextColumn(
                "probability is",
                help="calibrated on validation data, uncalibrated, or not "
                "meaningful (the model is not shown to be better than chance)",
            ),
            "applicability": st.column_config.TextColumn(
                "like training images?",
                help="typical, unusual or unlike the training "
                "images (a distance in the network's own feature space)",
            ),
            "applicability_score": st.column_config.NumberColumn(
                "distance", format="%.2f", help="about 1 is typical of the training images"
            ),
            "warnings": st.column_config.TextColumn("warnings", width="large"),
            "error": st.column_config.TextColumn("error", width="medium"),
            uploads.DUPLICATE_COLUMN: st.column_config.TextColumn(
                "duplicate of",
                help="the same content as this earlier file: counted once, there",
            ),
        },
    )
    st.download_button(
        "Download results (CSV)",
        data=results.results_csv(table),
        file_name="breakhis_results.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="download_csv",
    )


def _cases(table: pd.DataFrame, threshold: float, labels: Mapping[int, str]) -> None:
    table = uploads.counted(table)  # a duplicate upload is the same image: counted once
    cases = results.aggregate_cases(table, threshold, labels)
    st.subheader("Cases")
    if cases.empty:
        st.caption(
            "No case to summarise: images are grouped by the patient id in BreakHis file "
            "names, or by a case id you type above."
        )
        return
    st.dataframe(
        cases,
        hide_index=True,
        key="cases_table",
        column_config={
            "mean_probability": st.column_config.ProgressColumn(
                "mean probability", min_value=0.0, max_value=1.0, format="%.3f"
            ),
            "min_probability": st.column_config.NumberColumn("min", format="%.3f"),
            "max_probability": st.column_config.NumberColumn("max", format="%.3f"),
            "malignant_images": "images at/above threshold",
        },
    )
    counted_once = uploads.counted(table)  # a repeated upload is not a second image
    left_out = int(((counted_once["error"] == "") & (counted_once["case"] == "")).sum())
    note = (
        f"Case label: mean probability of the labelled images at or above the threshold "
        f'{threshold:.3g}; "{WITHHELD_LABEL}" when no image of the case has a label.'
    )
    if left_out:
        are = plural(left_out, "is", "are", with_count=False)
        note += (
            f" {plural(left_out, 'image')} without a case id {are} not included: type a case "
            "id above or per image."
        )
    st.caption(note)


def _details(
    uploads: Mapping[str, UploadedFile],
    analysed: Sequence[ImageResult],
    magnifications: Mapping[str, str],
    view: _View,
    duplicates: Mapping[str, Duplicate],
) -> None:
    """The results one page of details at a time (``uploads`` by file id); a duplicate
    upload points to the earlier one instead of drawing the same result again."""
    st.subheader("Images")
    count = len(analysed)
    pages = (count + DETAILS_PER_PAGE - 1) // DETAILS_PER_PAGE
    first = 0
    if pages > 1:
        if st.session_state.get("details_page", 0) >= pages:  # fewer images than before
            st.session_state["details_page"] = pages - 1
        page = st.selectbox(
            "Show",
            range(pages),
            format_func=lambda p: (
                f"images {p * DETAILS_PER_PAGE + 1}-"
                f"{min((p + 1) * DETAILS_PER_PAGE, count)} of {count}"
            ),
            key="details_page",
        )
        first = page * DETAILS_PER_PAGE
    positions = {result.file_id: position for position, result in enumerate(analysed)}
    for position in range(first, min(first + DETAILS_PER_PAGE, count)):
        result = analysed[position]
        if (duplicate := duplicates.get(result.file_id)) is not None:
            _duplicate_detail(position, result, duplicate, positions[duplicate.first_id])
            continue
        _image_detail(
            position,
            uploads[result.file_id],
            result,
            results.magnification_of(result, magnifications.get(result.file_id)),
            view,
        )


def _duplicate_detail(
    position: int, result: ImageResult, duplicate: Duplicate, first_position: int
) -> None:
    """A file with the same content as an earlier upload: said, and counted there."""
    with st.container(border=True, key=f"result-{position}"):
        st.markdown(f"**{position + 1}. {_escape_markdown(result.file_name)}**")
        st.info(
            f"Duplicate of {first_position + 1}. {_escape_markdown(duplicate.first_name)}: "
            "the same content, so it is counted once and its result is shown there.",
            icon=":material/content_copy:",
        )


def _details_range(count: int) -> tuple[int, int]:
    """The positions of the details on screen: the page chosen in :func:`_details` (read
    before it is drawn, so the maps are computed first)."""
    pages = max(1, (count + DETAILS_PER_PAGE - 1) // DETAILS_PER_PAGE)
    page = min(int(st.session_state.get("details_page", 0) or 0), pages - 1)
    return page * DETAILS_PER_PAGE, min((page + 1) * DETAILS_PER_PAGE, count)


def _image_detail(
    position: int,
    upload: UploadedFile,
    result: ImageResult,
    magnification: str,
    view: _View,
) -> None:
    """One image (``position`` in upload order, for its number): gauge, number, label (or
    why there is none), magnification (as the results table shows it), case, warnings;
    original, heatmap and overlay side by side, drawn from the upload decoded once here;
    PNG download of the overlay."""
    settings, display = view.settings, view.display
    positive = view.labels.get(1, "malignant")
    with st.container(border=True, key=f"result-{position}"):
        st.markdown(f"**{position + 1}. {_escape_markdown(result.file_name)}**")
        if result.name_info is not None:
            st.caption(f"File name says: {result.name_info.describe()}")
        analysis = result.analysis
        if analysis is None:
            st.error(f"Not classified: {result.error}", icon=":material/broken_image:")
            return
        shown = view.probabilities_meaningful or display.show_unbacked

        chart, facts = st.columns([2, 3], gap="medium")
        with chart:
            if shown:
                st.plotly_chart(
                    components.probability_gauge(
                        analysis.probability, analysis.threshold, analysis.label, positive
                    ),
                    key=f"gauge-{upload.file_id}",
                    config={"displayModeBar": False, "staticPlot": True},
                )
            else:
                st.info(
                    "Probability not meaningful: this model is not shown to be better than "
                    "chance (see the evidence note above).",
                    icon=":material/block:",
                )
        with facts:
            probability_column, label_column = st.columns(2)
            probability_column.metric(
                f"Probability ({positive})",
                results.format_probability(analysis.probability)
                if shown
                else results.NOT_MEANINGFUL,
                help=None
                if view.probabilities_meaningful
                else "not meaningful: shown only in the research view",
            )
            with label_column:
                st.markdown("**Label**")
                if analysis.label is None:
                    st.badge(WITHHELD_LABEL, color="gray", icon=":material/block:")
                else:
                    colour = "red" if analysis.label == positive else "blue"
                    st.badge(analysis.label, color=colour)
            if analysis.applicability is not None:
                st.caption(
                    f"Like the training images? **{analysis.applicability}** (distance "
                    f"{analysis.applicability_score:.2f}; about 1 is typical)"
                )
            if analysis.tta is not None and shown:
                tta = analysis.tta
                st.markdown(
                    f"Test-time augmentation ({len(tta.views)} views): mean "
                    f"**{float(tta.mean[0]):.3f}** ± {float(tta.std[0]):.3f} "
                    f"(range {float(tta.probabilities.min()):.3f}-"
                    f"{float(tta.probabilities.max()):.3f})"
                )
            _magnification_and_case(result, magnification, view.default_case)
            for warning in results.result_warnings(result, view.untrained, view.trust):
                if warning == results.UNTRAINED_WARNING or warning.startswith("WEAK MODEL"):
                    st.error(f"**{warning[0].upper()}{warning[1:]}**", icon=":material/warning:")
                elif warning == analysis.empty_map_message:
                    continue  # said where the map would be
                elif result.display is not None and warning == result.display.note:
                    continue  # said under the image
                elif analysis.seen is not None and warning.startswith("stain normalisation"):
                    continue  # said beside what the network saw
                else:
                    st.warning(warning, icon=":material/warning:")
            explained = (
                "the evidence of the model's own decision (which is not shown)"
                if analysis.label is None and settings.target == "predicted"
                else f"{analysis.target} evidence"
            )
            st.caption(
                f"Map: {CAM_METHODS[settings.method]} on {settings.layer}, showing "
                f"{explained}. Analysed in {result.seconds * 1000:.0f} ms."
            )

        _images(upload, result, analysis, display)


def _images(
    upload: UploadedFile, result: ImageResult, analysis: ImageAnalysis, display: DisplaySettings
) -> None:
    """Original, heatmap and overlay, all drawn on the result's display copy (at most
    1400 px on its long side, said when smaller than the upload); the overlay's PNG
    download. An empty map is said, not drawn."""
    assert result.display is not None  # every classified result has its display copy
    pixels = result.display.pixels
    if analysis.seen is not None:
        _network_view(analysis)
    original, heatmap, overlay = st.columns(3)
    original.image(pixels, caption="original", output_format="JPEG")
    if result.display.downscaled:  # the overlay and its download are at this size too
        original.caption(f"{result.display.note[0].upper()}{result.display.note[1:]}.")
    if analysis.cam is None:
        with heatmap:
            st.info("No map: it could not be computed for this image.", icon=":material/blur_off:")
        return
    if analysis.empty_map:
        with heatmap:
            st.info(analysis.empty_map_message, icon=":material/blur_off:")
        return
    heatmap.image(
        analysis.heatmap_rgb(pixels.shape[:2], display.colormap),
        caption="heatmap",
        output_format="JPEG",
    )
    overlay.image(
        analysis.overlay(pixels, display.opacity, display.colormap),
        caption=f"overlay (opacity {display.opacity:.2f})",
        output_format="JPEG",
    )
    overlay.download_button(
        "Download overlay (PNG)",
        # Deferred: the PNG is only encoded when someone clicks.
        data=lambda: results.overlay_png(analysis, pixels, display.opacity, display.colormap),
        file_name=results.download_name(result.file_name, "overlay"),
        mime="image/png",
        icon=":material/download:",
        on_click="ignore",
        key=f"download-{upload.file_id}",
    )


def _network_view(analysis: ImageAnalysis) -> None:
    """What the network saw beside the stain-normalised model's input: the normalised image
    at the network's size, or why normalisation was skipped for this image."""
    name = STAIN_METHODS.get(analysis.stain_norm, analysis.stain_norm)
    seen, note = st.columns([1, 2])
    if analysis.stain_applied:
        seen.image(
            analysis.seen,
            caption=f"what the network saw: {name}-normalised, "
            f"{analysis.seen.shape[1]}x{analysis.seen.shape[0]} px",
            output_format="PNG",
        )
        note.caption(
            f"This model maps every image's stain colours onto its training reference "
            f"({name}; see the model card) before classifying it."
        )
    else:
        seen.image(
            analysis.seen,
            caption=f"what the network saw: not normalised, "
            f"{analysis.seen.shape[1]}x{analysis.seen.shape[0]} px",
            output_format="PNG",
        )
        skipped = next((n for n in analysis.notes if n.startswith("stain normalisation")), None)
        note.warning(
            f"{skipped or f'{name} stain normalisation skipped'}: this image was classified "
            "with its own colours, unlike the normalised training images.",
            icon=":material/palette:",
        )


def _magnification_and_case(result: ImageResult, magnification: str, default_case: str) -> None:
    """The per-image choices, stored by the result's file id."""
    file_id = result.file_id
    magnification_column, case_column = st.columns(2)
    magnification_key, case_key = f"magnification-{file_id}", f"case-{file_id}"
    magnification_column.selectbox(
        "Magnification",
        results.MAGNIFICATION_CHOICES,
        index=results.MAGNIFICATION_CHOICES.index(magnification),
        key=magnification_key,
        on_change=state.remember_choice,
        args=(state.MAGNIFICATION_CHOICES, file_id, magnification_key),
        help="Read from a BreakHis file name when possible; choose it otherwise.",
    )
    automatic = results.case_of(result, None, default_case)
    case_column.text_input(
        "Case id",
        value=state.per_image_choices(state.CASE_CHOICES).get(file_id, ""),
        placeholder=automatic or "none",
        key=case_key,
        on_change=state.remember_choice,
        args=(state.CASE_CHOICES, file_id, case_key),
        help="Leave empty to use the patient id from the file name or the case id above.",
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def _escape_markdown(text: str) -> str:
    """A file name shown literally, not as Markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
