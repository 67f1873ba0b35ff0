"""Tables of per-image results shared by the app and the batch CLI: which case and
magnification an image belongs to, the per-case summary, and CSV cells a spreadsheet will
not run as formulas.

Plain Python (pandas), no TensorFlow. The app's results table (:mod:`app.results`) and the
batch CLI's CSV (:mod:`model.batch`) both aggregate cases with :func:`aggregate_cases`, so a
case gets the same label whichever way its images were scored.

Example:
    >>> from model.breakhis import read_breakhis_filename
    >>> name = read_breakhis_filename("SOB_M_DC-14-2523-100-011.png")
    >>> case_id(None, name), magnification_label(None, name), magnification_label(None, None)
    ('14-2523', '100X', 'unknown')
    >>> spreadsheet_safe("=SUM(A1).png"), spreadsheet_safe("scan.png")
    ("'=SUM(A1).png", 'scan.png')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from model.breakhis import MAGNIFICATIONS as MAGNIFICATION_POWERS
from model.breakhis import BreakHisName
from model.config import label_of
from model.trust import WITHHELD_LABEL

UNKNOWN_MAGNIFICATION = "unknown"
MAGNIFICATIONS = tuple(f"{power}X" for power in MAGNIFICATION_POWERS)  # "40X"... as BreakHis
NOT_MEANINGFUL = "not meaningful"
"""The probability basis of a model that is not shown to be better than chance."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these runs as a formula in a spreadsheet."""


def case_id(typed: str | None, name: BreakHisName | None, default_case: str = "") -> str:
    """The case id given for an image (typed in the app, a manifest's ``case`` column),
    else the BreakHis patient id its file name states, else ``default_case``.

    Example:
        >>> case_id(" A ", None), case_id(None, None, "CASE-7"), case_id("", None)
        ('A', 'CASE-7', '')
    """
    if typed and typed.strip():
        return typed.strip()
    if name is not None:
        return name.patient
    return default_case.strip()


def magnification_label(chosen: str | None, name: BreakHisName | None) -> str:
    """The magnification chosen for an image, else what its BreakHis name says, else
    ``"unknown"``.

    Example:
        >>> magnification_label("200X", None), magnification_label("unknown", None)
        ('200X', 'unknown')
    """
    if chosen and chosen != UNKNOWN_MAGNIFICATION:
        return chosen
    if name is None:
        return UNKNOWN_MAGNIFICATION
    return f"{name.magnification}X"


def probability_basis(calibrated: bool, meaningful: bool) -> str:
    """What a probability is: ``"calibrated"`` (on validation data) or ``"uncalibrated"``,
    or ``"not meaningful"`` for a model not shown to be better than chance
    (:attr:`model.trust.ModelTrust.shows_labels` is False).

    Example:
        >>> probability_basis(True, True), probability_basis(True, False)
        ('calibrated', 'not meaningful')
    """
    if not meaningful:
        return NOT_MEANINGFUL
    return "calibrated" if calibrated else "uncalibrated"


def spreadsheet_safe(value: Any) -> Any:
    """A text cell with a leading apostrophe when a spreadsheet would run it as a formula
    (``=``, ``+``, ``-``, ``@`` at the start, e.g. in a crafted file name); other values
    unchanged.

    Example:
        >>> spreadsheet_safe("@cmd"), spreadsheet_safe(0.5)
        ("'@cmd", 0.5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
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


def aggregate_cases(
    table: pd.DataFrame, threshold: float, class_names: Mapping[int, str] | None = None
) -> pd.DataFrame:
    """Per case: how many images, their mean probability and the case label.

    ``table`` has one row per image with the columns ``case``, ``magnification``,
    ``probability``, ``error`` (empty for a classified image) and, optionally, ``label``
    (:data:`~model.trust.WITHHELD_LABEL` where the evidence supports none).

    Only classified images with a case id count (files with errors, and images with no
    BreakHis patient id and no given case id, are left out: grouping unrelated images would
    invent a case). The case label applies the model's threshold to the mean probability of
    the images that have a label; it is ``"not shown"`` when none has (or the probabilities
    are not meaningful).

    Example:
        >>> table = pd.DataFrame({
        ...     "case": ["A", "A", "", "B"], "magnification": ["40X", "100X", "40X", "unknown"],
        ...     "probability": [0.9, 0.6, 0.5, 0.2], "error": ["", "", "", ""]})
        >>> cases = aggregate_cases(table, threshold=0.5)
        >>> cases[["case", "images", "magnifications", "malignant_images", "label"]].values
        array([['A', 2, '40X, 100X', '2/2', 'malignant'],
               ['B', 1, 'unknown', '0/1', 'benign']], dtype=object)
    """
    usable = table[(table["error"] == "") & (table["case"] != "")]
    labelled = usable["label"] != WITHHELD_LABEL if "label" in usable else True
    rows = []
    for case, group in usable.groupby("case", sort=True):
        probabilities = group["probability"].astype(float)
        mean = float(probabilities.mean())
        backed = group[labelled[group.index]] if "label" in group else group
        backed_mean = float(backed["probability"].astype(float).mean()) if len(backed) else math.nan
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
                # Hidden (not meaningful) probabilities are not counted as below the threshold.
                "malignant_images": ""
                if probabilities.isna().all()
                else f"{int((probabilities >= threshold).sum())}/{len(group)}",
                "label": WITHHELD_LABEL
                if math.isnan(backed_mean)
                else label_of(backed_mean, threshold, class_names),
            }
        )
    return pd.DataFrame(rows, columns=list(CASE_COLUMNS))


def _magnification_order(magnification: str) -> int:
    return MAGNIFICATIONS.index(magnification) if magnification in MAGNIFICATIONS else 99
