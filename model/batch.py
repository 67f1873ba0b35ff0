"""Score many images from the command line: a results CSV, a per-case CSV, optional overlays.

Usage::

    python -m model.batch IMAGES... --model PATH --out results.csv [--overlays DIR]

``IMAGES`` are folders (searched recursively for ``.png``, ``.jpg``, ``.jpeg``, ``.tif``,
``.tiff``, ``.bmp``; hidden files skipped), glob patterns (``"scans/**/*.png"``, quoted so
that Python expands ``**``), image files, or CSV manifests (any ``.csv`` file: a ``path``
column, relative paths counted from the manifest's folder, and an optional ``case`` column).

Every image goes through :meth:`model.analysis.Analyzer.analyze_many`, the very function
behind the app's per-image path (``app.results.analyze_upload`` -> ``Analyzer.analyze``, which
is ``analyze_many`` on one image), so a file gets the same probability, label and per-image
verdicts here as in the app. Without ``--overlays`` (or ``--maps``) no map is computed and the
network runs forward only.

What is written:

``--out`` (one row per file, in :func:`result_columns` order)
    The file (``path``, ``file``), ``status`` (``ok``, or why it could not be scored:
    ``missing``, ``unreadable``, ``empty``, ``not_an_image``, ``truncated``, ``too_large``,
    ``unsupported``, ``failed``) with the reason in ``error``; ``case`` and
    ``magnification``; then every scalar or tuple field of
    :class:`~model.analysis.ImageAnalysis` under its own name (probability, label, threshold,
    raw probability, decision, trust level, withheld reasons, applicability verdict and
    score, quality codes and warnings, decode notes, empty-map flag...; a field added to it
    later appears without a change here), ``probability_basis`` (as in the app), the
    test-time-augmentation summary, what a BreakHis file name states, the overlay written
    and the model that scored it. ``label`` is ``"not shown"`` where the model core's trust
    logic withholds it, exactly as in the app; ``decision`` is the class at the threshold
    regardless.
``--cases-out`` (default ``<out>-cases.csv``)
    One row per case (the manifest's ``case``, else the BreakHis patient id), from
    :func:`model.tables.aggregate_cases`, the app's own aggregation.
``--overlays DIR``
    ``<stem>_overlay.png`` per scored image with a non-empty map (Grad-CAM over the
    original image, at its size).

Resuming: run again with the same ``--out`` and the files that already have a row (scored or
not) are skipped, new rows appended. Rows are written per batch in one write and synced to
disk, and a row is written only after its overlay; a half row left by a kill is dropped
(and that file scored again) on the next run. A CSV written with other columns or by another
model is refused rather than mixed.

Example:
    >>> inputs = collect_inputs(["scans/"])  # doctest: +SKIP
    >>> summary = score_files(analyzer, inputs, Path("results.csv"))  # doctest: +SKIP
    >>> summary.scored, summary.failed, summary.cases_out.name  # doctest: +SKIP
    (34, 2, 'results-cases.csv')
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import hashlib
import io
import os
import sys
import time
import types
import typing
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from model.breakhis import read_breakhis_filename
from model.config import CAM_LAYERS, CAM_METHODS, CAM_TARGETS, COARSE_LAYER, CamMethod, Target
from model.errors import (
    ArtifactError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ModelCoreError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from model.files import write_atomically, write_bytes_atomically
from model.overlay import COLORMAPS, DEFAULT_COLORMAP, DEFAULT_OPACITY
from model.tables import (
    FORMULA_STARTS,
    NOT_MEANINGFUL,
    aggregate_cases,
    case_id,
    magnification_label,
    probability_basis,
    spreadsheet_safe,
)
from model.tensorflow_start import quiet_tensorflow_start
from model.trust import WITHHELD_LABEL

if TYPE_CHECKING:  # importing these at run time imports TensorFlow; done once a model loads
    from model.analysis import Analyzer, ImageAnalysis, PreparedImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MANIFEST_SUFFIX = ".csv"
STATUS_OK = "ok"
ERROR_STATUS: dict[type[ImageError], str] = {
    EmptyImageError: "empty",
    NotAnImageError: "not_an_image",
    TruncatedImageError: "truncated",
    ImageTooLargeError: "too_large",
    UnsupportedImageError: "unsupported",
}
"""Status of a file whose bytes :func:`~model.preprocessing.decode_image` refused."""

FILE_COLUMNS = ("path", "file", "status", "error", "case", "magnification")
TRAILING_COLUMNS = (
    "probability_basis",
    "tta_mean",
    "tta_std",
    "label_from_name",
    "subtype_from_name",
    "patient_from_name",
    "image_number_from_name",
    "overlay",
    "model",
    "model_sha256",
)
MAP_FIELDS = frozenset({"method", "layer", "target", "empty_map"})
"""Fields of ImageAnalysis that describe a map: left empty when none was computed."""
OVERLAY_PNG_COMPRESSION = 1
"""zlib level of overlay PNGs: lossless like any level, about 7 % larger than the default 6
and four times faster to write (25 ms instead of 100 ms for 700x460 here)."""


class BatchInputError(ModelCoreError, ValueError):
    """The command's inputs or output cannot be used (a missing folder, a bad manifest, a
    results CSV from another model...); the message says which and why."""


@dataclass(frozen=True)
class InputFile:
    """One image to score, and the case a manifest gave it (None: from its name, if any)."""

    path: Path
    case: str | None = None

    @property
    def key(self) -> str:
        """How the results CSV names the file (its ``path`` cell): the path as collected."""
        return _cell_text(str(self.path))


@dataclass(frozen=True)
class BatchSummary:
    """What one run did."""

    scored: int
    failed: int
    skipped: int
    overlays: int
    seconds: float
    out: Path
    cases_out: Path
    repaired: bool = False  # a half row from an interrupted run was dropped


# --- inputs -------------------------------------------------------------------------------
def collect_inputs(
    arguments: Sequence[str | Path], exclude: Iterable[str | Path | None] = ()
) -> list[InputFile]:
    """The image files that folders, globs, files and manifests name, in order, each once.

    ``exclude``: folders whose files are left out (the overlay folder, when it lies inside
    an input folder, must not be scored on the next run).

    Raises:
        BatchInputError: an argument names nothing that exists, a folder or glob holds no
            image file, or a manifest is unreadable or has no ``path`` column.

    Example:
        >>> [item.path.name for item in collect_inputs(["scans/"])]  # doctest: +SKIP
        ['SOB_B_A-14-22549AB-40-001.png', 'SOB_M_DC-14-2523-40-010.png']
    """
    excluded = [Path(folder).resolve() for folder in exclude if folder is not None]
    found: dict[str, InputFile] = {}
    for argument in arguments:
        for item in _expand(str(argument)):
            if any(item.path.resolve().is_relative_to(folder) for folder in excluded):
                continue
            found.setdefault(item.key, item)
    if not found:
        raise BatchInputError(f"no image files to score in {', '.join(map(str, arguments))}")
    return list(found.values())


def _expand(argument: str) -> list[InputFile]:
    path = Path(argument)
    if path.is_dir():
        images = [
            InputFile(candidate)
            for candidate in sorted(path.rglob("*"))
            if candidate.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            and candidate.is_file()
        ]
        if not images:
            raise BatchInputError(
                f"{argument}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        return images
    if path.is_file():
        return read_manifest(path) if path.suffix.lower() == MANIFEST_SUFFIX else [InputFile(path)]
    if glob.has_magic(argument):
        # Files only: "**/*.png" names the files themselves, and a matched folder would be
        # searched a second time.
        matches = [m for m in sorted(glob.glob(argument, recursive=True)) if Path(m).is_file()]
        if not matches:
            raise BatchInputError(f"{argument!r} matches no file")
        return [item for match in matches for item in _expand(match)]
    raise BatchInputError(f"{argument}: no such file or folder")


def read_manifest(path: str | Path) -> list[InputFile]:
    """The files a CSV manifest lists: a ``path`` column (relative to the manifest's folder)
    and an optional ``case`` column. Listed files that do not exist are kept: they get a
    ``missing`` row, and the run goes on.

    Raises:
        BatchInputError: the manifest is not UTF-8 CSV, has no ``path`` column, or a row has
            an empty path.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise BatchInputError(
                    f"manifest {path} is empty: expected a header row with a 'path' column"
                )
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
            if "path" not in reader.fieldnames:
                raise BatchInputError(
                    f"manifest {path} has no 'path' column (its columns: "
                    f"{', '.join(reader.fieldnames)}); expected 'path' and optionally 'case'"
                )
            items = []
            for line, row in enumerate(reader, start=2):
                value = (row.get("path") or "").strip()
                if not value:
                    raise BatchInputError(f"manifest {path}, line {line}: the path is empty")
                listed = Path(value)
                listed = listed if listed.is_absolute() else path.parent / listed
                items.append(InputFile(listed, case=(row.get("case") or "").strip() or None))
    except (UnicodeDecodeError, csv.Error) as error:
        raise BatchInputError(
            f"manifest {path} is not a readable UTF-8 CSV file ({error})"
        ) from error
    if not items:
        raise BatchInputError(f"manifest {path} lists no files")
    return items


# --- columns and cells --------------------------------------------------------------------
def _is_cell_type(hint: Any) -> bool:
    """True for a type whose values fit one CSV cell: str/int/float/bool/None, a Literal, a
    union of those, or a tuple of them (joined with "; ")."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_is_cell_type(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return all(arg is Ellipsis or _is_cell_type(arg) for arg in typing.get_args(hint))
    return hint in (str, int, float, bool, type(None))


def cell_fields(cls: type) -> tuple[str, ...]:
    """The fields of a dataclass whose values fit a CSV cell, in their order.

    Example:
        >>> @dataclass
        ... class Result:
        ...     probability: float
        ...     cam: np.ndarray
        ...     notes: tuple[str, ...] = ()
        >>> cell_fields(Result)
        ('probability', 'notes')
    """
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in fields(cls) if _is_cell_type(hints[f.name]))


@functools.cache
def analysis_columns() -> tuple[str, ...]:
    """The fields of :class:`~model.analysis.ImageAnalysis` that fit a CSV cell: every
    per-image verdict of the model core (arrays and objects, the map and the TTA result, are
    not; the TTA result is summarised as ``tta_mean``/``tta_std``)."""
    from model.analysis import ImageAnalysis

    return cell_fields(ImageAnalysis)


def result_columns() -> tuple[str, ...]:
    """The header of the results CSV."""
    return (*FILE_COLUMNS, *analysis_columns(), *TRAILING_COLUMNS)


def _cell_text(value: str) -> str:
    # One physical line per row: a resumed run finds the last complete row by its newline.
    return value.replace("\r", " ").replace("\n", " ")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple):
        value = "; ".join(str(part) for part in value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return spreadsheet_safe(_cell_text(value))
    return value


def _unsafe(value: str) -> str:
    """Undo :func:`~model.tables.spreadsheet_safe` on a cell read back."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def _file_cells(item: InputFile) -> dict[str, Any]:
    name = read_breakhis_filename(item.path.name)
    return {
        "path": item.key,
        "file": item.path.name,
        "case": case_id(item.case, name),
        "magnification": magnification_label(None, name),
        "label_from_name": name.class_name if name else "",
        "subtype_from_name": name.subtype_words if name else "",
        "patient_from_name": name.patient if name else "",
        "image_number_from_name": name.number if name else "",
    }


def analysis_row(
    item: InputFile,
    analysis: ImageAnalysis,
    columns: Sequence[str],
    *,
    meaningful: bool,
    overlay: str = "",
    model: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """The CSV row of a scored image (``meaningful``: the model's trust level shows labels,
    as :attr:`model.trust.ModelTrust.shows_labels`)."""
    row: dict[str, Any] = {**_file_cells(item), "status": STATUS_OK, "error": ""}
    for name in analysis_columns():
        value = getattr(analysis, name)
        if name in MAP_FIELDS and analysis.cam is None:
            value = None
        row[name] = value
    row["label"] = analysis.label or WITHHELD_LABEL
    row["probability_basis"] = probability_basis(analysis.calibrated, meaningful)
    if analysis.tta is not None:
        row["tta_mean"], row["tta_std"] = float(analysis.tta.mean[0]), float(analysis.tta.std[0])
    row["overlay"] = overlay
    row["model"], row["model_sha256"] = model
    return {column: _cell(row.get(column)) for column in columns}


def error_row(
    item: InputFile,
    status: str,
    reason: str,
    columns: Sequence[str],
    model: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """The CSV row of a file that could not be scored."""
    row = {**_file_cells(item), "status": status, "error": reason}
    row["model"], row["model_sha256"] = model
    return {column: _cell(row.get(column)) for column in columns}


# --- the results file ---------------------------------------------------------------------
class ResultsFile:
    """The results CSV, appended to batch by batch so that a kill leaves whole rows only.

    :meth:`open` creates it (header written atomically) or, for a resumed run, checks that
    it has the same columns and model, drops a half-written last row, and returns the files
    already in it.
    """

    def __init__(self, path: Path, columns: Sequence[str], model_sha256: str) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.model_sha256 = model_sha256
        self.repaired = False

    def open(self) -> set[str]:
        """Prepare the file; the ``path`` cells of the rows already there."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            write_atomically(self.path, lambda stream: stream.write(self._lines([self.columns])))
            return set()
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # killed while a row was being written
            os.truncate(self.path, data.rfind(b"\n") + 1)
            data = self.path.read_bytes()
            self.repaired = True
        try:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as error:
            raise BatchInputError(f"{self.path} is not a results CSV ({error})") from error
        if not rows or tuple(rows[0]) != self.columns:
            raise BatchInputError(
                f"{self.path} exists with other columns (another version or another tool "
                "wrote it); give a new --out, or delete it to start over"
            )
        sha_column = self.columns.index("model_sha256")
        others = {row[sha_column] for row in rows[1:]} - {self.model_sha256}
        if others:
            raise BatchInputError(
                f"{self.path} holds results of another model (checksum {sorted(others)[0][:12]}, "
                f"this one {self.model_sha256[:12] or 'none'}); give a new --out"
            )
        path_column = self.columns.index("path")
        return {_unsafe(row[path_column]) for row in rows[1:]}

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows in one write, then flush and sync them to disk."""
        if not rows:
            return
        text = self._lines([[row[column] for column in self.columns] for row in rows])
        with self.path.open("ab") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def _lines(rows: Iterable[Sequence[Any]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")


def cases_path(out: Path) -> Path:
    """The default per-case CSV beside ``out``: ``results.csv`` -> ``results-cases.csv``."""
    return out.with_name(f"{out.stem}-cases{out.suffix or '.csv'}")


def write_cases(out: Path, cases_out: Path, threshold: float, labels: dict[int, str]) -> Path:
    """Aggregate the results CSV per case (:func:`model.tables.aggregate_cases`, as the app)
    into ``cases_out``, atomically.

    Probabilities of a model that is not shown to be better than chance are left out of the
    case summary, as the app hides them: its per-case label is "not shown".
    """
    import pandas as pd

    table = pd.read_csv(out, dtype=str, keep_default_na=False).map(_unsafe)
    probability = pd.to_numeric(table["probability"], errors="coerce")
    hidden = table["probability_basis"] == NOT_MEANINGFUL
    cases = aggregate_cases(
        pd.DataFrame(
            {
                "case": table["case"],
                "magnification": table["magnification"],
                "probability": probability.mask(hidden),
                "label": table["label"],
                "error": table["error"].where(table["status"] == STATUS_OK, table["status"]),
            }
        ),
        threshold,
        labels,
    )
    safe = cases.map(spreadsheet_safe)
    write_atomically(cases_out, lambda stream: safe.to_csv(stream, index=False))
    return cases_out


# --- scoring ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Loaded:
    item: InputFile
    image: PreparedImage | None = None
    status: str = STATUS_OK
    reason: str = ""


def _load(analyzer: Analyzer, item: InputFile) -> _Loaded:
    """Read one file and :meth:`~model.analysis.Analyzer.prepare` it (decode, pixel checks,
    network input; runs in a worker thread); a bad file becomes a status and a reason."""
    try:
        data = item.path.read_bytes()
    except FileNotFoundError:
        return _Loaded(item, status="missing", reason=f"file not found: {item.path}")
    except OSError as error:
        return _Loaded(item, status="unreadable", reason=f"could not read the file ({error})")
    try:
        return _Loaded(item, image=analyzer.prepare(data))
    except ImageError as error:
        status = next(
            (code for kind, code in ERROR_STATUS.items() if isinstance(error, kind)), "failed"
        )
        return _Loaded(item, status=status, reason=str(error))
    except Exception as error:  # one unexpected failure must not stop the run (as in the app)
        reason = f"could not prepare this image ({type(error).__name__}: {error})"
        return _Loaded(item, status="failed", reason=reason)


def overlay_names(items: Sequence[InputFile]) -> dict[str, str]:
    """Overlay file name per input key: ``<stem>_overlay.png``, with a short hash of the path
    for stems that more than one input shares (same name in different folders).

    Example:
        >>> names = overlay_names([InputFile(Path("a/x.png")), InputFile(Path("b/x.png")),
        ...                        InputFile(Path("b/y.tif"))])
        >>> names["b/y.tif"], names["a/x.png"].startswith("x_"), len(set(names.values()))
        ('y_overlay.png', True, 3)
    """
    stems: dict[str, int] = {}
    for item in items:
        stems[item.path.stem] = stems.get(item.path.stem, 0) + 1
    names = {}
    for item in items:
        stem = item.path.stem
        if stems[stem] > 1:
            stem = f"{stem}_{hashlib.sha1(item.key.encode()).hexdigest()[:8]}"
        names[item.key] = f"{stem}_overlay.png"
    return names


def _write_overlay(
    analysis: ImageAnalysis, pixels: np.ndarray, path: Path, opacity: float, colormap: str
) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(analysis.overlay(pixels, opacity, colormap)).save(
        buffer, format="PNG", compress_level=OVERLAY_PNG_COMPRESSION
    )
    write_bytes_atomically(path, buffer.getvalue())


def score_files(
    analyzer: Analyzer,
    inputs: Sequence[InputFile],
    out: str | Path,
    *,
    cases_out: str | Path | None = None,
    overlays: str | Path | None = None,
    maps: bool = False,
    method: CamMethod = "gradcam",
    layer: str = COARSE_LAYER,
    target: Target = "predicted",
    tta: bool = False,
    batch_size: int = 32,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = DEFAULT_COLORMAP,
    workers: int | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Score ``inputs`` into the results CSV ``out`` (appending to it, skipping files it
    already has), then write the per-case CSV and, with ``overlays``, the overlay PNGs.

    Maps are computed when ``overlays`` or ``maps`` is given; otherwise the network runs
    forward only. Files are read and prepared (decoded, checked, resized) in ``workers``
    threads while the network scores the previous batch; overlays are drawn and written in
    the same threads.

    Raises:
        BatchInputError: ``out`` holds rows of other columns or of another model.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    out = Path(out)
    cases_out = Path(cases_out) if cases_out is not None else cases_path(out)
    overlay_dir = Path(overlays) if overlays is not None else None
    card = analyzer.card
    model = (card.name, card.model_sha256 or "")
    columns = result_columns()
    results = ResultsFile(out, columns, model[1])
    done = results.open()
    todo = [item for item in inputs if item.key not in done]
    names = overlay_names(inputs) if overlay_dir is not None else {}
    explain = maps or overlay_dir is not None
    meaningful = analyzer.trust.shows_labels
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    counts = {"scored": 0, "failed": 0, "overlays": 0}

    def score(loaded: list[_Loaded]) -> list[ImageAnalysis | str]:
        """The analysis of each decoded image in one network call (or, should that fail,
        one call per image, so that one bad image does not lose the others)."""
        images = [entry.image for entry in loaded if entry.image is not None]
        settings = {"method": method, "layer": layer, "target": target, "tta": tta}
        try:
            return list(
                analyzer.analyze_many(images, **settings, explain=explain, batch_size=batch_size)
            )
        except Exception:
            outcomes: list[ImageAnalysis | str] = []
            for image in images:
                try:
                    outcomes += analyzer.analyze_many([image], **settings, explain=explain)
                except Exception as error:  # recorded in the row; the run goes on
                    kind = type(error).__name__
                    outcomes.append(f"could not analyse this image ({kind}: {error})")
            return outcomes

    def finish(pending: list[tuple[InputFile, Any, Future | None, str]]) -> None:
        rows = []
        for item, outcome, drawing, overlay in pending:
            if isinstance(outcome, tuple):
                rows.append(error_row(item, *outcome, columns, model))
                counts["failed"] += 1
                continue
            if drawing is not None:
                drawing.result()  # the row promises the overlay: it is on disk first
                counts["overlays"] += 1
            rows.append(
                analysis_row(
                    item, outcome, columns, meaningful=meaningful, overlay=overlay, model=model
                )
            )
            counts["scored"] += 1
        results.append(rows)

    workers = workers or max(2, min(4, os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="batch-io") as pool,
        tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr) as bar,
    ):
        upcoming = [pool.submit(_load, analyzer, item) for item in batches[0]] if batches else []
        pending: list[tuple[InputFile, Any, Future | None, str]] = []
        for index in range(len(batches)):
            loaded = [future.result() for future in upcoming]
            if index + 1 < len(batches):  # decode the next batch while this one is scored
                upcoming = [pool.submit(_load, analyzer, item) for item in batches[index + 1]]
            outcomes = iter(score(loaded))
            finish(pending)  # the previous batch's overlays were drawn meanwhile
            pending = []
            for entry in loaded:
                if entry.image is None:
                    pending.append((entry.item, (entry.status, entry.reason), None, ""))
                    continue
                outcome = next(outcomes)
                if isinstance(outcome, str):
                    pending.append((entry.item, ("failed", outcome), None, ""))
                    continue
                drawing, overlay = None, ""
                if overlay_dir is not None and outcome.cam is not None and not outcome.empty_map:
                    target_path = overlay_dir / names[entry.item.key]
                    drawing = pool.submit(
                        _write_overlay,
                        outcome,
                        entry.image.image.pixels,
                        target_path,
                        opacity,
                        colormap,
                    )
                    overlay = str(target_path)
                pending.append((entry.item, outcome, drawing, overlay))
            bar.update(len(loaded))
        finish(pending)
    write_cases(out, cases_out, card.threshold, card.labels)
    return BatchSummary(
        scored=counts["scored"],
        failed=counts["failed"],
        skipped=len(inputs) - len(todo),
        overlays=counts["overlays"],
        seconds=time.perf_counter() - started,
        out=out,
        cases_out=cases_out,
        repaired=results.repaired,
    )


# --- command line -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.batch",
        description="Score image files with a trained model: a results CSV (one row per file, "
        "bad files included with their reason), a per-case CSV and optional Grad-CAM overlays. "
        "Rerunning with the same --out skips files already in it.",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="folders (recursive), glob patterns, image files or CSV manifests (a 'path' "
        "column, optional 'case')",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="artifact folder, run folder or .zip; an https:// URL pinned by #sha256=; or "
        "hf://owner/name[@revision] (docs/sharing.md)",
    )
    parser.add_argument("--out", required=True, type=Path, help="results CSV (appended to)")
    parser.add_argument("--cases-out", type=Path, help="per-case CSV (default <out>-cases.csv)")
    parser.add_argument("--overlays", type=Path, metavar="DIR", help="write overlay PNGs here")
    parser.add_argument(
        "--maps", action="store_true", help="compute maps (the empty_map column) without overlays"
    )
    parser.add_argument("--method", choices=tuple(CAM_METHODS), default="gradcam")
    parser.add_argument("--layer", choices=tuple(CAM_LAYERS), default=COARSE_LAYER)
    parser.add_argument("--target", choices=CAM_TARGETS, default="predicted")
    parser.add_argument("--tta", action="store_true", help="also test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=32, help="images per network call")
    parser.add_argument("--opacity", type=float, default=DEFAULT_OPACITY)
    parser.add_argument("--colormap", choices=COLORMAPS, default=DEFAULT_COLORMAP)
    parser.add_argument("--workers", type=int, help="threads reading files and writing overlays")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 when it ran (bad files are rows, not failures), 2 for bad input.

    Example:
        >>> main(["scans/", "--model", "runs/quick", "--out", "results.csv"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise BatchInputError(f"--batch-size must be at least 1, got {args.batch_size}")
        if not 0.0 <= args.opacity <= 1.0:
            raise BatchInputError(f"--opacity must be within [0, 1], got {args.opacity}")
        if args.out.is_dir():
            raise BatchInputError(f"--out {args.out} is a folder; give a CSV file name")
        inputs = collect_inputs(args.images, exclude=[args.overlays])
        from model.artifact import load_artifact, read_card
        from model.sources import describe_model_location, resolve_model_location

        # The same three forms as the app (a path, a pinned https:// URL, an hf:// id).
        name = describe_model_location(args.model)
        model_path = resolve_model_location(args.model, progress=not args.quiet)
        read_card(model_path, source=name)  # a bad model is reported before TensorFlow loads
        quiet_tensorflow_start()
        from model.analysis import Analyzer

        analyzer = Analyzer(load_artifact(model_path, source=name))
        summary = score_files(
            analyzer,
            inputs,
            args.out,
            cases_out=args.cases_out,
            overlays=args.overlays,
            maps=args.maps,
            method=args.method,
            layer=args.layer,
            target=args.target,
            tta=args.tta,
            batch_size=args.batch_size,
            opacity=args.opacity,
            colormap=args.colormap,
            workers=args.workers,
            progress=not args.quiet,
        )
    except (BatchInputError, ArtifactError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if summary.repaired:
        print(f"dropped a half-written last row of {summary.out} (an interrupted run)")
    print(
        f"scored {summary.scored} images, {summary.failed} could not be scored (see the "
        f"status column), {summary.skipped} already in {summary.out}; "
        f"{summary.seconds:.1f} s"
    )
    print(f"results: {summary.out}; cases: {summary.cases_out}")
    if args.overlays is not None:
        print(f"overlays: {summary.overlays} written to {args.overlays}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
