"""Display-size copies of decoded images: what a page draws, never more.

A browser shows an image a few hundred pixels wide; a 48-megapixel upload held at full size
costs 144 MB per copy (and several copies while an overlay is blended). The app keeps only a
copy at most :data:`DISPLAY_MAX_SIDE` pixels on its long side, made with Lanczos (the sharpest
of Pillow's antialiasing filters), and says when a copy is smaller than the upload.

Pure NumPy/Pillow (no TensorFlow).

Example:
    >>> big = np.zeros((6000, 8000, 3), np.uint8)
    >>> shown = display_copy(big)
    >>> shown.pixels.shape, shown.downscaled
    ((1050, 1400, 3), True)
    >>> shown.note
    'shown downscaled from 8000x6000 to 1400x1050 for display'
    >>> display_copy(np.zeros((460, 700, 3), np.uint8)).note is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DISPLAY_MAX_SIDE = 1400
"""The long side of a display copy, in pixels: more than a results column is wide on a large
screen (a BreakHis image, 700x460, is shown unchanged)."""


@dataclass(frozen=True)
class DisplayImage:
    """An image as a page draws it, and the size of the upload it was made from.

    Attributes:
        pixels: ``uint8`` RGB (h, w, 3); the long side is at most the cap it was made with.
        source_width, source_height: the upload's size (after EXIF orientation).
    """

    pixels: np.ndarray = field(repr=False)
    source_width: int
    source_height: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def downscaled(self) -> bool:
        """True when the copy is smaller than the upload."""
        return (self.width, self.height) != (self.source_width, self.source_height)

    @property
    def note(self) -> str | None:
        """What to say beside a downscaled image (None when it is shown at its own size)."""
        if not self.downscaled:
            return None
        return (
            f"shown downscaled from {self.source_width}x{self.source_height} to "
            f"{self.width}x{self.height} for display"
        )


def display_size(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(width, height) scaled so the long side is at most ``max_side`` (never enlarged).

    Example:
        >>> display_size(8000, 6000), display_size(700, 460), display_size(1, 5000)
        ((1400, 1050), (700, 460), (1, 1400))
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def display_copy(
    pixels: np.ndarray,
    source_size: tuple[int, int] | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
) -> DisplayImage:
    """A copy of ``pixels`` at most ``max_side`` on its long side (Lanczos), which shares
    nothing with ``pixels``, so the caller can drop the full-size array.

    ``source_size`` = (width, height) of the upload when ``pixels`` was already decoded
    smaller (a JPEG decoded at reduced scale, :func:`model.preprocessing.decode_image`'s
    ``reduce_to``); by default the size of ``pixels``.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels (h, w, 3), got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    source_width, source_height = source_size or (width, height)
    target = display_size(width, height, max_side)
    if target == (width, height):
        shown = np.array(pixels, copy=True)  # own memory: never a view of a larger array
    else:
        image = Image.fromarray(pixels, mode="RGB")
        shown = np.asarray(image.resize(target, resample=Image.Resampling.LANCZOS))
    return DisplayImage(shown, int(source_width), int(source_height))
