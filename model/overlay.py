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


def upsample_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (h, w) map in [0, 1] to ``size`` = (height, width) with bicubic smoothing.

    Each cell of a CAM covers a block of the input, so the map is stretched over the whole
    image (cell centres to block centres); bicubic overshoot is clipped back into [0, 1].
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heatmap.shape}")
    height, width = size
    resized = Image.fromarray(heatmap, mode="F").resize(
        (width, height), resample=Image.Resampling.BICUBIC
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
    colours = colorize(heatmap, colormap).astype(np.float32)
    mixed = (1.0 - opacity) * image.astype(np.float32) + opacity * colours
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    opacity: float = DEFAULT_OPACITY,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Upsample a low-resolution CAM to the image's size and blend it over the image."""
    return blend(image, upsample_heatmap(cam, image.shape[:2]), opacity, colormap)
