"""The BreakHis naming convention: what a file name says about its image.

Shared knowledge of the dataset, used by training (to index BreakHis) and by the app (to read
the magnification and patient of an upload), so it lives in the core.

BreakHis names every image ``SOB_<class>_<subtype>-<patient>-<magnification>-<number>``:
``SOB_M_DC-14-2523-40-010.png`` is a malignant (``M``) ductal carcinoma (``DC``) of patient
``14-2523``, photographed at 40X, image 010. Patient ids can carry letters (``14-29960CD``).

Example:
    >>> name = parse_breakhis_filename("SOB_M_DC-14-2523-40-010.png")
    >>> name.label, name.subtype, name.patient, name.magnification, name.number
    (1, 'DC', '14-2523', 40, 10)
    >>> read_breakhis_filename("slide.png") is None
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from model.config import LABELS

CLASS_NAMES: dict[int, str] = LABELS
"""Label encoding (:data:`model.config.LABELS`): benign 0, malignant 1."""

CLASS_CODES: dict[str, int] = {"B": 0, "M": 1}
"""Class letter in a BreakHis file name -> label."""

SUBTYPES: dict[str, tuple[str, int]] = {
    "A": ("adenosis", 0),
    "F": ("fibroadenoma", 0),
    "PT": ("phyllodes_tumor", 0),
    "TA": ("tubular_adenoma", 0),
    "DC": ("ductal_carcinoma", 1),
    "LC": ("lobular_carcinoma", 1),
    "MC": ("mucinous_carcinoma", 1),
    "PC": ("papillary_carcinoma", 1),
}
"""Subtype code -> (folder name in the official archive, label)."""

MAGNIFICATIONS: tuple[int, ...] = (40, 100, 200, 400)


FILENAME_CONVENTION = "SOB_<B|M>_<subtype>-<patient>-<magnification>-<number>.png"
FILENAME_EXAMPLE = "SOB_M_DC-14-2523-40-010.png"
# Patient ids look like 14-2523 or 14-29960CD: digits, a dash, digits and optional letters.
_FILENAME_RE = re.compile(
    r"^SOB_(?P<class_code>[BM])_(?P<subtype>[A-Z]{1,2})"
    r"-(?P<patient>\d+-\d+[A-Z]*)"
    r"-(?P<magnification>\d+)"
    r"-(?P<number>\d+)"
    r"(?:\s*\(\d+\))?"  # " (1)": a browser's suffix for a re-downloaded copy
    r"\.(?P<extension>png|jpe?g|tiff?|bmp)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BreakHisName:
    """What a BreakHis file name says about its image.

    Example:
        >>> name = parse_breakhis_filename("SOB_M_DC-14-2523-40-010.png")
        >>> name.label, name.subtype, name.patient, name.magnification, name.number
        (1, 'DC', '14-2523', 40, 10)
    """

    label: int
    class_name: str
    subtype: str
    patient: str
    magnification: int
    number: int

    @property
    def subtype_name(self) -> str:
        """Folder name of the subtype in the official archive, e.g. ``"ductal_carcinoma"``."""
        return SUBTYPES[self.subtype][0]

    @property
    def subtype_words(self) -> str:
        """The subtype for people, e.g. ``"ductal carcinoma"``."""
        return self.subtype_name.replace("_", " ")

    def describe(self) -> str:
        """One line, e.g. "malignant, ductal carcinoma; patient 14-2523; 40X; image 10"."""
        return (
            f"{self.class_name}, {self.subtype_words}; patient {self.patient}; "
            f"{self.magnification}X; image {self.number}"
        )


def parse_breakhis_filename(name: str | Path) -> BreakHisName:
    """Read class, subtype, patient and magnification from a BreakHis file name.

    Only the base name is looked at, so a full path works too.

    Raises:
        ValueError: the name does not follow ``FILENAME_CONVENTION``, names an unknown subtype
            or magnification, or its class letter disagrees with its subtype.

    Example:
        >>> parse_breakhis_filename("SOB_B_TA-14-29960CD-200-007.png").patient
        '14-29960CD'
    """
    basename = Path(name).name
    match = _FILENAME_RE.match(basename)
    if match is None:
        raise ValueError(
            f"{basename!r} does not follow the BreakHis file name convention "
            f"{FILENAME_CONVENTION} (e.g. {FILENAME_EXAMPLE})"
        )
    class_code = match["class_code"].upper()
    subtype = match["subtype"].upper()
    magnification = int(match["magnification"])
    if subtype not in SUBTYPES:
        raise ValueError(
            f"{basename!r}: unknown subtype {subtype!r}; expected one of {', '.join(SUBTYPES)}"
        )
    if magnification not in MAGNIFICATIONS:
        raise ValueError(
            f"{basename!r}: unknown magnification {magnification}; "
            f"expected one of {', '.join(map(str, MAGNIFICATIONS))}"
        )
    label = CLASS_CODES[class_code]
    if SUBTYPES[subtype][1] != label:
        raise ValueError(
            f"{basename!r}: class letter {class_code} ({CLASS_NAMES[label]}) contradicts "
            f"subtype {subtype} ({CLASS_NAMES[SUBTYPES[subtype][1]]})"
        )
    return BreakHisName(
        label=label,
        class_name=CLASS_NAMES[label],
        subtype=subtype,
        patient=match["patient"],
        magnification=magnification,
        number=int(match["number"]),
    )


def is_breakhis_filename(name: str | Path) -> bool:
    """True when ``name`` parses with ``parse_breakhis_filename``.

    Example:
        >>> is_breakhis_filename("SOB_M_DC-14-2523-40-010.png"), is_breakhis_filename("x.png")
        (True, False)
    """
    try:
        parse_breakhis_filename(name)
    except ValueError:
        return False
    return True


def read_breakhis_filename(name: str | Path) -> BreakHisName | None:
    """Like :func:`parse_breakhis_filename`, but None for a name that is not BreakHis-style
    (for uploads, whose names may be anything)."""
    try:
        return parse_breakhis_filename(PurePath(str(name).replace("\\", "/")).name)
    except ValueError:
        return None
