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
    upscaled, so the network sees interpolated pixels. A model trained on smaller images
    (the card's :class:`ImageProfile`) is judged against those: a model trained on 50x50
    patches does not call a 50x50 input tiny.
``too_small``
    Smaller on a side than a quarter of both the model input and the smallest training image
    (a 1x1 image always is): upscaled that much, the network sees no tissue at all, and no
    label is given.
``colour``
    (Only with an :class:`ImageProfile`.) The image's mean colour is more than
    ``max_colour_z`` standard deviations (of the training images' mean colours) away from the
    training images' average in some channel: another stain, scanner or kind of image.
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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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
    classifiable_height: int = InputSpec().height // 4
    classifiable_width: int = InputSpec().width // 4
    max_colour_z: float = 4.0


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class ImageProfile:
    """What the training images were like, recorded in the model card.

    Attributes:
        n_images: how many images the profile describes.
        min_width, min_height, max_width, max_height: their size range in pixels.
        colour_mean: mean over images of each image's mean R, G, B (0-255).
        colour_std: standard deviation over images of those per-image means.

    Example:
        >>> profile = ImageProfile.from_measurements(
        ...     sizes=[(50, 50), (50, 50)], colour_means=[(200, 120, 180), (210, 130, 170)])
        >>> (profile.min_width, profile.min_height), profile.colour_mean
        ((50, 50), (205.0, 125.0, 175.0))
    """

    n_images: int
    min_width: int
    min_height: int
    max_width: int
    max_height: int
    colour_mean: tuple[float, float, float]
    colour_std: tuple[float, float, float]

    @classmethod
    def from_measurements(
        cls, sizes: Sequence[tuple[int, int]], colour_means: Sequence[Sequence[float]]
    ) -> ImageProfile:
        """From each image's (width, height) and mean (R, G, B)."""
        widths = [width for width, _ in sizes]
        heights = [height for _, height in sizes]
        means = np.asarray(colour_means, dtype=np.float64).reshape(-1, 3)
        return cls(
            n_images=len(sizes),
            min_width=int(min(widths)),
            min_height=int(min(heights)),
            max_width=int(max(widths)),
            max_height=int(max(heights)),
            colour_mean=tuple(float(v) for v in means.mean(axis=0).round(3)),  # type: ignore[arg-type]
            colour_std=tuple(float(v) for v in means.std(axis=0).round(3)),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "min_width": self.min_width,
            "min_height": self.min_height,
            "max_width": self.max_width,
            "max_height": self.max_height,
            "colour_mean": list(self.colour_mean),
            "colour_std": list(self.colour_std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageProfile:
        data = dict(data)
        data["colour_mean"] = tuple(float(v) for v in data["colour_mean"])
        data["colour_std"] = tuple(float(v) for v in data["colour_std"])
        return cls(**data)

    def describe(self) -> str:
        """``"700x460 px"`` or ``"from 50x50 to 700x460 px"``."""
        if (self.min_width, self.min_height) == (self.max_width, self.max_height):
            return f"{self.min_width}x{self.min_height} px"
        return f"from {self.min_width}x{self.min_height} to {self.max_width}x{self.max_height} px"


def thresholds_for(
    spec: InputSpec | None = None,
    profile: ImageProfile | None = None,
    base: QualityThresholds = DEFAULT_THRESHOLDS,
) -> QualityThresholds:
    """The checks' thresholds for a model: its input size, and what it was trained on.

    Example:
        >>> patches = ImageProfile(100, 50, 50, 50, 50, (200.0,) * 3, (10.0,) * 3)
        >>> t = thresholds_for(InputSpec(), patches)
        >>> (t.min_width, t.min_height), (t.classifiable_width, t.classifiable_height)
        ((50, 50), (12, 12))
    """
    spec = spec or InputSpec()
    min_width, min_height = spec.width, spec.height
    if profile is not None:
        min_width, min_height = (
            min(min_width, profile.min_width),
            min(min_height, profile.min_height),
        )
    return replace(
        base,
        min_width=min_width,
        min_height=min_height,
        classifiable_width=max(2, min(spec.width, min_width) // 4),
        classifiable_height=max(2, min(spec.height, min_height) // 4),
    )


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
    image: DecodedImage,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    profile: ImageProfile | None = None,
) -> QualityReport:
    """Measure an image and list what makes it unlike H&E microscopy, or (with the
    training images' ``profile``) unlike the images the model was trained on."""
    t = thresholds
    pixels = _subsample(image.pixels).astype(np.int16)
    # Channel-wise maximum/minimum of the three planes: the same values as max(axis=2), about
    # ten times faster than NumPy's reduction along a length-3 axis (a few ms per image).
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    channel_min = np.minimum(np.minimum(red, green), blue)
    spread = np.maximum(np.maximum(red, green), blue) - channel_min
    luminance = pixels.astype(np.float32) @ _LUMA
    background = (channel_min >= t.background_min_value) & (spread <= t.background_max_spread)
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
    if image.height < t.classifiable_height or image.width < t.classifiable_width:
        found.append(
            (
                "too_small",
                f"too small to classify: {image.width}x{image.height} px is less than a quarter "
                f"of the model input and of the smallest training image "
                f"(at least {t.classifiable_width}x{t.classifiable_height} needed); no label is "
                "given",
            )
        )
    elif image.height < t.min_height or image.width < t.min_width:
        found.append(
            (
                "tiny",
                f"tiny image: {image.width}x{image.height} px is smaller than the model input "
                f"and the training images ({t.min_width}x{t.min_height}) and is upscaled, so "
                "the result is unreliable",
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
    if profile is not None:
        mean_colour = np.array([red.mean(), green.mean(), blue.mean()])
        spread_of_means = np.maximum(np.asarray(profile.colour_std), 2.0)  # 2 grey levels floor
        z = np.abs(mean_colour - np.asarray(profile.colour_mean)) / spread_of_means
        channel = int(z.argmax())
        if float(z[channel]) > t.max_colour_z:
            found.append(
                (
                    "colour",
                    f"colours unlike the training images: the mean {'RGB'[channel]} value "
                    f"{mean_colour[channel]:.0f} is {float(z[channel]):.1f} standard deviations "
                    f"from the training images' {profile.colour_mean[channel]:.0f}; another "
                    "stain, scanner or kind of image",
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
    image: DecodedImage,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    profile: ImageProfile | None = None,
) -> list[str]:
    """User-readable warnings for an image that does not look like H&E microscopy (or [])."""
    return list(assess_quality(image, thresholds, profile).warnings)


def _subsample(pixels: np.ndarray) -> np.ndarray:
    """Every k-th row and column so that at most ~``_MAX_MEASURED_PIXELS`` remain."""
    height, width = pixels.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(height * width / _MAX_MEASURED_PIXELS))))
    return pixels[::step, ::step]
