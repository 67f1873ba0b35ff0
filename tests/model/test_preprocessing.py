"""The preprocessing contract: every mode becomes RGB, every bad input a specific error."""

from __future__ import annotations

import struct
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from model.config import InputSpec
from model.errors import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
)
from model.preprocessing import (
    decode_image,
    load_image_file,
    normalise,
    preprocess,
    resize_to_input,
    to_model_input,
)
from tests.model.conftest import png_bytes, tissue_like

SPEC = InputSpec()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but whose pixel data is a stub (bomb-guard tests)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


# --- the happy path -----------------------------------------------------------------------
def test_rgb_png_decodes_unchanged():
    image = tissue_like(70, 46)
    decoded = decode_image(png_bytes(image))
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (46, 70, 3)
    assert np.array_equal(decoded.pixels, np.asarray(image))
    assert decoded.format == "PNG" and decoded.original_mode == "RGB" and decoded.notes == ()


def test_resize_uses_antialiased_bilinear_to_input_size():
    image = tissue_like(700, 460)
    resized = resize_to_input(np.asarray(image), SPEC)
    expected = np.asarray(image.resize((144, 96), Image.Resampling.BILINEAR))
    assert resized.shape == (96, 144, 3)
    assert np.array_equal(resized, expected)


@pytest.mark.parametrize(
    "interpolation, pillow_filter",
    [
        ("bilinear", Image.Resampling.BILINEAR),
        ("bicubic", Image.Resampling.BICUBIC),
        ("lanczos", Image.Resampling.LANCZOS),
        ("nearest", Image.Resampling.NEAREST),
    ],
)
def test_resize_and_preprocess_follow_the_configured_interpolation(interpolation, pillow_filter):
    """Each configured filter is the one used, in the resize and in the whole preprocessing;
    the filters give different pixels on tissue, so a resize that ignored the setting fails."""
    image = tissue_like(700, 460)
    spec = InputSpec(interpolation=interpolation)
    expected = np.asarray(image.resize((144, 96), pillow_filter))
    assert np.array_equal(resize_to_input(np.asarray(image), spec), expected)
    others = [
        np.asarray(image.resize((144, 96), other))
        for other in Image.Resampling
        if other in ALL_FILTERS and other != pillow_filter
    ]
    assert all(not np.array_equal(expected, other) for other in others)
    served = preprocess(png_bytes(image), spec)
    assert np.allclose(served, normalise(expected, spec))


ALL_FILTERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.NEAREST,
)


def test_normalise_matches_keras_resnet50_preprocess_input():
    pixels = np.asarray(tissue_like(144, 96)).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(pixels.copy())
    assert np.allclose(normalise(pixels, SPEC), expected, atol=1e-4)


def test_normalise_runs_on_tensors_too():
    import tensorflow as tf

    pixels = np.asarray(tissue_like(144, 96)).astype(np.float32)
    as_tensor = normalise(tf.constant(pixels), SPEC)
    assert isinstance(as_tensor, tf.Tensor)
    assert np.allclose(as_tensor.numpy(), normalise(pixels, SPEC))


def test_preprocess_chains_decode_resize_normalise():
    data = png_bytes(tissue_like())
    x = preprocess(data, SPEC)
    assert x.shape == SPEC.shape and x.dtype == np.float32
    assert np.array_equal(x, to_model_input(decode_image(data), SPEC))


# --- odd modes ----------------------------------------------------------------------------
def test_sixteen_bit_grayscale_is_rescaled_not_clipped():
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    decoded = decode_image(png_bytes(Image.fromarray(values)))
    assert decoded.original_mode.startswith("I")
    assert decoded.pixels[0, :, 0].tolist() == [0, 128, 255]
    assert np.array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])
    assert decoded.is_grayscale_source
    assert any("16-bit" in note for note in decoded.notes)


def test_rgba_is_flattened_onto_white():
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:5] = (200, 50, 100, 255)  # opaque top half
    decoded = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert decoded.pixels[0, 0].tolist() == [200, 50, 100]
    assert decoded.pixels[9, 9].tolist() == [255, 255, 255]
    assert any("transparency" in note for note in decoded.notes)


def test_grayscale_becomes_three_equal_channels():
    decoded = decode_image(png_bytes(Image.new("L", (20, 10), 77)))
    assert decoded.pixels.shape == (10, 20, 3)
    assert set(np.unique(decoded.pixels)) == {77}
    assert decoded.is_grayscale_source


def test_palette_with_transparency_is_flattened():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    palette.info["transparency"] = 0
    decoded = decode_image(png_bytes(palette, transparency=0))
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(png_bytes(cmyk, format="JPEG", quality=95))
    assert decoded.original_mode == "CMYK" and decoded.pixels.shape == (16, 16, 3)
    red, green, blue = decoded.pixels[8, 8].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_one_bit_and_float_tiff():
    one_bit = decode_image(png_bytes(Image.new("1", (9, 9), 1)))
    assert set(np.unique(one_bit.pixels)) == {255}
    floats = Image.fromarray(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), "F")
    decoded = decode_image(png_bytes(floats, format="TIFF"))
    assert decoded.pixels[0, 0, 0] == 0 and decoded.pixels[-1, -1, 0] == 255


def test_multiframe_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = png_bytes(frames[0], format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data)
    assert decoded.pixels[0, 0, 0] > 200
    assert any("first of 2 frames" in note for note in decoded.notes)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 40), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 30, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(png_bytes(image, format="JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.pixels.shape == (60, 40, 3)  # portrait after rotation
    top, bottom = decoded.pixels[2, 20], decoded.pixels[-3, 20]
    assert top[0] > 200 and top[1] < 60  # turning clockwise brings the red left half on top
    assert bottom[0] > 200 and bottom[1] > 200  # and the white right half to the bottom
    assert any("EXIF" in note for note in decoded.notes)


# --- bad input: each a specific, readable error --------------------------------------------
def test_empty_bytes():
    with pytest.raises(EmptyImageError, match="empty file"):
        decode_image(b"")


def test_not_an_image():
    with pytest.raises(NotAnImageError, match="not an image"):
        decode_image(b"patient,label\n14-2523,malignant\n")


def test_truncated_png_from_a_real_image(breakhis_sample_images):
    data = breakhis_sample_images[0].read_bytes()
    with pytest.raises(TruncatedImageError, match="truncated or damaged PNG"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_refused_from_header():
    with pytest.raises(ImageTooLargeError, match=r"image too large: 40000x40000"):
        decode_image(_png_header_only(40000, 40000))


def test_byte_limit():
    with pytest.raises(ImageTooLargeError, match="file too large"):
        decode_image(png_bytes(tissue_like(70, 46)), max_bytes=100)


def test_all_image_errors_share_one_base_class():
    for bad in (b"", b"not an image", _png_header_only(40000, 40000)):
        with pytest.raises(ImageError):
            decode_image(bad)


def test_resize_rejects_wrong_arrays():
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_to_input(np.zeros((10, 10), np.uint8), SPEC)


# --- the real sample ----------------------------------------------------------------------
def test_real_breakhis_images_decode_as_700x460_rgb(breakhis_sample_images):
    assert len(breakhis_sample_images) == 34
    for path in breakhis_sample_images:
        decoded = load_image_file(path)
        assert decoded.pixels.shape == (460, 700, 3), path.name
        assert decoded.original_mode == "RGB" and decoded.notes == ()
        x = to_model_input(decoded, SPEC)
        assert x.shape == (96, 144, 3) and np.isfinite(x).all()
        expected = keras.applications.resnet50.preprocess_input(
            np.asarray(Image.open(path).convert("RGB").resize((144, 96), Image.BILINEAR), "float32")
        )
        assert np.allclose(x, expected, atol=1e-4)


# --- decoding large images smaller (reduce_to) ----------------------------------------------
def _large_from_real(path, size=(4800, 3600), **save_args) -> bytes:
    """A real BreakHis frame enlarged to a camera-sized image (Lanczos), then encoded."""
    image = Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return png_bytes(image, **save_args)


@pytest.mark.parametrize("save_args", [{"format": "JPEG", "quality": 90}, {"compress_level": 1}])
def test_large_image_decoded_smaller_keeps_its_size_and_network_input(
    breakhis_sample_images, save_args
):
    data = _large_from_real(breakhis_sample_images[0], **save_args)
    full = decode_image(data)
    reduced = decode_image(data, reduce_to=1400)
    assert full.pixels.shape == (3600, 4800, 3) and full.source_size is None
    assert 1400 <= max(reduced.pixels.shape[:2]) < 4800 // 2 + 1
    assert reduced.source_size == (4800, 3600) == reduced.full_size == full.full_size
    assert reduced.notes == full.notes == ()
    # The network input from the smaller decode is within one grey level of the full one.
    difference = np.abs(to_model_input(reduced, SPEC) - to_model_input(full, SPEC))
    assert difference.max() <= 1.0 + 1e-4 and difference.mean() < 0.2


def test_reduce_to_leaves_breakhis_sized_and_narrow_images_alone(breakhis_sample_images):
    data = breakhis_sample_images[0].read_bytes()
    assert np.array_equal(decode_image(data, reduce_to=1400).pixels, decode_image(data).pixels)
    assert decode_image(data, reduce_to=1400).source_size is None
    # A 6000x300 strip would reach the tiny-image checks if its long side went to 1400.
    strip = decode_image(png_bytes(tissue_like(6000, 300), format="JPEG"), reduce_to=1400)
    assert strip.pixels.shape[0] >= 256 and strip.full_size == (6000, 300)


def test_reduced_decode_follows_exif_orientation():
    image = tissue_like(4000, 1000)
    exif = Image.Exif()
    exif[0x0112] = 6  # portrait after turning
    data = png_bytes(image, format="JPEG", exif=exif.tobytes(), quality=90)
    reduced = decode_image(data, reduce_to=1400)
    assert reduced.pixels.shape[0] > reduced.pixels.shape[1]  # turned
    assert reduced.pixels.shape[1] < 1000 and reduced.full_size == (1000, 4000)
