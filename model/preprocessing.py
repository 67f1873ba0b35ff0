"""The one preprocessing contract: image bytes -> RGB pixels -> network input.

Training (``train/``) and serving (``app/``) both call these functions, so a model never
sees differently prepared images in production than in training. The steps:

1. :func:`decode_image`: decode with Pillow, refuse empty / non-image / truncated /
   oversized input with a typed error, apply the EXIF orientation, convert any mode to RGB.
2. :func:`resize_to_input`: resize to the model's input size with the filter named in its
   :class:`~model.config.InputSpec` (Pillow's antialiased bilinear by default).
2b. stain normalisation, when the spec names one (``stain_norm``): the resized image's H&E
   colours mapped onto the reference fitted on training images (:mod:`model.stain`); an image
   whose stains cannot be estimated passes unchanged, with a note.
3. :func:`normalise`: ResNet-50's "caffe" normalisation (RGB->BGR, minus ImageNet mean);
   plain arithmetic, so it runs on NumPy arrays and on TensorFlow/JAX tensors alike
   (the training pipeline applies it inside ``tf.data``).

:func:`prepare_input` chains 2 to 3 and says what the network saw; :func:`preprocess` chains
them all.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (700, 460), (200, 120, 180)).save(buffer, format="PNG")
    >>> x = preprocess(buffer.getvalue(), InputSpec())
    >>> x.shape, x.dtype
    ((96, 144, 3), dtype('float32'))
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.config import InputSpec
from model.errors import (
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from model.stain import StainOutcome, normalise_stain

DEFAULT_MAX_PIXELS = 50_000_000
"""Refuse images above 50 megapixels (a BreakHis image has 0.32): a decompression-bomb guard
well below Pillow's own, checked from the header before any pixel is decoded."""

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
"""Refuse files above 100 MiB before handing them to a decoder."""

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_WITH_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_BOX_REDUCIBLE = {"RGB", "RGBA", "L"}  # modes Image.reduce averages as 8-bit channels

MIN_REDUCED_SHORT_SIDE = 256
"""``decode_image(reduce_to=...)`` never makes the short side smaller than this: well above the
network input (144x96) and every size the quality checks compare with."""
_HIGH_BIT_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to 8-bit RGB, with what was done to get there.

    Attributes:
        pixels: ``uint8`` array of shape (height, width, 3).
        format: the file format Pillow detected (``"PNG"``, ``"JPEG"``...).
        original_mode: the Pillow mode before conversion (``"RGBA"``, ``"I;16"``, ``"L"``...).
        notes: human-readable notes on conversions (alpha flattened, 16-bit rescaled...).
        source_size: (width, height) in the file when ``pixels`` were decoded smaller
            (``reduce_to``), else None.
    """

    pixels: np.ndarray
    format: str | None
    original_mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    source_size: tuple[int, int] | None = None

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of the image in the file, after EXIF orientation: the pixels'
        own size unless it was decoded smaller (``decode_image(..., reduce_to=...)``)."""
        return self.source_size or (self.width, self.height)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_grayscale_source(self) -> bool:
        """True when the file carried no colour (the model was trained on colour H&E)."""
        return self.original_mode in {"1", "L", "LA", "La", "F"} | _HIGH_BIT_DEPTH


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    reduce_to: int | None = None,
) -> DecodedImage:
    """Decode image bytes to 8-bit RGB, or raise a specific :class:`~model.errors.ImageError`.

    Args:
        data: the raw file content (PNG, JPEG, TIFF, BMP, ... anything Pillow reads).
        max_pixels: refuse larger images before decoding their pixels.
        max_bytes: refuse larger files before opening them.
        reduce_to: when given, an image at least twice as large may be decoded smaller,
            keeping its long side at least ``reduce_to`` and its short side at least
            :data:`MIN_REDUCED_SHORT_SIDE` (so no size check changes): a JPEG by the
            decoder's own DCT scaling (1/2, 1/4 or 1/8: the full-size pixels never exist),
            an RGB/RGBA/L image by an integer box reduction before the array is made.
            ``source_size`` keeps the size in the file. For a page that shows the image at
            most ``reduce_to`` wide and a network input far smaller: an 8000x6000 JPEG then
            costs 12 MB instead of about 340 MB while decoding, and its network input differs
            from the full-size decode's by about one grey level (docs/benchmarks.md).

    Raises:
        EmptyImageError: no bytes.
        NotAnImageError: not a format Pillow recognises.
        TruncatedImageError: the pixel data is cut short or damaged.
        ImageTooLargeError: more than ``max_pixels`` pixels or ``max_bytes`` bytes.
        UnsupportedImageError: a zero-sized image.
    """
    if not data:
        raise EmptyImageError("empty file: it contains no bytes")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"file too large: {len(data) / 2**20:.1f} MiB (limit {max_bytes / 2**20:.0f} MiB)"
        )
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise NotAnImageError(
            "not an image: the file is not in a format that can be read "
            "(expected PNG, JPEG, TIFF or BMP)"
        ) from error
    except Image.DecompressionBombError as error:
        # Pillow refuses absurd sizes (> 2x its own limit) while reading the header.
        raise ImageTooLargeError(_bomb_message(data, error, max_pixels)) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise TruncatedImageError(f"damaged image header: {error}") from error

    with image:
        fmt = image.format
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image too large: {width}x{height} ({width * height:,} pixels; "
                f"limit {max_pixels:,})"
            )
        if width == 0 or height == 0:
            raise UnsupportedImageError(f"image has no pixels: {width}x{height}")
        notes: list[str] = []
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        reduction = _reduction(width, height, reduce_to)
        if reduction >= 2:
            # JPEG only (a no-op elsewhere): decode straight at a power-of-two smaller scale.
            image.draft(None, (math.ceil(width / reduction), math.ceil(height / reduction)))
        try:
            image.load()
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(f"image too large: {error}") from error
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            kind = fmt or "image"
            raise TruncatedImageError(
                f"truncated or damaged {kind}: the pixel data could not be read ({error})"
            ) from error
        original_mode = image.mode
        if image.mode in _BOX_REDUCIBLE and (factor := int(reduction * image.width / width)) >= 2:
            image = image.reduce(factor)  # what draft did not already reduce (not a JPEG)
        reduced = image.size != (width, height)
        before_orientation = image.size
        image = _apply_exif_orientation(image, notes)
        pixels = _to_rgb_array(image, notes)
    source_size = None
    if reduced:  # the file's size, turned as EXIF orientation turned the pixels
        turned = image.size != before_orientation
        source_size = (height, width) if turned else (width, height)
    return DecodedImage(
        pixels=pixels,
        format=fmt,
        original_mode=original_mode,
        notes=tuple(notes),
        source_size=source_size,
    )


def load_image_file(path: str | Path, **limits: Any) -> DecodedImage:
    """Read a file and :func:`decode_image` it (same errors; a missing file is ``OSError``)."""
    return decode_image(Path(path).read_bytes(), **limits)


def resize_to_input(image: DecodedImage | np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize RGB pixels to the network's input size; returns ``uint8`` (h, w, 3).

    Uses the Pillow filter named by ``spec.interpolation`` (antialiased when shrinking).
    """
    pixels = image.pixels if isinstance(image, DecodedImage) else np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels (h, w, 3), got {pixels.dtype} {pixels.shape}")
    if pixels.shape[:2] == (spec.height, spec.width):
        return pixels
    resized = Image.fromarray(pixels, mode="RGB").resize(
        (spec.width, spec.height), resample=_RESAMPLING[spec.interpolation]
    )
    return np.asarray(resized)


def normalise(pixels: Any, spec: InputSpec) -> Any:
    """ResNet-50 "caffe" normalisation of RGB pixel values in [0, 255].

    Works on a NumPy array (returns ``float32``) or on a framework tensor of float dtype
    (returns a tensor), for one image (h, w, 3) or a batch (n, h, w, 3). Identical to
    ``keras.applications.resnet50.preprocess_input``.
    """
    if spec.normalisation != "resnet50_caffe":
        raise ValueError(f"unknown normalisation {spec.normalisation!r}")
    if isinstance(pixels, np.ndarray):
        pixels = pixels.astype(np.float32, copy=False)
        mean = np.asarray(spec.channel_mean_bgr, dtype=np.float32)
    else:
        mean = spec.channel_mean_bgr
    bgr = pixels[..., ::-1]
    return bgr - mean


@dataclass(frozen=True)
class PreparedInput:
    """An image made ready for the network, with what the network saw.

    Attributes:
        model_input: ``float32`` array of ``spec.shape`` (the network input).
        seen: the ``uint8`` RGB pixels at the network's input size that ``model_input`` was
            normalised from (after stain normalisation, when the spec has it).
        stain: what stain normalisation did (``None`` when the spec has none).
    """

    model_input: np.ndarray
    seen: np.ndarray
    stain: StainOutcome | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """Notes for the result (a skipped stain normalisation says why)."""
        return (self.stain.note,) if self.stain is not None and self.stain.note else ()


def stain_normalise(pixels: np.ndarray, spec: InputSpec) -> StainOutcome | None:
    """The spec's stain normalisation of resized ``uint8`` pixels (``None`` without one)."""
    if spec.stain_norm == "none":
        return None
    if spec.stain_reference is None:
        raise ValueError(
            f"the input contract names {spec.stain_norm} stain normalisation but carries no "
            "fitted reference"
        )
    return normalise_stain(pixels, spec.stain_reference)


def prepare_input(image: DecodedImage | np.ndarray, spec: InputSpec) -> PreparedInput:
    """Resize, stain-normalise (when the spec says so) and normalise decoded RGB pixels."""
    resized = resize_to_input(image, spec)
    stain = stain_normalise(resized, spec)
    seen = stain.pixels if stain is not None else resized
    return PreparedInput(normalise(seen, spec), seen, stain)


def to_model_input(image: DecodedImage | np.ndarray, spec: InputSpec) -> np.ndarray:
    """:func:`prepare_input`'s network input: ``float32`` array of ``spec.shape``."""
    return prepare_input(image, spec).model_input


def preprocess(data: bytes, spec: InputSpec, **limits: Any) -> np.ndarray:
    """The whole contract: bytes -> :func:`decode_image` -> :func:`to_model_input`."""
    return to_model_input(decode_image(data, **limits), spec)


# --- helpers ------------------------------------------------------------------------------
def _bomb_message(data: bytes, error: Exception, max_pixels: int) -> str:
    """Name the size of an image Pillow refused from its header alone."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])  # IHDR comes first in every PNG
        return (
            f"image too large: {width}x{height} ({width * height:,} pixels; limit {max_pixels:,})"
        )
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return f"image too large: {pixels} (limit {max_pixels:,})"


def _reduction(width: int, height: int, reduce_to: int | None) -> float:
    """By how much ``decode_image(reduce_to=...)`` may shrink a width x height image (1: not)."""
    if reduce_to is None:
        return 1.0
    return max(
        1.0, min(max(width, height) / reduce_to, min(width, height) / MIN_REDUCED_SHORT_SIDE)
    )


def _apply_exif_orientation(image: Image.Image, notes: list[str]) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says (cameras store pixels unrotated)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block must not lose the image
        notes.append("unreadable EXIF metadata ignored")
        return image
    if orientation in (None, 1):
        return image
    notes.append(f"rotated/flipped by EXIF orientation {orientation}")
    return ImageOps.exif_transpose(image)


def _to_rgb_array(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> uint8 RGB array, rescaling rather than clipping high bit depths."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _WITH_ALPHA:
        # Transparent areas become white, like the empty glass of a slide.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append(f"{mode} transparency flattened onto white")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode in _HIGH_BIT_DEPTH or mode == "F":
        gray = _rescale_to_uint8(np.asarray(image), mode, notes)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        notes.append(f"converted from {mode} to RGB")
    return np.asarray(image.convert("RGB"))


def _rescale_to_uint8(values: np.ndarray, mode: str, notes: list[str]) -> np.ndarray:
    """Map 16/32-bit integer or float grayscale to 0..255 (Pillow's own convert clips)."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and 255 < high <= 65535 and low >= 0):
        scaled, how = values / 257.0, "16-bit grayscale scaled to 8 bits"
    elif mode == "F" and low >= 0 and high <= 1:
        scaled, how = values * 255.0, "float grayscale in [0, 1] scaled to 8 bits"
    elif low >= 0 and high <= 255:
        scaled, how = values, f"{mode} grayscale read as 8-bit values"
    else:
        span = high - low or 1.0
        scaled, how = (values - low) / span * 255.0, f"{mode} grayscale stretched to 8 bits"
    notes.append(how)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
