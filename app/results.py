"""The outcome of each uploaded image, and the tables, CSV and cases made from them.

Plain Python (NumPy, pandas, Pillow), no Streamlit and no TensorFlow: the network's part comes
from an :class:`~model.analysis.Analyzer` passed in. An :class:`ImageResult` holds the model
core's pixel-free :class:`~model.analysis.ImageAnalysis`; overlays are drawn from the decoded
image the caller holds. The user's per-image choices (magnification, case id) are keyed by
the upload's file id everywhere, never by a position in a table.

Example:
    >>> bad = analyze_upload(None, b"", AnalysisSettings(), file_id="f1", file_name="x.png")
    >>> bad.ok, bad.error
    (False, 'empty file: it contains no bytes')
    >>> results_table([bad])[["file", "magnification", "error"]].values.tolist()
    [['x.png', 'unknown', 'empty file: it contains no bytes']]
"""

from __future__ import annotations

import io
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.model_loading import without_server_paths
from model.applicability import VERDICT_TEXT
from model.breakhis import BreakHisName, read_breakhis_filename
from model.config import COARSE_LAYER, CamMethod, Target
from model.display import DISPLAY_MAX_SIDE, DisplayImage, display_copy
from model.errors import ImageError
from model.preprocessing import decode_image
from model.tables import (
    MAGNIFICATIONS,
    UNKNOWN_MAGNIFICATION,
    case_id,
    magnification_label,
    probability_basis,
    spreadsheet_safe,
)
from model.tables import NOT_MEANINGFUL as NOT_MEANINGFUL  # re-exported: the pages use these
from model.tables import aggregate_cases as aggregate_cases
from model.trust import WITHHELD_LABEL, ModelTrust

if TYPE_CHECKING:  # importing these at run time would import TensorFlow
    from model.analysis import Analyzer, ImageAnalysis, PreparedImage

UNTRAINED_WARNING = "untrained model: meaningless output"
MAGNIFICATION_CHOICES = (UNKNOWN_MAGNIFICATION, *MAGNIFICATIONS)


@dataclass(frozen=True)
class AnalysisSettings:
    """What the network computes per image (changing these re-runs the network; the overlay's
    opacity and colormap do not)."""

    method: CamMethod = "gradcam"
    layer: str = COARSE_LAYER
    target: Target = "predicted"
    tta: bool = False


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one uploaded file: the model's analysis, or why there is none.

    Attributes:
        file_id: the upload's id (Streamlit's ``UploadedFile.file_id``): what per-image
            choices and widgets are keyed by.
        file_name: the name the file was uploaded with.
        name_info: what a BreakHis file name says (None for other names).
        error: why the file was not classified (None when it was).
        quality: warnings for an image that does not look like H&E microscopy, or like
            the model's training images (from the model core's checks).
        seconds: decode + checks + network, for this image.
        analysis: the model core's result (probability, label, map...); it holds no pixels,
            so a session with hundreds of images keeps only their small maps.
        display: the copy of the image the page draws (at most
            :data:`~model.display.DISPLAY_MAX_SIDE` on its long side; the results of one
            upload share it), when the result was made by :func:`classify_uploads`.

    Example:
        >>> result = ImageResult("f1", "scan.png", None, error="not an image")
        >>> result.ok
        False
    """

    file_id: str
    file_name: str
    name_info: BreakHisName | None
    error: str | None = None
    quality: tuple[str, ...] = ()
    seconds: float = 0.0
    analysis: ImageAnalysis | None = None
    display: DisplayImage | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.analysis is None) == (self.error is None):
            raise ValueError("an ImageResult holds either an analysis or an error")

    @property
    def ok(self) -> bool:
        """True when the file was classified (``analysis`` is there)."""
        return self.analysis is not None


def analyze_upload(
    analyzer: Analyzer,
    data: bytes,
    settings: AnalysisSettings,
    *,
    file_id: str,
    file_name: str,
) -> ImageResult:
    """Decode, check and analyse one uploaded file. Never raises for a bad file: the error
    goes into the result, so the other files of a batch still classify.

    Example (a file that does not decode never reaches the analyzer):
        >>> result = analyze_upload(
        ...     None, b"GIF89a...", AnalysisSettings(), file_id="f1", file_name="a.gif")
        >>> result.error.split(":")[0]
        'not an image'
    """
    started = time.perf_counter()
    name_info = read_breakhis_filename(file_name)
    try:
        decoded = decode_image(data)
    except ImageError as error:
        return ImageResult(file_id, file_name, name_info, error=str(error))
    try:
        analysis = analyzer.analyze(
            decoded,
            method=settings.method,
            layer=settings.layer,
            target=settings.target,
            tta=settings.tta,
        )
    except ImageError as error:
        return ImageResult(file_id, file_name, name_info, error=str(error))
    except Exception as error:  # one unexpected failure must not stop the batch
        return ImageResult(file_id, file_name, name_info, error=_unexpected(error))
    return ImageResult(
        file_id,
        file_name,
        name_info,
        quality=tuple(analysis.quality_warnings),
        seconds=time.perf_counter() - started,
        analysis=analysis,
    )


@dataclass(frozen=True, eq=False)
class PreparedUpload:
    """One upload decoded once and reduced to what a session still needs: the display copy,
    the network input with the pixel checks, never the full-size decoded image.

    Attributes:
        file_id, file_name, name_info: as in :class:`ImageResult`.
        error: why the file cannot be classified (None when it can).
        display: the copy the page draws (:func:`model.display.display_copy`).
        prepared: the network input and pixel checks (:meth:`Analyzer.prepare`); its
            ``image`` holds the display copy, not the upload at full size.
        seconds: decoding and preparing, for this file.
    """

    file_id: str
    file_name: str
    name_info: BreakHisName | None
    error: str | None = None
    display: DisplayImage | None = None
    prepared: PreparedImage | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the file decoded and can be classified."""
        return self.prepared is not None

    def failed(self, error: str) -> ImageResult:
        """The result of this file when it could not be classified."""
        return ImageResult(self.file_id, self.file_name, self.name_info, error=error)


def prepare_upload(
    analyzer: Analyzer,
    data: bytes,
    *,
    file_id: str,
    file_name: str,
    max_side: int = DISPLAY_MAX_SIDE,
) -> PreparedUpload:
    """Decode one upload (a large one straight at a smaller size, see
    :func:`~model.preprocessing.decode_image`'s ``reduce_to``), run the pixel checks, make the
    network input and a display copy, and keep only those. Never raises for a bad file.

    Example (a file that does not decode never reaches the analyzer):
        >>> prepare_upload(None, b"", file_id="f1", file_name="x.png").error
        'empty file: it contains no bytes'
    """
    started = time.perf_counter()
    name_info = read_breakhis_filename(file_name)
    try:
        decoded = decode_image(data, reduce_to=max_side)
        prepared = analyzer.prepare(decoded)
    except ImageError as error:
        return PreparedUpload(file_id, file_name, name_info, error=str(error))
    except Exception as error:  # one unexpected failure must not stop the batch
        return PreparedUpload(file_id, file_name, name_info, error=_unexpected(error))
    display = display_copy(decoded.pixels, decoded.full_size, max_side)
    # The analysis reads only the decoded image's notes; the display copy takes the place of
    # the pixels so that nothing the session keeps refers to the large array.
    prepared = replace(prepared, image=replace(decoded, pixels=display.pixels))
    del decoded
    upload = PreparedUpload(
        file_id,
        file_name,
        name_info,
        display=display,
        prepared=prepared,
        seconds=time.perf_counter() - started,
    )
    _LIVE_UPLOADS.add(upload)
    return upload


_LIVE_UPLOADS: weakref.WeakSet[PreparedUpload] = weakref.WeakSet()


def prepared_uploads_in_memory() -> int:
    """How many prepared uploads (display copies) this process still holds, in any session:
    what ``GET /api/sessions`` reports to show that closed sessions' images are gone."""
    return len(_LIVE_UPLOADS)


ProgressCallback = Callable[[int, int], None]
"""Called with (done, total) as a long step proceeds (the page draws a progress bar)."""


def classify_uploads(
    analyzer: Analyzer,
    uploads: Sequence[PreparedUpload],
    *,
    tta: bool = False,
    on_progress: ProgressCallback | None = None,
    batch_size: int = 16,
) -> list[ImageResult]:
    """Probability, label and checks (and test-time augmentation when ``tta``) for prepared
    uploads, ``batch_size`` images per network call, without maps (:func:`explain_results`
    adds them for the results on screen). One result per upload, in order; a file that could
    not be read, or a batch the network fails on, gives error results, never an exception.
    """
    results: dict[int, ImageResult] = {
        index: upload.failed(upload.error or "not prepared")
        for index, upload in enumerate(uploads)
        if not upload.ok
    }
    ready = [index for index, upload in enumerate(uploads) if upload.ok]
    done = 0
    for start in range(0, len(ready), max(1, batch_size)):
        batch = ready[start : start + batch_size]
        began = time.perf_counter()
        try:
            analyses = analyzer.analyze_many(
                [uploads[index].prepared for index in batch], tta=tta, explain=False
            )
        except Exception as error:  # e.g. out of memory: these files fail, the page stays
            for index in batch:
                results[index] = uploads[index].failed(_unexpected(error))
        else:
            share = (time.perf_counter() - began) / len(batch)
            for index, analysis in zip(batch, analyses, strict=True):
                upload = uploads[index]
                results[index] = ImageResult(
                    upload.file_id,
                    upload.file_name,
                    upload.name_info,
                    quality=tuple(analysis.quality_warnings),
                    seconds=upload.seconds + share,
                    analysis=analysis,
                    display=upload.display,
                )
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(ready))
    return [results[index] for index in range(len(uploads))]


def add_tta(
    analyzer: Analyzer,
    uploads: Sequence[PreparedUpload],
    plain: Sequence[ImageResult],
    *,
    on_progress: ProgressCallback | None = None,
    batch_size: int = 16,
) -> list[ImageResult]:
    """``plain`` (the :func:`classify_uploads` results of ``uploads`` without test-time
    augmentation) with it: only the flipped views run, so turning TTA on for a batch that is
    already classified costs three network passes per image, not a fresh analysis. A result
    without an analysis stays as it is; a batch the network fails on gets error results.
    """
    if len(uploads) != len(plain):
        raise ValueError(f"{len(uploads)} uploads but {len(plain)} results")
    results = list(plain)
    ready = [i for i, result in enumerate(plain) if result.analysis is not None and uploads[i].ok]
    for start in range(0, len(ready), max(1, batch_size)):
        batch = ready[start : start + batch_size]
        try:
            analyses = analyzer.with_tta(
                [uploads[i].prepared for i in batch], [plain[i].analysis for i in batch]
            )
        except Exception as error:  # e.g. out of memory: these files fail, the page stays
            for index in batch:
                results[index] = uploads[index].failed(_unexpected(error))
        else:
            for index, analysis in zip(batch, analyses, strict=True):
                results[index] = replace(plain[index], analysis=analysis)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(ready)), len(ready))
    return results


def explain_results(
    analyzer: Analyzer,
    uploads: Sequence[PreparedUpload],
    settings: AnalysisSettings,
) -> list[ImageAnalysis]:
    """The maps (method, layer, target of ``settings``) of prepared uploads, in one network
    call (the traced single-pass path of :class:`~model.explainer.Explainer`): for the few
    results on screen. Raises for uploads that are not ``ok``."""
    if not all(upload.ok for upload in uploads):
        raise ValueError("only uploads that were prepared have maps")
    return analyzer.analyze_many(
        [upload.prepared for upload in uploads],
        method=settings.method,
        layer=settings.layer,
        target=settings.target,
        explain=True,
    )


def with_map(result: ImageResult, mapped: ImageAnalysis) -> ImageResult:
    """``result`` with the map of ``mapped`` (:func:`explain_results` of the same image);
    the probability, label and TTA stay those of ``result``.

    Example:
        >>> result = ImageResult("f1", "a.png", None, error="unreadable")
        >>> with_map(result, None) is result   # nothing to add a map to
        True
    """
    if result.analysis is None:
        return result
    analysis = replace(
        result.analysis,
        cam=mapped.cam,
        method=mapped.method,
        layer=mapped.layer,
        target=mapped.target,
        empty_map=mapped.empty_map,
    )
    return replace(result, analysis=analysis)


def _unexpected(error: Exception) -> str:
    # A network error can quote a server file (a traced graph's source, a temporary folder):
    # the visitor reads this in the table and the CSV, and the server's paths are not theirs.
    return without_server_paths(f"could not analyse this image ({type(error).__name__}: {error})")


def format_probability(probability: float) -> str:
    """A probability as a percentage that never rounds to a misleading 0 % or 100 %.

    Example:
        >>> format_probability(0.0004), format_probability(0.4567), format_probability(0.9996)
        ('<0.1%', '45.7%', '>99.9%')
    """
    if probability < 0.001:
        return "<0.1%"
    if probability > 0.999:
        return ">99.9%"
    return f"{probability:.1%}"


def magnification_of(result: ImageResult, chosen: str | None = None) -> str:
    """The user's choice when made, else what the BreakHis name says, else "unknown".

    Example:
        >>> name = "SOB_M_DC-14-2523-100-011.png"
        >>> result = ImageResult("f1", name, read_breakhis_filename(name), error="x")
        >>> magnification_of(result), magnification_of(result, chosen="200X")
        ('100X', '200X')
    """
    return magnification_label(chosen, result.name_info)


def case_of(result: ImageResult, typed: str | None = None, default_case: str = "") -> str:
    """The case id typed for this image, else the BreakHis patient id, else the default.

    Example:
        >>> name = "SOB_M_DC-14-2523-100-011.png"
        >>> breakhis = ImageResult("f1", name, read_breakhis_filename(name), error="x")
        >>> other = ImageResult("f2", "scan.png", None, error="x")
        >>> case_of(breakhis), case_of(breakhis, " A "), case_of(other, None, "CASE-7")
        ('14-2523', 'A', 'CASE-7')
    """
    return case_id(typed, result.name_info, default_case)


def result_warnings(
    result: ImageResult, untrained: bool, trust: ModelTrust | None = None
) -> list[str]:
    """Everything a reader must know about one result, most important first (for a file
    that could not be used, why): the model's evidence level, why no label is shown, how
    the image compares with the training images, an empty map, then the pixel checks.

    Example:
        >>> result_warnings(ImageResult("f1", "a.png", None, error="empty file"), True)
        ['not classified: empty file']
    """
    analysis = result.analysis
    if analysis is None:
        return [f"not classified: {result.error}"]
    warnings = [UNTRAINED_WARNING] if untrained else []
    if trust is not None and trust.level == "weak":
        warnings.append(f"WEAK MODEL: {trust.reason}; do not rely on this result")
    warnings += [f"no label: {reason}" for reason in analysis.withheld]
    if analysis.applicability == "unusual":  # "unlike" is already a reason for no label
        warnings.append(f"image {VERDICT_TEXT['unusual']}")
    if analysis.empty_map_message:
        warnings.append(analysis.empty_map_message)
    warnings += list(result.quality)
    warnings += list(analysis.notes)
    if result.display is not None and result.display.note:
        warnings.append(result.display.note)  # the table and CSV say it, as the image does
    if analysis.tta is not None and analysis.threshold:
        mean = float(analysis.tta.mean[0])
        if (mean >= analysis.threshold) != (analysis.probability >= analysis.threshold):
            warnings.append(
                f"unstable: the flipped/rotated views average {mean:.2f}, on the other side "
                f"of the threshold {analysis.threshold:.2f}"
            )
    return warnings


RESULT_COLUMNS = (
    "file",
    "magnification",
    "case",
    "probability",
    "label",
    "probability_basis",
    "applicability",
    "applicability_score",
    "tta_mean",
    "tta_std",
    "warnings",
    "label_from_name",
    "error",
)


def results_table(
    results: Sequence[ImageResult],
    magnifications: Mapping[str, str] | None = None,
    cases: Mapping[str, str] | None = None,
    *,
    untrained: bool = False,
    default_case: str = "",
    trust: ModelTrust | None = None,
    show_unbacked: bool = False,
) -> pd.DataFrame:
    """One row per uploaded file (in upload order), bad files included: their reason is in
    ``error`` and, for people reading the table, also in ``warnings``.

    ``magnifications`` and ``cases`` hold the user's per-image choices by file id. ``label``
    is ``"not shown"`` where the evidence does not support one (:mod:`model.trust`);
    ``probability_basis`` says whether the probability is calibrated, and for a model not
    shown to be better than chance it is ``"not meaningful"`` and the probability is left
    empty unless ``show_unbacked`` (the research view). ``applicability`` is how the image
    compares with the training images (typical / unusual / unlike).
    ``tta_mean``/``tta_std`` are empty unless test-time augmentation ran; ``label_from_name``
    is the class a BreakHis file name states (the dataset's ground truth).

    Example:
        >>> name = "SOB_M_DC-14-2523-40-010.png"
        >>> results = [ImageResult("f1", name, read_breakhis_filename(name), error="x"),
        ...            ImageResult("f2", "scan.png", None, error="y")]
        >>> table = results_table(results, {"f2": "200X"}, {"f2": "CASE-7"})
        >>> table[["magnification", "case", "label_from_name"]].values.tolist()
        [['40X', '14-2523', 'malignant'], ['200X', 'CASE-7', '']]
    """
    magnifications = magnifications or {}
    cases = cases or {}
    rows: list[dict[str, Any]] = []
    meaningful = trust is None or trust.shows_labels
    for result in results:
        analysis = result.analysis
        tta = analysis.tta if analysis is not None else None
        hidden = analysis is None or not (meaningful or show_unbacked)
        basis = ""
        if analysis is not None:
            basis = probability_basis(analysis.calibrated, meaningful)
        rows.append(
            {
                "file": result.file_name,
                "magnification": magnification_of(result, magnifications.get(result.file_id)),
                "case": case_of(result, cases.get(result.file_id), default_case),
                "probability": math.nan if hidden else analysis.probability,
                "label": "" if analysis is None else (analysis.label or WITHHELD_LABEL),
                "probability_basis": basis,
                "applicability": (analysis.applicability or "") if analysis else "",
                "applicability_score": (
                    analysis.applicability_score
                    if analysis is not None and analysis.applicability_score is not None
                    else math.nan
                ),
                "tta_mean": float(tta.mean[0]) if tta is not None and not hidden else math.nan,
                "tta_std": float(tta.std[0]) if tta is not None and not hidden else math.nan,
                "label_from_name": result.name_info.class_name if result.name_info else "",
                "warnings": "; ".join(result_warnings(result, untrained, trust)),
                "error": result.error or "",
            }
        )
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return table.astype(
        {"probability": float, "applicability_score": float, "tta_mean": float, "tta_std": float}
    )


def results_csv(table: pd.DataFrame) -> bytes:
    """The results table as UTF-8 CSV, probabilities with 4 decimals.

    Text cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` at the
    start, e.g. in a crafted file name) get a leading apostrophe.

    Example:
        >>> table = pd.DataFrame({"file": ["=SUM(A1).png"], "probability": [0.123456]})
        >>> results_csv(table).decode().splitlines()
        ['file,probability', "'=SUM(A1).png,0.1235"]
    """
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(spreadsheet_safe)
    return safe.to_csv(index=False, float_format="%.4f").encode("utf-8")


def overlay_png(
    analysis: ImageAnalysis, pixels: np.ndarray, opacity: float, colormap: str
) -> bytes:
    """The map blended over ``pixels`` (in the app the display copy, at its size) as PNG
    bytes, made in memory, never on disk."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(analysis.overlay(pixels, opacity, colormap)).save(buffer, format="PNG")
    return buffer.getvalue()


def download_name(file_name: str, suffix: str) -> str:
    """The name of a file derived from an upload, as PNG.

    Example:
        >>> download_name("a/SOB_M_DC-14-2523-40-010.png", "overlay")
        'SOB_M_DC-14-2523-40-010_overlay.png'
    """
    stem = Path(file_name.replace("\\", "/")).stem or "image"
    return f"{stem}_{suffix}.png"
