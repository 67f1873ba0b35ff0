"""Turn a low-resolution class-activation map into a heatmap and an overlay on the original.

Pure NumPy/Pillow (no TensorFlow): the app re-blends when the opacity or colormap changes
without running the network again.

Example:
    >>> cam = np.array([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]], dtype="float32")
    >>> heat = upsample_heatmap(cam, (460, 700))
    >>> heat.shape, float(heat.min()) >= 0.0, float(heat.max()) <= 1.0
    ((460, 700), True, True)
    >>> blend(np.zeros((460, 700, 3), "uint8"), heat, opacity=0.4).shape
    (460, 700, 3)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma")
DEFAULT_COLORMAP = "jet"
DEFAULT_OPACITY = 0.4


BAND_PIXELS = 1 << 20
"""Pixels blended per band by :func:`overlay`: about 1 megapixel keeps the float32 temporaries
near 20 MB whatever the image's size (a whole 48-megapixel image at once needs 2.4 GB)."""


def upsample_heatmap(
    heatmap: np.ndarray, size: tuple[int, int], rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize a (h, w) map in [0, 1] to ``size`` = (height, width) with bicubic smoothing.

    Each cell of a CAM covers a block of the input, so the map is stretched over the whole
    image (cell centres to block centres); bicubic overshoot is clipped back into [0, 1].

    ``rows`` = (top, bottom) returns only those rows of the full-size map (the same values:
    Pillow's resampling of a source box uses the full scale and reads past the box edges), so
    a large image's map can be made one band at a time.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heatmap.shape}")
    height, width = size
    top, bottom = rows if rows is not None else (0, height)
    if not 0 <= top < bottom <= height:
        raise ValueError(f"rows {rows} are not within the map's {height} rows")
    scale = heatmap.shape[0] / height
    resized = Image.fromarray(heatmap, mode="F").resize(
        (width, bottom - top),
        resample=Image.Resampling.BICUBIC,
        box=(0.0, top * scale, float(heatmap.shape[1]), bottom * scale),
    )
    return np.clip(np.asarray(resized), 0.0, 1.0)


@lru_cache(maxsize=len(COLORMAPS))
def colormap_table(name: str) -> np.ndarray:
    """256x3 uint8 lookup table of a Matplotlib colormap."""
    if name not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}, got {name!r}")
    from matplotlib import colormaps  # imported lazily: only needed once per colormap

    table = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map values in [0, 1] to RGB (uint8, shape (h, w, 3))."""
    indices = np.clip(np.rint(np.asarray(heatmap) * 255), 0, 255).astype(np.uint8)
    return colormap_table(colormap)[indices]


def blend(
    image: np.ndarray,
    heatmap: np.ndarray,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Alpha-blend the coloured heatmap over an RGB image of the same size."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be within [0, 1], got {opacity}")
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap {heatmap.shape} and image {image.shape[:2]} differ in size")
    # The same float32 arithmetic as (1 - a) * image + a * colours, with the colours scaled
    # once in the 256-entry table and the rest in place: fewer passes over a large image.
    indices = np.clip(np.rint(np.asarray(heatmap) * 255), 0, 255).astype(np.uint8)
    weighted_colours = colormap_table(colormap).astype(np.float32) * np.float32(opacity)
    mixed = image.astype(np.float32)
    mixed *= np.float32(1.0 - opacity)
    mixed += weighted_colours[indices]
    np.rint(mixed, out=mixed)
    np.clip(mixed, 0, 255, out=mixed)
    return mixed.astype(np.uint8)


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = DEFAULT_COLORMAP,
    band_pixels: int = BAND_PIXELS,
) -> np.ndarray:
    """Upsample a low-resolution CAM to the image's size and blend it over the image.

    Made in horizontal bands of about ``band_pixels`` pixels into one output array, so the
    memory it needs beyond its result stays small for any image size (an 8000x6000 overlay:
    about 2 s and 40 MB of temporaries on 2 CPU cores, against 12 s and 2.4 GB at once). Each
    band equals the same rows of :func:`blend` over the whole image, up to float32 rounding
    of the map (1e-7), which can move a colour index by one on a few pixels in a million.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (h, w, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    band = max(1, band_pixels // max(1, width))
    result = np.empty(image.shape, dtype=np.uint8)
    for top in range(0, height, band):
        bottom = min(top + band, height)
        heat = upsample_heatmap(cam, (height, width), rows=(top, bottom))
        result[top:bottom] = blend(image[top:bottom], heat, opacity, colormap)
    return result
