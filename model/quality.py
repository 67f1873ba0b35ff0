"""Does an image look like the H&E microscopy the model was trained on? Cheap, pure-NumPy checks.

The classifier returns a probability for any picture, including a blank slide, a scanned
grayscale print or a thumbnail. These checks flag such inputs so the app can put a visible
warning next to the result; they never block classification.

Each check and its threshold (see :class:`QualityThresholds`), calibrated on the 34 real
BreakHis images in the shared sample (700x460 RGB PNGs, every subtype and magnification),
none of which triggers any warning:

``blank``
    More than 80 % of the pixels are *background*: bright (every channel >= 215) and
    colourless (channel spread <= 25). In the sample the background fraction is at most 47 %
    (fatty or loose tissue has white areas), so 80 % means "mostly empty glass".
``uniform``
    The luminance standard deviation is below 5 grey levels: one flat colour, no structure.
    The sample's lowest is 16.7.
``grayscale``
    The file carried no colour (a grayscale mode such as ``L`` or ``I;16``), or fewer than
    2 % of the non-background pixels have a channel spread above 12 (H&E stains are pink and
    purple). In the sample at least 27 % of all pixels do.
``tiny``
    Smaller than the model input (144x96, width x height) in either direction: the image is
    upscaled, so the network sees interpolated pixels.
``dark``
    More than 50 % of the pixels have a luminance below 50 (underexposed, or a dark-field or
    fluorescence image). In the sample at most 2.5 % do.

Large images are measured on an evenly strided subsample (at most ~250,000 pixels), which
keeps a check under a few milliseconds even at the 50-megapixel decode limit.

Example:
    >>> blank = DecodedImage(np.full((460, 700, 3), 250, np.uint8), "PNG", "RGB")
    >>> [warning.split(":")[0] for warning in quality_warnings(blank)]
    ['mostly blank']
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.config import InputSpec
from model.preprocessing import DecodedImage

# ITU-R BT.601 luma weights, as Pillow's RGB -> L conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MAX_MEASURED_PIXELS = 250_000


@dataclass(frozen=True)
class QualityThresholds:
    """Where each check fires; the defaults are documented in the module docstring."""

    background_min_value: int = 215
    background_max_spread: int = 25
    max_background_fraction: float = 0.80
    min_luminance_std: float = 5.0
    colour_min_spread: int = 12
    min_coloured_fraction: float = 0.02
    dark_max_luminance: float = 50.0
    max_dark_fraction: float = 0.50
    min_height: int = InputSpec().height
    min_width: int = InputSpec().width


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class QualityReport:
    """The measurements behind the checks, and the warnings they give.

    Attributes:
        background_fraction: share of bright, colourless pixels (empty glass).
        coloured_fraction: share of non-background pixels with visible colour (None when
            almost everything is background, so there is nothing to judge).
        luminance_mean, luminance_std: brightness and its spread (grey levels, 0-255).
        dark_fraction: share of pixels darker than ``dark_max_luminance``.
        codes: short names of the checks that fired (``"blank"``, ``"grayscale"``...).
        warnings: one user-readable sentence per fired check, same order as ``codes``.
    """

    background_fraction: float
    coloured_fraction: float | None
    luminance_mean: float
    luminance_std: float
    dark_fraction: float
    codes: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when the image passed every check."""
        return not self.codes


def assess_quality(
    image: DecodedImage, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> QualityReport:
    """Measure an image and list what makes it unlike BreakHis H&E microscopy."""
    t = thresholds
    pixels = _subsample(image.pixels).astype(np.int16)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    luminance = pixels.astype(np.float32) @ _LUMA
    background = (pixels.min(axis=2) >= t.background_min_value) & (
        spread <= t.background_max_spread
    )
    background_fraction = float(background.mean())
    foreground_spread = spread[~background]
    # With (almost) no tissue there is nothing to judge the colour of; "blank" covers it.
    coloured_fraction = (
        float((foreground_spread > t.colour_min_spread).mean())
        if foreground_spread.size >= 0.01 * spread.size
        else None
    )
    luminance_std = float(luminance.std())
    dark_fraction = float((luminance < t.dark_max_luminance).mean())

    found: list[tuple[str, str]] = []
    if image.height < t.min_height or image.width < t.min_width:
        found.append(
            (
                "tiny",
                f"tiny image: {image.width}x{image.height} px is smaller than the model input "
                f"({t.min_width}x{t.min_height}) and is upscaled, so the result is unreliable",
            )
        )
    if background_fraction > t.max_background_fraction:
        found.append(
            (
                "blank",
                f"mostly blank: {background_fraction:.0%} of the image is white/empty "
                f"background (more than {t.max_background_fraction:.0%}); it does not look "
                "like a tissue field",
            )
        )
    elif luminance_std < t.min_luminance_std:
        found.append(
            (
                "uniform",
                f"almost uniform: brightness varies by only {luminance_std:.1f} grey levels "
                f"(std below {t.min_luminance_std:g}); no tissue structure is visible",
            )
        )
    if image.is_grayscale_source:
        found.append(
            (
                "grayscale",
                f"grayscale image (file mode {image.original_mode}): the model was trained on "
                "colour H&E-stained microscopy",
            )
        )
    elif coloured_fraction is not None and coloured_fraction < t.min_coloured_fraction:
        found.append(
            (
                "grayscale",
                f"no colour: only {coloured_fraction:.1%} of the tissue pixels are coloured; "
                "the model was trained on colour H&E-stained microscopy",
            )
        )
    if dark_fraction > t.max_dark_fraction:
        found.append(
            (
                "dark",
                f"very dark: {dark_fraction:.0%} of the pixels are nearly black; H&E "
                "bright-field images are mostly light",
            )
        )
    return QualityReport(
        background_fraction=background_fraction,
        coloured_fraction=coloured_fraction,
        luminance_mean=float(luminance.mean()),
        luminance_std=luminance_std,
        dark_fraction=dark_fraction,
        codes=tuple(code for code, _ in found),
        warnings=tuple(message for _, message in found),
    )


def quality_warnings(
    image: DecodedImage, thresholds: QualityThresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """User-readable warnings for an image that does not look like H&E microscopy (or [])."""
    return list(assess_quality(image, thresholds).warnings)


def _subsample(pixels: np.ndarray) -> np.ndarray:
    """Every k-th row and column so that at most ~``_MAX_MEASURED_PIXELS`` remain."""
    height, width = pixels.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(height * width / _MAX_MEASURED_PIXELS))))
    return pixels[::step, ::step]
