"""The app's logic without Streamlit: which model, loading it once, analysing uploads, tables.

Everything here is plain Python, tested without Streamlit. All TensorFlow work goes through
``model/``, and :mod:`model.analysis` (which imports TensorFlow, ~5 s) is imported only inside
the background loader, so the page is interactive before TensorFlow is ready.

Which model (first match wins):

1. ``--model PATH`` after ``--`` on the command line
   (``streamlit run app/main.py -- --model runs/quick``),
2. the ``BCD_MODEL`` environment variable,
3. the newest run folder under ``runs/`` (``BCD_RUNS_DIR`` overrides where) that
   ``python -m train.run`` wrote, i.e. one holding ``model/model_card.json``,
4. otherwise none: the app shows how to get one, and accepts an artifact ``.zip`` upload.

Example:
    >>> source = resolve_model_source(argv=["--model", "runs/quick"], environ={})
    >>> source.origin, source.path.name
    ('command line', 'quick')
"""

from __future__ import annotations

import argparse
import io
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from app.process import prefer_lean_tensorflow, release_freed_memory
from model.artifact import CARD_FILE, MODEL_FILE, read_card, read_card_from_zip
from model.breakhis import MAGNIFICATIONS as MAGNIFICATION_POWERS
from model.breakhis import BreakHisName, read_breakhis_filename
from model.card import ModelCard
from model.config import COARSE_LAYER, label_of
from model.errors import (
    ArtifactError,
    ImageError,
)
from model.preprocessing import DecodedImage, decode_image
from model.quality import quality_warnings

if TYPE_CHECKING:  # importing these at run time would import TensorFlow
    from model.analysis import Analyzer, ImageAnalysis
    from model.predictor import TTAResult

ENV_MODEL = "BCD_MODEL"
ENV_RUNS_DIR = "BCD_RUNS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"

UNTRAINED_WARNING = "untrained model: meaningless output"
UNKNOWN_MAGNIFICATION = "unknown"
MAGNIFICATIONS = tuple(f"{power}X" for power in MAGNIFICATION_POWERS)  # "40X"... as BreakHis
MAGNIFICATION_CHOICES = (UNKNOWN_MAGNIFICATION, *MAGNIFICATIONS)


# --- which model --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from.

    Attributes:
        path: an artifact folder, a run folder (holding ``model/``) or an artifact ``.zip``.
        origin: ``"command line"``, ``"environment"`` or ``"newest run"``.
        detail: how the user would recognise it (``"BCD_MODEL=/models/a.zip"``).
    """

    path: Path
    origin: Literal["command line", "environment", "newest run"]
    detail: str


def model_argument(argv: Sequence[str]) -> str | None:
    """The ``--model PATH`` given after ``--`` to ``streamlit run``, if any.

    Other arguments are ignored (under pytest ``sys.argv`` holds pytest's own).

    Raises:
        ValueError: ``--model`` without a path (argparse would exit the server instead).

    Example:
        >>> model_argument(["--model", "runs/quick"]), model_argument(["--model=runs/a"])
        ('runs/quick', 'runs/a')
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--model", default=None)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ValueError(
            "--model needs a path: `streamlit run app/main.py -- --model runs/<name>`"
        ) from error
    return known.model or None


def runs_directory(environ: Mapping[str, str] | None = None) -> Path:
    """``BCD_RUNS_DIR`` when set, else ``runs/`` under the repository root."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV_RUNS_DIR, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_RUNS_DIR


def find_newest_run(runs_dir: Path) -> Path | None:
    """The run folder under ``runs_dir`` whose model card was written last, or None.

    A run folder is one that ``python -m train.run`` completed: it holds ``model/`` with a
    model card. Half-written runs (no card yet) are skipped.
    """
    try:
        candidates = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError:  # unreadable: as if there were no runs (the app then offers onboarding)
        return None
    newest: tuple[int, str, Path] | None = None
    for candidate in candidates:
        card = candidate / "model" / CARD_FILE
        try:
            if not candidate.is_dir() or candidate.name.startswith(".") or not card.is_file():
                continue
            key = (card.stat().st_mtime_ns, candidate.name, candidate)
        except OSError:  # removed while we looked
            continue
        if newest is None or key[:2] > newest[:2]:
            newest = key
    return None if newest is None else newest[2]


def resolve_model_source(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    runs_dir: Path | None = None,
) -> ModelSource | None:
    """Pick the model as the module docstring lists; None when there is none."""
    environ = os.environ if environ is None else environ
    argv = [] if argv is None else argv
    if (argument := model_argument(argv)) is not None:
        return ModelSource(Path(argument).expanduser(), "command line", f"--model {argument}")
    if configured := environ.get(ENV_MODEL, "").strip():
        detail = f"{ENV_MODEL}={configured}"
        return ModelSource(Path(configured).expanduser(), "environment", detail)
    runs_dir = runs_directory(environ) if runs_dir is None else runs_dir
    if (run := find_newest_run(runs_dir)) is not None:
        return ModelSource(run, "newest run", f"newest run in {runs_dir}: {run.name}")
    return None


def artifact_fingerprint(path: Path) -> str:
    """Changes when the artifact's files change (so a re-trained model is reloaded)."""
    files = [path]
    if path.is_dir():
        folder = path / "model" if (path / "model" / CARD_FILE).exists() else path
        files = [folder / CARD_FILE, folder / MODEL_FILE]
    parts = []
    for file in files:
        try:
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{file.name}:missing")
    return "|".join(parts)


# --- loading, once, in the background -----------------------------------------------------
Loader = Callable[[dict[str, float]], "Analyzer"]
"""Builds an analyzer; records the seconds of each stage in the dict it is given."""


class ModelHandle:
    """A model that loads in a background thread, once, then serves every session.

    Loading a ResNet-50 artifact on a 2-core CPU takes ~10 s (TensorFlow import ~5 s, Keras
    deserialisation ~3 s, graph tracing ~3 s). Starting it in a thread lets the page render
    at once; the first analysis waits for it (:meth:`wait`). The loaded
    :class:`~model.analysis.Analyzer` is thread-safe and shared.

    Args:
        label: how the UI names the model's origin.
        load: builds the analyzer (runs in the thread; its exception is kept and re-raised
            by :meth:`wait`).
        preview: the card read cheaply beforehand, shown while loading.
    """

    def __init__(self, label: str, load: Loader, preview: ModelCard | None = None) -> None:
        self.label = label
        self.preview = preview
        self.key = uuid.uuid4().hex  # tells this model's cached results from another's
        self.started: float | None = None
        self.load_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds per loading stage
        self._load: Loader | None = load
        self._analyzer: Analyzer | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bcd-model-loader", daemon=False)

    def start(self) -> ModelHandle:
        """Start loading (once); returns self."""
        if self.started is None and not self._done.is_set():
            self.started = time.monotonic()
            self._thread.start()
        return self

    @classmethod
    def failed_with(cls, label: str, error: BaseException) -> ModelHandle:
        """A handle that failed before loading began (e.g. the card is unreadable)."""
        handle = cls(label, load=_never)
        handle._error, handle._load = error, None
        handle._done.set()
        return handle

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            assert self._load is not None
            self._analyzer = self._load(self.timings)
        except BaseException as error:  # kept for wait(); a thread has nobody else to tell
            self._error = error
        finally:
            self.load_seconds = time.perf_counter() - started
            self._load = None  # drop the closure (it may hold an uploaded .zip's bytes)
            self._done.set()

    @property
    def elapsed(self) -> float:
        """Seconds since loading started (0 when it never started)."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    @property
    def loading(self) -> bool:
        return not self._done.is_set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._analyzer is not None

    @property
    def error(self) -> BaseException | None:
        return self._error if self._done.is_set() else None

    @property
    def error_message(self) -> str | None:
        """What to tell the user when loading failed (None otherwise)."""
        error = self.error
        if error is None:
            return None
        if isinstance(error, ArtifactError):
            return str(error)
        return f"the model could not be loaded ({type(error).__name__}: {error})"

    @property
    def card(self) -> ModelCard | None:
        """The loaded model's card, or the preview while loading."""
        return self._analyzer.card if self._analyzer is not None else self.preview

    def wait(self, timeout: float | None = None) -> Analyzer:
        """Block until loaded; raise the loading error, or ``TimeoutError``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the model is still loading after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._analyzer is not None
        return self._analyzer


def model_status(handle: ModelHandle | None) -> dict[str, Any]:
    """The server model's state for the ``/api/model`` readiness endpoint (no patient data).

    Example:
        >>> model_status(None)
        {'state': 'none', 'model': None, 'load_seconds': None, 'error': None}
    """
    if handle is None:
        return {"state": "none", "model": None, "load_seconds": None, "error": None}
    card = handle.card
    if handle.loading:
        state = "loading"
    elif handle.error is not None:
        state = "failed"
    else:
        state = "ready"
    return {
        "state": state,
        "model": card.name if card is not None else None,
        "load_seconds": None if handle.load_seconds is None else round(handle.load_seconds, 2),
        "error": handle.error_message,
    }


def _never(timings: dict[str, float]) -> Analyzer:
    raise RuntimeError("this model handle never loads")


class _Stage:
    """Times one loading stage into ``timings[name]``."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.timings[self.name] = time.perf_counter() - self.started


def load_analyzer(path: Path, timings: dict[str, float] | None = None) -> Analyzer:
    """Load an artifact from disk and make it ready (traced) for the first image."""
    timings = {} if timings is None else timings
    prefer_lean_tensorflow()
    with _Stage(timings, "import TensorFlow"):
        # Imported here, in the loader thread: TensorFlow takes ~5 s to import.
        from model.analysis import Analyzer
        from model.artifact import load_artifact
    with _Stage(timings, "read artifact"):
        artifact = load_artifact(path)
    return _prepare(Analyzer, artifact, timings)


def load_analyzer_from_zip(
    data: bytes, source: str, timings: dict[str, float] | None = None
) -> Analyzer:
    """Load an uploaded artifact ``.zip`` (held in memory) and make it ready."""
    timings = {} if timings is None else timings
    prefer_lean_tensorflow()
    with _Stage(timings, "import TensorFlow"):
        from model.analysis import Analyzer
        from model.artifact import load_artifact_bytes
    with _Stage(timings, "read artifact"):
        artifact = load_artifact_bytes(data, source=source)
    return _prepare(Analyzer, artifact, timings)


def _prepare(analyzer_class: type[Analyzer], artifact: Any, timings: dict[str, float]) -> Analyzer:
    with _Stage(timings, "build analyzer"):
        analyzer = analyzer_class(artifact)
    with _Stage(timings, "trace Grad-CAM"):
        warm_up(analyzer)
    release_freed_memory()  # loading's temporary buffers, ~20 MB of RSS
    return analyzer


def warm_up(analyzer: Analyzer) -> Analyzer:
    """Run one blank image through the default Grad-CAM path and overlay, so the first user's
    image does not pay for tracing the graph (~2 s on CPU) or importing Matplotlib's
    colormaps (~0.3 s)."""
    spec = analyzer.card.config.input
    blank = DecodedImage(np.full((spec.height, spec.width, 3), 200, np.uint8), "PNG", "RGB")
    analyzer.analyze(blank, method="gradcam", layer=COARSE_LAYER).overlay()
    return analyzer


def start_model_handle(source: ModelSource) -> ModelHandle:
    """Read the card cheaply, then start loading the model in the background."""
    try:
        preview = read_card(source.path)
    except ArtifactError as error:
        return ModelHandle.failed_with(source.detail, error)
    path = source.path
    return ModelHandle(source.detail, lambda timings: load_analyzer(path, timings), preview).start()


def start_upload_handle(data: bytes, file_name: str) -> ModelHandle:
    """Read the card of an artifact ``.zip`` uploaded in the sidebar, then start loading it."""
    label = f"uploaded file {file_name}"
    try:
        preview = read_card_from_zip(data, label)
    except ArtifactError as error:
        return ModelHandle.failed_with(label, error)
    return ModelHandle(
        label,
        lambda timings: load_analyzer_from_zip(data, source=label, timings=timings),
        preview,
    ).start()


# --- analysing uploads --------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisSettings:
    """What the network computes per image (changing these re-runs the network; the overlay's
    opacity and colormap do not)."""

    method: str = "gradcam"
    layer: str = COARSE_LAYER
    target: str = "predicted"
    tta: bool = False


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one uploaded file: the model's output, or why there is none.

    It keeps everything of an :class:`~model.analysis.ImageAnalysis` except the decoded
    pixels (~1 MB per BreakHis image): a session with hundreds of images holds only their
    small class-activation maps, and :meth:`with_image` re-decodes an image when it is drawn.
    """

    file_name: str
    name_info: BreakHisName | None
    error: str | None = None
    quality: tuple[str, ...] = ()
    seconds: float = 0.0  # decode + checks + network, for this image
    probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    cam: np.ndarray | None = None  # at the layer's resolution, values in [0, 1]
    method: str = ""
    layer: str = ""
    target: str = ""
    tta: TTAResult | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.probability is not None

    @classmethod
    def from_analysis(
        cls,
        file_name: str,
        analysis: ImageAnalysis,
        quality: tuple[str, ...] = (),
        seconds: float = 0.0,
    ) -> ImageResult:
        """Keep an analysis's results (not its pixels)."""
        return cls(
            file_name=file_name,
            name_info=read_breakhis_filename(file_name),
            quality=quality,
            seconds=seconds,
            probability=analysis.probability,
            label=analysis.label,
            threshold=analysis.threshold,
            cam=analysis.cam,
            method=analysis.method,
            layer=analysis.layer,
            target=analysis.target,
            tta=analysis.tta,
            notes=tuple(analysis.notes),
        )

    def with_image(self, data: bytes) -> ImageAnalysis:
        """The full analysis again, for drawing: re-decodes the file's bytes (~10 ms)."""
        from model.analysis import ImageAnalysis  # TensorFlow is loaded once results exist

        if not self.ok:
            raise ValueError(f"{self.file_name} has no analysis: {self.error}")
        return ImageAnalysis(
            image=decode_image(data),
            probability=float(self.probability),  # type: ignore[arg-type]
            label=str(self.label),
            threshold=float(self.threshold),  # type: ignore[arg-type]
            cam=self.cam,  # type: ignore[arg-type]
            method=self.method,
            layer=self.layer,
            target=self.target,
            tta=self.tta,
            notes=self.notes,
        )


def analyze_upload(
    analyzer: Analyzer, file_name: str, data: bytes, settings: AnalysisSettings
) -> ImageResult:
    """Decode, check and analyse one uploaded file. Never raises for a bad file: the error
    goes into the result, so the other files of a batch still classify."""
    started = time.perf_counter()
    name_info = read_breakhis_filename(file_name)
    try:
        decoded = decode_image(data)
    except ImageError as error:
        return ImageResult(file_name, name_info, error=str(error))
    quality = tuple(quality_warnings(decoded))
    try:
        analysis = analyzer.analyze(
            decoded,
            method=settings.method,  # type: ignore[arg-type]
            layer=settings.layer,
            target=settings.target,  # type: ignore[arg-type]
            tta=settings.tta,
        )
    except ImageError as error:
        return ImageResult(file_name, name_info, error=str(error), quality=quality)
    except Exception as error:  # one unexpected failure must not stop the batch
        return ImageResult(
            file_name,
            name_info,
            error=f"could not analyse this image ({type(error).__name__}: {error})",
            quality=quality,
        )
    return ImageResult.from_analysis(
        file_name, analysis, quality=quality, seconds=time.perf_counter() - started
    )


def format_probability(probability: float) -> str:
    """A probability as a percentage that never rounds to a misleading 0 % or 100 %."""
    if probability < 0.001:
        return "<0.1%"
    if probability > 0.999:
        return ">99.9%"
    return f"{probability:.1%}"


def magnification_of(result: ImageResult, chosen: str | None = None) -> str:
    """The user's choice when made, else what the BreakHis name says, else "unknown"."""
    if chosen and chosen != UNKNOWN_MAGNIFICATION:
        return chosen
    if result.name_info is None:
        return UNKNOWN_MAGNIFICATION
    return f"{result.name_info.magnification}X"


def case_of(result: ImageResult, typed: str | None = None, default_case: str = "") -> str:
    """The case id typed for this image, else the BreakHis patient id, else the default."""
    if typed and typed.strip():
        return typed.strip()
    if result.name_info is not None:
        return result.name_info.patient
    return default_case.strip()


def result_warnings(result: ImageResult, untrained: bool) -> list[str]:
    """Everything a reader must know about one result, most important first (for a file
    that could not be used, why)."""
    if result.error is not None:
        return [f"not classified: {result.error}"]
    warnings = [UNTRAINED_WARNING] if untrained and result.ok else []
    warnings += list(result.quality)
    warnings += list(result.notes)
    if result.tta is not None and result.probability is not None and result.threshold:
        mean = float(result.tta.mean[0])
        if (mean >= result.threshold) != (result.probability >= result.threshold):
            warnings.append(
                f"unstable: the flipped/rotated views average {mean:.2f}, on the other side "
                f"of the threshold {result.threshold:.2f}"
            )
    return warnings


RESULT_COLUMNS = (
    "file",
    "magnification",
    "case",
    "probability",
    "label",
    "tta_mean",
    "tta_std",
    "warnings",
    "label_from_name",
    "error",
)


def results_table(
    results: Sequence[ImageResult],
    *,
    untrained: bool = False,
    magnifications: Mapping[int, str] | None = None,
    cases: Mapping[int, str] | None = None,
    default_case: str = "",
) -> pd.DataFrame:
    """One row per uploaded file (in upload order), bad files included: their reason is in
    ``error`` and, for people reading the table, also in ``warnings``.

    ``magnifications`` and ``cases`` hold the user's per-image choices by position.
    ``tta_mean``/``tta_std`` are empty unless test-time augmentation ran; ``label_from_name``
    is the class a BreakHis file name states (the dataset's ground truth).
    """
    magnifications = magnifications or {}
    cases = cases or {}
    rows: list[dict[str, Any]] = []
    for position, result in enumerate(results):
        tta = result.tta
        rows.append(
            {
                "file": result.file_name,
                "magnification": magnification_of(result, magnifications.get(position)),
                "case": case_of(result, cases.get(position), default_case),
                "probability": result.probability if result.ok else math.nan,
                "label": result.label or "",
                "tta_mean": float(tta.mean[0]) if tta is not None else math.nan,
                "tta_std": float(tta.std[0]) if tta is not None else math.nan,
                "label_from_name": result.name_info.class_name if result.name_info else "",
                "warnings": "; ".join(result_warnings(result, untrained)),
                "error": result.error or "",
            }
        )
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return table.astype({"probability": float, "tta_mean": float, "tta_std": float})


def results_csv(table: pd.DataFrame) -> bytes:
    """The results table as UTF-8 CSV, probabilities with 4 decimals.

    Text cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` at the
    start, e.g. in a crafted file name) get a leading apostrophe.
    """
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(_defuse_formula)
    return safe.to_csv(index=False, float_format="%.4f").encode("utf-8")


def _defuse_formula(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


CASE_COLUMNS = (
    "case",
    "images",
    "magnifications",
    "mean_probability",
    "min_probability",
    "max_probability",
    "malignant_images",
    "label",
)


def aggregate_cases(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per case: how many images, their mean probability and the case label.

    Only classified images with a case id count (files with errors, and images with no
    BreakHis patient id and no typed case id, are left out: grouping unrelated images would
    invent a case). The case label applies the model's threshold to the mean probability.
    """
    usable = table[(table["error"] == "") & (table["case"] != "")]
    rows = []
    for case, group in usable.groupby("case", sort=True):
        probabilities = group["probability"].astype(float)
        mean = float(probabilities.mean())
        magnifications = sorted(
            set(group["magnification"]) - {UNKNOWN_MAGNIFICATION}, key=_magnification_order
        )
        rows.append(
            {
                "case": case,
                "images": len(group),
                "magnifications": ", ".join(magnifications) or UNKNOWN_MAGNIFICATION,
                "mean_probability": mean,
                "min_probability": float(probabilities.min()),
                "max_probability": float(probabilities.max()),
                "malignant_images": f"{int((probabilities >= threshold).sum())}/{len(group)}",
                "label": label_of(mean, threshold),
            }
        )
    return pd.DataFrame(rows, columns=list(CASE_COLUMNS))


def _magnification_order(magnification: str) -> int:
    return MAGNIFICATIONS.index(magnification) if magnification in MAGNIFICATIONS else 99


def overlay_png(analysis: ImageAnalysis, opacity: float, colormap: str) -> bytes:
    """The overlay at the original size as PNG bytes (made in memory, never on disk)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(analysis.overlay(opacity, colormap)).save(buffer, format="PNG")
    return buffer.getvalue()


def download_name(file_name: str, suffix: str) -> str:
    """``SOB_M_DC-14-2523-40-010.png`` -> ``SOB_M_DC-14-2523-40-010_overlay.png``."""
    stem = Path(file_name.replace("\\", "/")).stem or "image"
    return f"{stem}_{suffix}.png"


# --- describing the model -----------------------------------------------------------------
METRIC_NAMES: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "AUC (ROC)",
    "sensitivity": "Sensitivity (malignant recall)",
    "specificity": "Specificity (benign recall)",
    "f1": "F1 (malignant)",
    "precision": "Precision (malignant)",
    "patient_accuracy": "Patient-level accuracy",
    "patient_recognition_rate": "Patient recognition rate",
}
LEAK_NOTE = (
    "Paper-protocol numbers come from the paper's split (train on 100X/200X/400X, test on "
    "40X): every test patient's tissue is also in training, so they overstate how the model "
    "does on new patients. The patient-disjoint numbers are the honest estimate."
)


def ordered_protocols(card: ModelCard) -> list[tuple[str, dict[str, Any]]]:
    """Evaluations with patient-disjoint ones first (they are the ones to trust)."""
    return sorted(
        card.evaluation.items(), key=lambda item: (not item[1].get("patient_disjoint"), item[0])
    )


def protocol_heading(name: str, evaluation: Mapping[str, Any]) -> str:
    """``"patient: patient-disjoint"`` / ``"paper: test patients also in training"``."""
    if evaluation.get("patient_disjoint"):
        return f"{name}: patient-disjoint"
    return f"{name}: test patients also in training"


def format_metric(name: str, value: Any) -> str:
    """AUC-like values as 0.000, rates in [0, 1] as percentages, anything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    if "auc" in name.lower() or not 0.0 <= value <= 1.0:
        return f"{value:.3f}"
    return f"{value:.1%}"


def metrics_table(card: ModelCard) -> pd.DataFrame:
    """Metrics (rows) by evaluation protocol (columns), formatted; side by side when a card
    has both a patient-disjoint and a paper-protocol evaluation. Nested values (confusion
    matrices, per-magnification breakdowns) are left to the card's raw JSON."""
    protocols = ordered_protocols(card)
    names: list[str] = []
    for _, evaluation in protocols:
        for metric, value in evaluation.get("metrics", {}).items():
            if metric not in names and not isinstance(value, dict | list):
                names.append(metric)
    names.sort(key=lambda m: (list(METRIC_NAMES).index(m) if m in METRIC_NAMES else 99, m))
    columns = {
        protocol_heading(name, evaluation): [
            format_metric(metric, evaluation.get("metrics", {}).get(metric, "-"))
            if metric in evaluation.get("metrics", {})
            else "-"
            for metric in names
        ]
        for name, evaluation in protocols
    }
    index = [METRIC_NAMES.get(metric, metric.replace("_", " ")) for metric in names]
    return pd.DataFrame(columns, index=pd.Index(index, name="metric"))


def evaluation_summary(card: ModelCard) -> str:
    """One line on how the model was evaluated, for the always-visible header."""
    protocols = ordered_protocols(card)
    if not protocols:
        return "not evaluated (no test results in its model card)"
    name, evaluation = protocols[0]
    metrics = evaluation.get("metrics", {})
    shown = [
        f"{_short_metric_name(metric)} {format_metric(metric, metrics[metric])}"
        for metric in ("accuracy", "balanced_accuracy", "auc")
        if metric in metrics
    ]
    numbers = ", ".join(shown) if shown else "no metrics recorded"
    if evaluation.get("patient_disjoint"):
        return f"patient-disjoint test ({name}): {numbers}"
    return f"{name} protocol only, whose test patients also appear in training: {numbers}"


def _short_metric_name(metric: str) -> str:
    """``"auc"`` -> ``"AUC"`` (the display name without its explanation in brackets)."""
    return METRIC_NAMES.get(metric, metric).split(" (")[0]


def input_description(card: ModelCard) -> str:
    """``"144x96 px RGB (width x height), bilinear resize, resnet50_caffe normalisation"``."""
    spec = card.config.input
    return (
        f"{spec.width}x{spec.height} px RGB (width x height), {spec.interpolation} resize, "
        f"{spec.normalisation} normalisation"
    )


def training_description(card: ModelCard) -> list[tuple[str, str]]:
    """The card's training facts as (label, value) pairs, skipping those not recorded."""
    training = card.training
    facts = [
        ("Trained", "yes" if training.trained else "NO: head never fitted, outputs meaningless"),
        ("Data", training.dataset),
        ("Protocol", training.protocol),
        ("Preset", training.preset),
        ("Initial weights", training.initial_weights),
        ("Frozen layers", training.freeze),
        ("Epochs", training.epochs),
        ("Steps per epoch", training.steps_per_epoch),
        ("Batch size", training.batch_size),
        ("Optimizer", training.optimizer),
        ("Learning rate", training.learning_rate),
        ("Loss", training.loss),
        ("Augmentation", training.augmentation),
        ("Seed", training.seed),
        ("Notes", training.notes),
    ]
    return [(label, str(value)) for label, value in facts if value not in (None, "")]


def short_date(iso_time: str) -> str:
    """``"2026-03-01T12:00:00+00:00"`` -> ``"2026-03-01 12:00 UTC"`` (unchanged if odd)."""
    try:
        moment = pd.Timestamp(iso_time)
    except (ValueError, TypeError):
        return iso_time
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")
