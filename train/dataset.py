"""Index the BreakHis dataset (or any labelled image folder / CSV manifest) into one table.

Every image becomes one row of a pandas DataFrame with the columns of ``INDEX_COLUMNS``:

================  =====================================================================
``path``          absolute path (str)
``filename``      base name of the file (str)
``label``         int: benign 0, malignant 1
``class_name``    ``"benign"`` or ``"malignant"``
``subtype``       tumour subtype code (``"A"``, ``"F"``, ``"PT"``, ``"TA"``, ``"DC"``,
                  ``"LC"``, ``"MC"``, ``"PC"``), or ``""`` when unknown
``patient``       patient id parsed from the file name, e.g. ``"14-2523"`` (NA when unknown)
``magnification`` Int64: 40, 100, 200 or 400 (NA when unknown)
================  =====================================================================

Three sources are understood:

* the official archive layout ``BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/
  <subtype_folder>/SOB_<B|M>_<T>_<patient>/<mag>X/<file>.png``;
* any folder (searched recursively) of files named by the BreakHis convention
  ``SOB_<B|M>_<subtype>-<patient>-<magnification>-<number>.png``;
* a CSV manifest with columns ``path`` and ``label`` (plus optional ``patient``,
  ``magnification``, ``subtype``).

Labels, patients and magnifications always come from the file name, never from folder names:
in the official archive patient ``14-13412`` sits in both the ductal and the lobular carcinoma
folders, so grouping by folder would split one patient into two.

Files that cannot be used (corrupt, truncated, not an image, missing) are skipped, logged with a
warning each, and returned in ``DatasetIndex.skipped`` so a run can report them.

Example:
    >>> index = index_dataset("data/")                     # doctest: +SKIP
    >>> index.images[["label", "patient", "magnification"]].head(2)  # doctest: +SKIP
    >>> print(format_summary(index.images))                # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from PIL import Image

from model.breakhis import (  # noqa: F401  (re-exported: part of this module's API)
    CLASS_CODES,
    CLASS_NAMES,
    FILENAME_CONVENTION,
    FILENAME_EXAMPLE,
    MAGNIFICATIONS,
    SUBTYPES,
    BreakHisName,
    is_breakhis_filename,
    parse_breakhis_filename,
)
from train.console import counted

logger = logging.getLogger(__name__)

OFFICIAL_LAYOUT = (
    "BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype_folder>/"
    "SOB_<B|M>_<T>_<patient>/<mag>X/<file>.png"
)
CSV_REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
CSV_OPTIONAL_COLUMNS: tuple[str, ...] = ("patient", "magnification", "subtype", "class_name")
CSV_LABELS: dict[str, int] = {"0": 0, "1": 1, "benign": 0, "malignant": 1}


IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

INDEX_COLUMNS: tuple[str, ...] = (
    "path",
    "filename",
    "label",
    "class_name",
    "subtype",
    "patient",
    "magnification",
)
SKIPPED_COLUMNS: tuple[str, ...] = ("path", "reason")

Layout = Literal["official", "named-folder", "csv"]


class DatasetError(ValueError):
    """The dataset cannot be indexed; the message says what was expected."""


@dataclass(frozen=True)
class DatasetIndex:
    """The indexed images plus the files that were skipped and why.

    Attributes:
        images: one row per usable image, columns ``INDEX_COLUMNS``, sorted by path.
        skipped: one row per skipped file, columns ``path`` and ``reason``.
        source: the folder or CSV file that was indexed.
        layout: ``"official"``, ``"named-folder"`` or ``"csv"``.
    """

    images: pd.DataFrame
    skipped: pd.DataFrame
    source: Path
    layout: Layout
    class_names: dict[int, str] = field(default_factory=lambda: dict(CLASS_NAMES))

    def __len__(self) -> int:
        return len(self.images)

    def without(self, problems: dict[str, str]) -> DatasetIndex:
        """This index less the files found unusable later (path -> reason), which join the
        skipped files with their reason (the decode pass finds unreadable files; indexing
        does not open them)."""
        if not problems:
            return self
        unusable = self.images["path"].isin(list(problems))
        found = pd.DataFrame({"path": list(problems), "reason": list(problems.values())})
        skipped = pd.concat([self.skipped, found.astype("str")], ignore_index=True)
        images = self.images[~unusable].reset_index(drop=True)
        if images.empty:
            raise DatasetError(
                f"No readable images in {self.source}: all {len(problems)} could not be "
                f"read, e.g. {found['path'][0]}: {found['reason'][0]}"
            )
        return replace(
            self,
            images=images,
            skipped=skipped.sort_values("path", kind="stable").reset_index(drop=True),
        )

    @property
    def is_breakhis(self) -> bool:
        """The images are BreakHis images (official layout, or every file BreakHis-named):
        only then are BreakHis's literature numbers a comparison."""
        if self.layout != "csv":
            return True
        return all(is_breakhis_filename(name) for name in self.images["filename"])

    @property
    def mixed_patient_fraction(self) -> float | None:
        """Share of the (known) patients whose images carry both classes: where it is high,
        "patient-level" labels mean little (None without patient ids)."""
        known = self.images.dropna(subset=["patient"])
        if known.empty:
            return None
        return float((known.groupby("patient")["label"].nunique() > 1).mean())


# --- image checks -------------------------------------------------------------------------
def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable image, or None when it is.

    Cheap: Pillow reads the header and ``verify()`` walks the chunks (checking PNG CRCs)
    without decoding pixels, which catches truncated files and non-images named ``.png``.

    Example:
        >>> image_problem("notes.txt")  # doctest: +SKIP
        'not a readable image: cannot identify image file ...'
    """
    path = Path(path)
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            image.verify()
    # Pillow signals damage with several exception types depending on where it stops.
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        return f"not a readable image: {error}"
    return None


def _find_problems(paths: list[Path], check_images: bool) -> list[str | None]:
    if not check_images:
        return [None if path.is_file() else "file not found" for path in paths]
    # verify() is mostly file I/O and zlib CRCs, which release the GIL: threads help.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(image_problem, paths))


# --- building the tables ------------------------------------------------------------------
def _images_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    frame = frame.astype(
        {
            "path": "str",
            "filename": "str",
            "label": "int64",
            "class_name": "str",
            "subtype": "str",
            "patient": "str",
            "magnification": "Int64",
        }
    )
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _skipped_frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS)).astype("str")
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _row_from_name(path: Path, parsed: BreakHisName) -> dict[str, Any]:
    return {
        "path": str(path),
        "filename": path.name,
        "label": parsed.label,
        "class_name": parsed.class_name,
        "subtype": parsed.subtype,
        "patient": parsed.patient,
        "magnification": parsed.magnification,
    }


def _warn_skipped(skipped: list[dict[str, str]]) -> None:
    for row in skipped:
        logger.warning("Skipping %s: %s", row["path"], row["reason"])


def _drop_unreadable(
    rows: list[dict[str, Any]], skipped: list[dict[str, str]], check_images: bool
) -> list[dict[str, Any]]:
    problems = _find_problems([Path(row["path"]) for row in rows], check_images)
    kept = []
    for row, problem in zip(rows, problems, strict=True):
        if problem is None:
            kept.append(row)
        else:
            skipped.append({"path": row["path"], "reason": problem})
    return kept


def _image_files(root: Path) -> list[Path]:
    # Hidden files (macOS ._ resource forks, .DS_Store) are never images of the dataset.
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
        and path.is_file()
    )


def _index_named_files(
    files: Iterable[Path], check_images: bool, folder_class_check: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for path in files:
        try:
            parsed = parse_breakhis_filename(path)
        except ValueError as error:
            skipped.append({"path": str(path), "reason": str(error)})
            continue
        if folder_class_check:
            folder_classes = {part for part in path.parts if part in CLASS_NAMES.values()}
            if folder_classes and folder_classes != {parsed.class_name}:
                skipped.append(
                    {
                        "path": str(path),
                        "reason": f"file name says {parsed.class_name} but it lies in a "
                        f"{'/'.join(sorted(folder_classes))} folder",
                    }
                )
                continue
        rows.append(_row_from_name(path, parsed))
    return _drop_unreadable(rows, skipped, check_images), skipped


def _finish(
    rows: list[dict[str, Any]],
    skipped: list[dict[str, str]],
    source: Path,
    layout: Layout,
    expectation: str,
) -> DatasetIndex:
    _warn_skipped(skipped)
    if not rows:
        detail = f"; {counted(len(skipped), 'file')} skipped, e.g. {skipped[0]}" if skipped else ""
        raise DatasetError(f"No usable images found in {source}{detail}. Expected {expectation}.")
    return DatasetIndex(
        _images_frame(rows), _skipped_frame(skipped), source, layout, _class_names(rows)
    )


def _class_names(rows: list[dict[str, Any]]) -> dict[int, str]:
    names = {int(row["label"]): row["class_name"] for row in rows}
    return {label: names.get(label, CLASS_NAMES[label]) for label in (0, 1)}


# --- the official archive layout and named folders ----------------------------------------
def find_official_layout(root: str | Path) -> Path | None:
    """The folder to index when ``root`` holds (or lies inside) the official archive layout.

    Accepts the folder containing ``BreaKHis_v1``, ``BreaKHis_v1`` itself, a folder inside
    ``histology_slides/breast``, or a parent up to two levels above ``BreaKHis_v1``.

    Example:
        >>> find_official_layout("/work/shared/breakhis-sample")  # doctest: +SKIP
        PosixPath('/work/shared/breakhis-sample/BreaKHis_v1/histology_slides/breast')
    """
    root = Path(root).resolve()
    if not root.is_dir():
        return None
    for folder in (root, *root.parents):
        if folder.name == "breast" and folder.parent.name == "histology_slides":
            return root
    relatives = ["BreaKHis_v1/histology_slides/breast", "histology_slides/breast"]
    if root.name == "histology_slides":
        relatives.append("breast")
    for relative in relatives:
        if (root / relative).is_dir():
            return root / relative
    for pattern in (
        "*/BreaKHis_v1/histology_slides/breast",
        "*/*/BreaKHis_v1/histology_slides/breast",
    ):
        matches = sorted(path for path in root.glob(pattern) if path.is_dir())
        if len(matches) > 1:
            raise DatasetError(
                f"{root} holds {len(matches)} copies of the BreakHis archive "
                f"({', '.join(map(str, matches))}); point to one of them"
            )
        if matches:
            return matches[0]
    return None


def index_official_layout(root: str | Path, *, check_images: bool = True) -> DatasetIndex:
    """Index an extracted ``BreaKHis_v1.tar.gz`` (layout ``OFFICIAL_LAYOUT``).

    Labels come from the file names; an image whose ``benign``/``malignant`` folder contradicts
    its file name is skipped and reported.

    Raises:
        DatasetError: the layout is not there, or it holds no usable image.

    Example:
        >>> index = index_official_layout("/work/shared/breakhis-sample")  # doctest: +SKIP
        >>> len(index), index.layout                                      # doctest: +SKIP
        (34, 'official')
    """
    source = Path(root)
    expectation = (
        f"the official archive layout {OFFICIAL_LAYOUT} with files named {FILENAME_CONVENTION}"
    )
    layout_root = find_official_layout(source)
    if layout_root is None:
        raise DatasetError(
            f"{source} is not an extracted BreakHis archive. Expected {expectation}."
        )
    rows, skipped = _index_named_files(
        _image_files(layout_root), check_images, folder_class_check=True
    )
    return _finish(rows, skipped, source, "official", expectation)


def index_named_folder(root: str | Path, *, check_images: bool = True) -> DatasetIndex:
    """Index every image under ``root`` (recursively) named by the BreakHis convention.

    Image files with other names are skipped and reported; other files are ignored.

    Raises:
        DatasetError: ``root`` is not a folder, or holds no usable BreakHis-named image.

    Example:
        >>> index = index_named_folder("my_images/")  # doctest: +SKIP
        >>> index.images.patient.nunique()             # doctest: +SKIP
    """
    source = Path(root)
    expectation = (
        f"image files named {FILENAME_CONVENTION} (e.g. {FILENAME_EXAMPLE}) anywhere below the "
        f"folder, or the official archive layout {OFFICIAL_LAYOUT}"
    )
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder. Expected {expectation}.")
    rows, skipped = _index_named_files(
        _image_files(source.resolve()), check_images, folder_class_check=False
    )
    return _finish(rows, skipped, source, "named-folder", expectation)


# --- CSV manifests ------------------------------------------------------------------------
def _csv_expectation() -> str:
    return (
        f"a CSV with columns {', '.join(CSV_REQUIRED_COLUMNS)} (optional: "
        f"{', '.join(CSV_OPTIONAL_COLUMNS)}), label one of {', '.join(CSV_LABELS)}, "
        "and paths absolute or relative to the CSV's folder"
    )


def _parse_magnification(value: str) -> int | None:
    text = value.strip().upper().removesuffix("X")
    if not text:
        return None
    if not text.isdigit() or int(text) not in MAGNIFICATIONS:
        raise ValueError(value)
    return int(text)


def index_csv(manifest: str | Path, *, check_images: bool = True) -> DatasetIndex:
    """Index the images listed in a CSV manifest.

    Columns: ``path`` and ``label`` are required; ``label`` is 0/1 or benign/malignant (any
    case). Optional ``patient``, ``magnification`` (``40`` or ``40X``) and ``subtype``. Where an
    optional value is absent or blank and the file has a BreakHis name, it is read from the
    name, so a manifest of BreakHis files still supports patient-level splits.

    Raises:
        DatasetError: the file is missing or empty, lacks a required column, or has bad labels
            or magnifications (the message lists the first offending rows).

    Example:
        >>> # manifest.csv:  path,label\\n images/a.png,benign\\n images/b.png,1
        >>> index = index_csv("manifest.csv")  # doctest: +SKIP
    """
    manifest = Path(manifest)
    expectation = _csv_expectation()
    if not manifest.is_file():
        raise DatasetError(f"CSV manifest {manifest} not found. Expected {expectation}.")
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"Cannot read {manifest} as CSV ({error}). Expected {expectation}."
        ) from error
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in CSV_REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetError(
            f"{manifest} lacks the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (found: "
            f"{', '.join(table.columns) or 'none'}). Expected {expectation}."
        )
    if table.empty:
        raise DatasetError(f"{manifest} lists no images. Expected {expectation}.")

    labels = table["label"].str.strip().str.lower().map(CSV_LABELS)
    bad_labels = table.index[labels.isna()]
    if len(bad_labels):
        examples = ", ".join(
            f"row {row + 2}: {table.at[row, 'label']!r}" for row in bad_labels[:5]
        )  # +2: header line and 1-based numbering, as a spreadsheet shows it
        raise DatasetError(
            f"{manifest} has {counted(len(bad_labels), 'bad label')} ({examples}); allowed labels: "
            f"{', '.join(CSV_LABELS)}. Expected {expectation}."
        )

    class_names = _csv_class_names(table, labels, manifest)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for row_number, record in enumerate(table.to_dict("records")):
        path = Path(record["path"].strip())
        if not path.is_absolute():
            path = manifest.parent / path
        path = path.resolve()
        if str(path) in seen:
            skipped.append({"path": str(path), "reason": "listed twice in the manifest"})
            continue
        seen.add(str(path))
        try:
            parsed: BreakHisName | None = parse_breakhis_filename(path)
        except ValueError:
            parsed = None
        label = int(labels.iat[row_number])
        try:
            magnification = _parse_magnification(record.get("magnification", ""))
        except ValueError:
            raise DatasetError(
                f"{manifest} row {row_number + 2}: bad magnification "
                f"{record['magnification']!r}; allowed: 40, 100, 200, 400 (optionally with X) "
                "or blank"
            ) from None
        patient = record.get("patient", "").strip() or None
        subtype = record.get("subtype", "").strip().upper()
        if parsed is not None:
            # Blank manifest values fall back to what the BreakHis file name says.
            patient = patient or parsed.patient
            magnification = magnification or parsed.magnification
            subtype = subtype or (parsed.subtype if parsed.label == label else "")
        rows.append(
            {
                "path": str(path),
                "filename": path.name,
                "label": label,
                "class_name": class_names[label],
                "subtype": subtype,
                "patient": patient,
                "magnification": magnification,
            }
        )
    rows = _drop_unreadable(rows, skipped, check_images)
    return _finish(rows, skipped, manifest, "csv", expectation)


def _csv_class_names(table: pd.DataFrame, labels: pd.Series, manifest: Path) -> dict[int, str]:
    """What the manifest calls its classes: a ``class_name`` column (one name per label), the
    words benign/malignant (or BreakHis file names), or for bare 0/1 labels
    "negative"/"positive" (the data does not say that 1 means malignant)."""
    if "class_name" in table.columns and (table["class_name"].str.strip() != "").any():
        named = pd.DataFrame({"label": labels.astype(int), "name": table["class_name"].str.strip()})
        names = named[named["name"] != ""].groupby("label")["name"].unique()
        clashing = {int(k): list(v) for k, v in names.items() if len(v) > 1}
        if clashing:
            raise DatasetError(
                f"{manifest}: each label needs one class_name, but {clashing} were given"
            )
        given = {int(label): str(values[0]) for label, values in names.items()}
        return {label: given.get(label, f"class {label}") for label in (0, 1)}
    words = table["label"].str.strip().str.lower()
    breakhis = all(is_breakhis_filename(Path(path.strip()).name) for path in table["path"])
    if breakhis or words.isin(["benign", "malignant"]).any():
        return dict(CLASS_NAMES)
    return {0: "negative", 1: "positive"}


# --- one entry point ----------------------------------------------------------------------
def index_dataset(source: str | Path, *, check_images: bool = True) -> DatasetIndex:
    """Index a dataset, detecting its kind: a ``.csv`` manifest, the official archive layout,
    or a folder of BreakHis-named images.

    Raises:
        DatasetError: nothing usable there; the message names the accepted layouts.

    Example:
        >>> index = index_dataset("/work/shared/breakhis-sample")  # doctest: +SKIP
        >>> print(format_summary(index.images))                    # doctest: +SKIP
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return index_csv(source, check_images=check_images)
    if source.is_dir():
        if find_official_layout(source) is not None:
            return index_official_layout(source, check_images=check_images)
        return index_named_folder(source, check_images=check_images)
    raise DatasetError(
        f"{source} is neither a folder nor a .csv file. Expected a folder with the official "
        f"archive layout {OFFICIAL_LAYOUT}, a folder of images named {FILENAME_CONVENTION}, or "
        f"{_csv_expectation()}."
    )


# --- summaries ----------------------------------------------------------------------------
def _counts(series: pd.Series, order: Iterable[Any], key: Any = str) -> dict[str, int]:
    counts = series.value_counts()
    ordered = [value for value in order if value in counts.index]
    ordered += sorted(set(counts.index) - set(ordered), key=str)
    return {key(value): int(counts[value]) for value in ordered}


def summarize(images: pd.DataFrame) -> dict[str, Any]:
    """Counts of images by class, subtype and magnification, and of patients (JSON-ready).

    Example:
        >>> summary = summarize(index.images)  # doctest: +SKIP
        >>> summary["images_by_class"]         # doctest: +SKIP
        {'benign': 20, 'malignant': 14}
    """
    magnifications = images["magnification"].dropna().astype(int)
    known_patients = images.dropna(subset=["patient"])
    return {
        "images": len(images),
        "patients": int(known_patients["patient"].nunique()),
        "images_by_class": _counts(images["class_name"], CLASS_NAMES.values()),
        "patients_by_class": {
            name: int(group["patient"].nunique())
            for name, group in known_patients.groupby("class_name", sort=True)
        },
        "images_by_subtype": _counts(images["subtype"].replace("", "unknown"), SUBTYPES),
        "images_by_magnification": _counts(
            magnifications, MAGNIFICATIONS, key=lambda value: f"{value}X"
        ),
        "images_without_patient": int(images["patient"].isna().sum()),
        "images_without_magnification": int(images["magnification"].isna().sum()),
    }


def format_summary(images: pd.DataFrame, skipped: pd.DataFrame | None = None) -> str:
    """A few human-readable lines describing the index, for printing.

    Example:
        >>> print(format_summary(index.images, index.skipped))  # doctest: +SKIP
        34 images, 14 patients
          class: benign 20, malignant 14
          ...
    """

    def join(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"

    summary = summarize(images)
    lines = [
        f"{summary['images']} images, {summary['patients']} patients",
        f"  class: {join(summary['images_by_class'])}",
        f"  patients by class: {join(summary['patients_by_class'])}",
        f"  subtype: {join(summary['images_by_subtype'])}",
        f"  magnification: {join(summary['images_by_magnification'])}",
    ]
    if summary["images_without_patient"]:
        lines.append(f"  images without a patient id: {summary['images_without_patient']}")
    if summary["images_without_magnification"]:
        lines.append(f"  images without a magnification: {summary['images_without_magnification']}")
    if skipped is not None and len(skipped):
        lines.append(f"  skipped files: {len(skipped)} (see the skipped table)")
    return "\n".join(lines)
