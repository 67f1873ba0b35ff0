"""What the *Classify* page does with the files a visitor chose, around their analysis: which
are refused by their type (with the reason, so no file vanishes from the table, the CSV or the
count), which are the same content uploaded again, and how the files are counted.

Plain Python (pandas), no Streamlit and no TensorFlow. The uploader accepts any file: a type
filter in the browser would drop the others before the server saw them, silently.

Example:
    >>> refusal_reason("notes.txt")
    'not a supported image type (.txt): upload PNG, JPEG, TIFF, BMP, WebP or GIF images'
    >>> refusal_reason("scan.WEBP") is None
    True
    >>> items = [("f1", "a.png", "d1"), ("f2", "b.png", "d2"), ("f3", "a copy.png", "d1")]
    >>> find_duplicates(items)
    {'f3': Duplicate(first_id='f1', first_name='a.png')}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from app.results import ImageResult
from app.wording import plural
from model.breakhis import read_breakhis_filename

IMAGE_TYPES = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp", "gif")
"""File extensions the page classifies (what :func:`model.preprocessing.decode_image` reads;
an animated GIF or WebP gives its first frame, with a note)."""
FORMAT_NAMES = "PNG, JPEG, TIFF, BMP, WebP or GIF"
DUPLICATE_COLUMN = "duplicate_of"


def extension(file_name: str) -> str:
    """The lower-case extension without its dot ("" for none).

    Example:
        >>> extension("SOB_M_DC-14-2523-40-010.PNG"), extension("README")
        ('png', '')
    """
    return PurePosixPath(file_name.replace("\\", "/")).suffix.lower().lstrip(".")


def refusal_reason(file_name: str) -> str | None:
    """Why a file is not classified, judged by its name alone (None when its type is one of
    :data:`IMAGE_TYPES`; its content is checked when it is decoded).

    Example:
        >>> refusal_reason("slide")
        'no file extension: upload PNG, JPEG, TIFF, BMP, WebP or GIF images'
    """
    kind = extension(file_name)
    if kind in IMAGE_TYPES:
        return None
    if not kind:
        return f"no file extension: upload {FORMAT_NAMES} images"
    return f"not a supported image type (.{kind}): upload {FORMAT_NAMES} images"


def refused_result(file_id: str, file_name: str, reason: str) -> ImageResult:
    """The result of a file that is not classified because of its type: a row like any
    unreadable file's, with ``reason`` as its error.

    Example:
        >>> refused_result("f1", "drawing.svg", "no").error
        'no'
    """
    return ImageResult(file_id, file_name, read_breakhis_filename(file_name), error=reason)


def content_digest(data: bytes | memoryview) -> str | None:
    """The SHA-256 of a file's content, which tells identical uploads apart from different
    ones whatever their names; None for an empty file (two empty files are not one image).

    Example:
        >>> content_digest(b"") is None, content_digest(b"x") == content_digest(b"x")
        (True, True)
    """
    if len(data) == 0:
        return None
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Duplicate:
    """An upload whose content is the same as an earlier one's (the first in upload order)."""

    first_id: str
    first_name: str


def find_duplicates(items: Sequence[tuple[str, str, str | None]]) -> dict[str, Duplicate]:
    """The duplicates among ``(file_id, file_name, digest)`` in upload order, by file id: every
    upload whose digest an earlier one had (a None digest is never a duplicate).

    Example:
        >>> find_duplicates([("f1", "a.png", None), ("f2", "b.png", None)])
        {}
    """
    first_seen: dict[str, tuple[str, str]] = {}
    duplicates: dict[str, Duplicate] = {}
    for file_id, file_name, digest in items:
        if digest is None:
            continue
        if digest in first_seen:
            duplicates[file_id] = Duplicate(*first_seen[digest])
        else:
            first_seen[digest] = (file_id, file_name)
    return duplicates


def flag_duplicates(
    table: pd.DataFrame, file_ids: Sequence[str], duplicates: Mapping[str, Duplicate]
) -> pd.DataFrame:
    """The results table (one row per upload, ``file_ids`` in the same order) with a
    :data:`DUPLICATE_COLUMN` naming the earlier upload each duplicate repeats ("" otherwise).

    Example:
        >>> table = pd.DataFrame({"file": ["a.png", "b.png"]})
        >>> flagged = flag_duplicates(table, ["f1", "f2"], {"f2": Duplicate("f1", "a.png")})
        >>> flagged[DUPLICATE_COLUMN].tolist()
        ['', 'a.png']
    """
    if len(file_ids) != len(table):
        raise ValueError(f"{len(file_ids)} file ids for a table of {len(table)} rows")
    flagged = table.copy()
    flagged[DUPLICATE_COLUMN] = [
        duplicates[file_id].first_name if file_id in duplicates else "" for file_id in file_ids
    ]
    return flagged


def without_repeated_errors(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a file's error said once, in ``error``: its ``warnings`` cell, which
    would only repeat it ("not classified: <error>"), is left empty.

    Example:
        >>> table = pd.DataFrame({"warnings": ["not classified: empty file", "tiny image"],
        ...                       "error": ["empty file", ""]})
        >>> without_repeated_errors(table)["warnings"].tolist()
        ['', 'tiny image']
    """
    cleaned = table.copy()
    repeated = (cleaned["error"] != "") & (
        cleaned["warnings"] == "not classified: " + cleaned["error"]
    )
    cleaned.loc[repeated, "warnings"] = ""
    return cleaned


def counted(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that count (in the cases and the totals): every upload but the duplicates.

    Example:
        >>> table = pd.DataFrame({"file": ["a.png", "a2.png"], DUPLICATE_COLUMN: ["", "a.png"]})
        >>> counted(table)["file"].tolist()
        ['a.png']
    """
    if DUPLICATE_COLUMN not in table:
        return table
    return table[table[DUPLICATE_COLUMN] == ""]


def summary(results: Sequence[ImageResult], duplicates: Mapping[str, Duplicate]) -> str:
    """The "N of M" line above the results (Markdown): each distinct file counted once.

    Example:
        >>> unreadable = ImageResult("f1", "a.png", None, error="x")
        >>> summary([unreadable], {})
        '**0 of 1 image classified.** 1 file could not be used: see the *error* column.'
    """
    distinct = [result for result in results if result.file_id not in duplicates]
    failed = sum(not result.ok for result in distinct)
    text = f"**{len(distinct) - failed} of {plural(len(distinct), 'image')} classified.**"
    if failed:
        text += f" {plural(failed, 'file')} could not be used: see the *error* column."
    if duplicates:
        uploads = plural(len(duplicates), "duplicate upload")
        text += (
            f" {uploads} (the same content as an earlier file) counted once: see the "
            "*duplicate of* column."
        )
    return text
