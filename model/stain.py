"""Stain normalisation: make an image's H&E colours look like the training images'.

H&E colour differs between labs, scanners and staining batches. A model trained on one lab's
slides (BreakHis comes from one) sees another lab's colours as new images. A stain normaliser
maps an image's colours onto a *reference* fitted on representative training images; the
reference travels in the model's input contract (:class:`~model.config.InputSpec`), so the
app, the batch path and training apply the very same mapping.

Two methods, through `torchstain <https://github.com/EIDOSLAB/torchstain>`_ (numpy backend):

* ``"macenko"`` (Macenko et al., ISBI 2009): the image's two stain vectors (haematoxylin and
  eosin) are estimated from the optical densities of its tissue pixels; the image is unmixed
  into stain concentrations, rescaled to the reference's maximum concentrations and re-mixed
  with the reference's stain vectors.
* ``"reinhard"`` (Reinhard et al. 2001): the mean and standard deviation of each LAB channel
  of the tissue pixels are matched to the reference's.

Statistics are taken on the **tissue mask** (:func:`tissue_mask`: pixels whose optical
density is at least ``beta`` in every channel, Macenko's own definition), never on the glass;
the fitted mapping is then applied to every pixel.

Normalisation runs where the whole contract runs it: on the image resized to the network
input (144x96), after :func:`~model.preprocessing.resize_to_input` and before the ResNet
normalisation. Training normalises its cached, resized images with the same function.

Failures never crash and never pass silently. Macenko's eigen-decomposition is undefined or
meaningless on mostly-background, near-white, grayscale or tiny images (known failures in
torchstain, PathML and StainTools); :func:`normalise_stain` detects them before and after the
fit and returns the image unchanged with a note saying why.

Example:
    >>> import numpy as np
    >>> white = np.full((96, 144, 3), 250, np.uint8)
    >>> outcome = normalise_stain(white, default_reference("macenko"))
    >>> outcome.applied, outcome.note
    (False, 'stain normalisation (Macenko) skipped: too little tissue (0% of the image; needs 5%)')
    >>> bool((outcome.pixels == white).all())
    True
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

StainMethod = Literal["none", "macenko", "reinhard"]
STAIN_METHODS: dict[str, str] = {"none": "none", "macenko": "Macenko", "reinhard": "Reinhard"}
"""Stain normalisation methods (key -> display name)."""

TRANSMITTED_LIGHT = 240
"""Macenko's ``Io``: the intensity of light through glass (torchstain's default)."""
TISSUE_OPTICAL_DENSITY = 0.15
"""Macenko's ``beta``: a pixel is tissue when its optical density is at least this in every
channel (below it in any channel the pixel is nearly transparent: glass)."""
ANGLE_PERCENTILE = 1.0
"""Macenko's ``alpha``: the robust extremes (1st/99th percentiles) of the stain angles."""
MIN_TISSUE_FRACTION = 0.05
"""Below 5% tissue, an image's stain statistics are those of a handful of pixels."""
MIN_TISSUE_PIXELS = 200
MIN_COLOURFULNESS = 0.08
"""Mean chroma of the tissue's optical densities (their spread across channels relative to
their size); grayscale tissue has 0, H&E about 0.3-0.6. Below it no stain vectors exist."""
MIN_STAIN_ANGLE_DEGREES = 3.0
"""Haematoxylin and eosin vectors closer than this are one colour, not two stains."""


@dataclass(frozen=True)
class StainReference:
    """A fitted stain normalisation target, stored in the model's input contract.

    Attributes:
        method: ``"macenko"`` or ``"reinhard"``.
        stain_matrix: Macenko: the optical densities (R, G, B) of haematoxylin and of eosin,
            ``((h_r, e_r), (h_g, e_g), (h_b, e_b))`` as torchstain's ``HERef``.
        max_concentrations: Macenko: the 99th percentile of each stain's concentration.
        lab_means, lab_stds: Reinhard: per-channel LAB statistics of the tissue (L in 0..100).
        fitted_on: how the reference was chosen ("32 training images of 16 patients...").

    Example:
        >>> ref = default_reference("macenko")
        >>> StainReference.from_dict(ref.to_dict()) == ref
        True
    """

    method: Literal["macenko", "reinhard"]
    stain_matrix: tuple[tuple[float, float], ...] | None = None
    max_concentrations: tuple[float, float] | None = None
    lab_means: tuple[float, float, float] | None = None
    lab_stds: tuple[float, float, float] | None = None
    fitted_on: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainReference:
        """Inverse of :meth:`to_dict` (JSON lists become tuples)."""
        data = dict(data)
        if data.get("stain_matrix") is not None:
            rows = data["stain_matrix"]
            data["stain_matrix"] = tuple(tuple(float(v) for v in row) for row in rows)
        for key in ("max_concentrations", "lab_means", "lab_stds"):
            if data.get(key) is not None:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)

    @property
    def display_name(self) -> str:
        return STAIN_METHODS[self.method]

    def reference_colours(self) -> dict[str, tuple[int, int, int]]:
        """The colours a person would recognise the reference by (RGB 0..255).

        Macenko: pure haematoxylin and pure eosin at their maximum concentration.
        Reinhard: the mean tissue colour and the colours one standard deviation of lightness
        darker and lighter.

        Example:
            >>> default_reference("macenko").reference_colours()["haematoxylin"]
            (79, 58, 108)
        """
        if self.method == "macenko":
            matrix, maximum = np.asarray(self.stain_matrix), np.asarray(self.max_concentrations)
            colours = {}
            for k, name in enumerate(("haematoxylin", "eosin")):
                rgb = TRANSMITTED_LIGHT * np.exp(-matrix[:, k] * maximum[k])
                colours[name] = tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))
            return colours
        means, stds = np.asarray(self.lab_means), np.asarray(self.lab_stds)
        shades = {"mean tissue": means}
        lightness = np.array([stds[0], 0.0, 0.0])
        shades["darker (-1 SD lightness)"] = means - lightness
        shades["lighter (+1 SD lightness)"] = means + lightness
        return {name: _lab_to_rgb255(lab) for name, lab in shades.items()}

    def describe(self) -> str:
        """One line for a model card page.

        Example:
            >>> default_reference("reinhard").describe()[:38]
            'Reinhard (LAB mean/std of the tissue) '
        """
        how = (
            "stain vectors and maximum concentrations"
            if self.method == "macenko"
            else "LAB mean/std of the tissue"
        )
        fitted = f"fitted on {self.fitted_on}" if self.fitted_on else "torchstain's default target"
        return f"{self.display_name} ({how}) {fitted}"


@dataclass(frozen=True)
class StainOutcome:
    """What :func:`normalise_stain` did to one image.

    Attributes:
        pixels: the normalised image, or the input unchanged when skipped (uint8 h x w x 3).
        applied: whether the normaliser changed the image.
        note: why it was skipped (``None`` when applied).
    """

    pixels: np.ndarray
    applied: bool
    note: str | None = None


# --- the tissue and its optical densities -------------------------------------------------
def optical_density(pixels: np.ndarray) -> np.ndarray:
    """Beer-Lambert optical density of RGB pixels, as torchstain computes it: (..., 3)."""
    return -np.log((pixels.astype(np.float64) + 1.0) / TRANSMITTED_LIGHT)


def tissue_mask(pixels: np.ndarray, beta: float = TISSUE_OPTICAL_DENSITY) -> np.ndarray:
    """Tissue pixels (not glass): optical density at least ``beta`` in every channel.

    Example:
        >>> import numpy as np
        >>> tissue_mask(np.array([[[250, 250, 250], [150, 60, 140]]], np.uint8)).tolist()
        [[False, True]]
    """
    return np.all(optical_density(pixels) >= beta, axis=-1)


def tissue_problem(pixels: np.ndarray) -> str | None:
    """Why an image's stains cannot be estimated (``None`` when they can).

    Too small, too little tissue, or no colour in the tissue (grayscale).
    """
    height, width = pixels.shape[:2]
    if height * width < MIN_TISSUE_PIXELS:
        return f"image too small ({width}x{height} pixels)"
    mask = tissue_mask(pixels)
    fraction = float(mask.mean())
    if fraction < MIN_TISSUE_FRACTION or int(mask.sum()) < MIN_TISSUE_PIXELS:
        return f"too little tissue ({fraction:.0%} of the image; needs {MIN_TISSUE_FRACTION:.0%})"
    density = optical_density(pixels[mask])
    chroma = (density.max(axis=1) - density.min(axis=1)) / np.maximum(density.max(axis=1), 1e-6)
    colourfulness = float(chroma.mean())
    if colourfulness < MIN_COLOURFULNESS:
        return f"no stain colours in the tissue (grayscale-like: chroma {colourfulness:.2f})"
    return None


# --- fitting ------------------------------------------------------------------------------
def default_reference(method: Literal["macenko", "reinhard"]) -> StainReference:
    """torchstain's built-in target (Macenko's published H&E reference; for Reinhard, the
    LAB statistics of those two stains' mixture), for tests and for comparison."""
    if method == "macenko":
        return StainReference(
            "macenko",
            stain_matrix=((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)),
            max_concentrations=(1.9705, 1.0308),
        )
    return StainReference("reinhard", lab_means=(62.0, 28.0, -14.0), lab_stds=(14.0, 8.0, 6.0))


def fit_reference(
    images: Sequence[np.ndarray] | np.ndarray,
    method: Literal["macenko", "reinhard"],
    fitted_on: str = "",
) -> StainReference:
    """Fit a reference on the pooled tissue pixels of representative images.

    Images whose tissue cannot be used (:func:`tissue_problem`) are left out; a
    ``ValueError`` says so when none is left.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> tiles = [synthetic_he_tile(rng) for _ in range(4)]
        >>> fit_reference(tiles, "macenko").method
        'macenko'
    """
    usable = [image for image in images if tissue_problem(image) is None]
    if not usable:
        raise ValueError(
            f"no image with enough coloured tissue to fit a {STAIN_METHODS[method]} reference "
            f"(of {len(images)} given)"
        )
    tissue = np.concatenate([image[tissue_mask(image)] for image in usable])[:, None, :]
    if method == "macenko":
        with _numerical_errors_raised():
            matrix, maximum = _fit_macenko(tissue)
        problem = _stain_matrix_problem(matrix, maximum)
        if problem:
            raise ValueError(f"the Macenko reference is unusable: {problem}")
        return StainReference(
            "macenko",
            stain_matrix=tuple((float(h), float(e)) for h, e in matrix),
            max_concentrations=(float(maximum[0]), float(maximum[1])),
            fitted_on=fitted_on,
        )
    means, stds = _lab_statistics(tissue)
    return StainReference(
        "reinhard",
        lab_means=tuple(float(v) for v in means),  # type: ignore[arg-type]
        lab_stds=tuple(float(v) for v in stds),  # type: ignore[arg-type]
        fitted_on=fitted_on,
    )


def choose_reference_images(
    labels: np.ndarray, patients: np.ndarray, count: int = 32, seed: int = 0
) -> np.ndarray:
    """Row positions of representative images to fit a reference on: up to ``count`` images,
    half from each class where possible, one per patient in turn (so no patient's staining
    dominates), chosen at random with ``seed``.

    Example:
        >>> import numpy as np
        >>> patients = np.array(["a", "b", "c", "c", "d"])
        >>> rows = choose_reference_images(np.array([0, 0, 1, 1, 1]), patients, count=4)
        >>> sorted(patients[rows].tolist())  # two per class, one patient at a time
        ['a', 'b', 'c', 'd']
    """
    rng = np.random.default_rng(seed)
    labels, patients = np.asarray(labels), np.asarray(patients).astype(str)
    classes = np.unique(labels)
    per_class = (
        {c: count // len(classes) + (i < count % len(classes)) for i, c in enumerate(classes)}
        if len(classes)
        else {}
    )
    chosen: list[int] = []
    for value, wanted in per_class.items():
        rows = np.flatnonzero(labels == value)
        by_patient: dict[str, list[int]] = {}
        for row in rng.permutation(rows):
            by_patient.setdefault(patients[row], []).append(int(row))
        queues = [by_patient[p] for p in rng.permutation(sorted(by_patient))]
        taken: list[int] = []
        while len(taken) < wanted and any(queues):
            for queue in queues:
                if queue and len(taken) < wanted:
                    taken.append(queue.pop(0))
        chosen += taken
    return np.array(sorted(chosen), dtype=np.int64)


# --- normalising --------------------------------------------------------------------------
def normalise_stain(pixels: np.ndarray, reference: StainReference) -> StainOutcome:
    """Map one RGB image's stains onto ``reference``; never raises for an image.

    Returns the image unchanged, with a note, when its stains cannot be estimated
    (:func:`tissue_problem`), when the estimate is nonsense (stain vectors with negative
    densities, or H and E pointing the same way), or when the arithmetic fails.
    """
    name = STAIN_METHODS[reference.method]
    problem = tissue_problem(pixels)
    if problem is None:
        try:
            with _numerical_errors_raised():
                if reference.method == "macenko":
                    normalised, problem = _macenko(pixels, reference)
                else:
                    normalised, problem = _reinhard(pixels, reference), None
            if problem is None and not np.isfinite(normalised).all():
                problem = "the result was not finite"
        except (np.linalg.LinAlgError, FloatingPointError, ValueError, RuntimeWarning) as error:
            problem = f"the estimate failed ({type(error).__name__}: {error})"
    if problem is not None:
        return StainOutcome(pixels, False, f"stain normalisation ({name}) skipped: {problem}")
    return StainOutcome(np.clip(np.rint(normalised), 0, 255).astype(np.uint8), True)


def estimate_stain_matrix(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """An image's own Macenko stain vectors (3, 2) and maximum concentrations (2,), from its
    tissue pixels; ``None`` when they cannot be estimated (see :func:`normalise_stain`)."""
    if tissue_problem(pixels) is not None:
        return None
    try:
        with _numerical_errors_raised():
            matrix, maximum = _fit_macenko(pixels[tissue_mask(pixels)])
    except (np.linalg.LinAlgError, FloatingPointError, ValueError, RuntimeWarning):
        return None
    if _stain_matrix_problem(matrix, maximum):
        return None
    return matrix, maximum


# Optical densities of haematoxylin, eosin and DAB (rows), as scikit-image's rgb_from_hed
# (Ruifrok & Johnston 2001), the third completed to an orthonormal-ish basis by their cross
# product. The training pipeline's HED jitter and :func:`restain` share them.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED[2] = np.cross(RGB_FROM_HED[0], RGB_FROM_HED[1])
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def restain(
    pixels: np.ndarray,
    hematoxylin_shift: Sequence[float] = (0.0, 0.0, 0.0),
    eosin_shift: Sequence[float] = (0.0, 0.0, 0.0),
    hematoxylin_scale: float = 1.0,
    eosin_scale: float = 1.0,
) -> np.ndarray:
    """The image as another lab would have stained it (for tests and the evidence script):
    unmixed into H, E and DAB with the Ruifrok matrix, each stain's amount scaled, re-mixed
    with H and E vectors moved by the given shifts (then renormalised).

    With no shift and unit scales it is the image through the same unmix/re-mix (the
    fair original to compare with: both went through the same rounding).

    Example:
        >>> import numpy as np
        >>> tile = synthetic_he_tile(np.random.default_rng(0))
        >>> stain_distance(restain(tile), tile) < 1.0
        True
        >>> stain_distance(restain(tile, hematoxylin_scale=1.5), tile) > 3.0
        True
    """
    density = -np.log(np.maximum(pixels.astype(np.float64), 1.0) / 255.0)
    amounts = density.reshape(-1, 3) @ HED_FROM_RGB
    amounts *= np.array([hematoxylin_scale, eosin_scale, 1.0])
    mixing = RGB_FROM_HED.copy()
    mixing[0] = np.abs(mixing[0] + np.asarray(hematoxylin_shift))
    mixing[1] = np.abs(mixing[1] + np.asarray(eosin_shift))
    mixing[:2] /= np.linalg.norm(mixing[:2], axis=1, keepdims=True)
    remixed = 255.0 * np.exp(-(amounts @ mixing))
    return np.clip(np.rint(remixed), 0, 255).reshape(pixels.shape).astype(np.uint8)


def stain_distance(pixels: np.ndarray, reference: np.ndarray) -> float:
    """Mean CIELAB colour difference (Delta E 1976) between two images of the same tissue,
    over the reference's tissue pixels (all pixels when it has none)."""
    from torchstain.numpy.utils import lab_split, rgb2lab

    def lab(image: np.ndarray) -> np.ndarray:
        return np.stack(lab_split(rgb2lab(image.astype(np.float32) / 255.0)), axis=-1)

    mask = tissue_mask(reference)
    difference = np.linalg.norm(lab(pixels) - lab(reference), axis=-1)
    return float(difference[mask].mean() if mask.any() else difference.mean())


def synthetic_he_tile(rng: np.random.Generator, size: tuple[int, int] = (96, 144)) -> np.ndarray:
    """A small H&E-like tile (nuclei of haematoxylin on eosin stroma, some glass) made with
    the Ruifrok H and E vectors: for doctests and tests that need colour, not a diagnosis."""
    height, width = size
    hematoxylin = np.array([0.65, 0.70, 0.29])
    eosin = np.array([0.07, 0.99, 0.11])
    yy, xx = np.mgrid[0:height, 0:width]
    h = np.zeros((height, width))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 10)
        h += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    e = 0.35 + 0.25 * rng.random((height, width))
    e[: height // 6] = 0.0  # a strip of glass
    h[: height // 6] = 0.0
    density = h[..., None] * hematoxylin + e[..., None] * eosin
    return np.clip(255 * np.exp(-density), 0, 255).astype(np.uint8)


# --- helpers ------------------------------------------------------------------------------
def _macenko(pixels: np.ndarray, reference: StainReference) -> tuple[np.ndarray, str | None]:
    """Unmix with the image's own stain vectors (fitted on its tissue), re-mix with the
    reference's. Same arithmetic as torchstain's ``normalize``, with the statistics taken on
    the tissue only and two clamps (below)."""
    matrix, maximum = _fit_macenko(pixels[tissue_mask(pixels)])
    problem = _stain_matrix_problem(matrix, maximum)
    if problem:
        return pixels, problem
    # Brighter than the modelled light (glass above 240) is no stain, not negative stain;
    # and a negative amount of a stain is an unmixing artefact. Without both clamps such
    # pixels come back in colours no slide has (cyan specks on the glass, seen on the sample).
    density = np.maximum(optical_density(pixels), 0.0).reshape(-1, 3).T  # (3, n)
    concentrations = np.maximum(np.linalg.pinv(matrix) @ density, 0.0)  # least squares
    scale = maximum / np.asarray(reference.max_concentrations)
    remixed = TRANSMITTED_LIGHT * np.exp(
        -np.asarray(reference.stain_matrix) @ (concentrations / scale[:, None])
    )
    return remixed.T.reshape(pixels.shape), None


def _reinhard(pixels: np.ndarray, reference: StainReference) -> np.ndarray:
    """Match the LAB mean/std of the tissue pixels to the reference's (torchstain's LAB
    conversions), applied to every pixel."""
    from torchstain.numpy.utils import lab2rgb, lab_merge, lab_split, rgb2lab

    lab = rgb2lab(pixels.astype(np.float32) / 255.0)
    channels = lab_split(lab)
    means, stds = _lab_statistics(pixels[tissue_mask(pixels)][:, None, :])
    matched = [
        (channel - mean) / max(std, 1e-6) * target_std + target_mean
        for channel, mean, std, target_mean, target_std in zip(
            channels, means, stds, reference.lab_means, reference.lab_stds, strict=True
        )
    ]
    return lab2rgb(lab_merge(*matched)) * 255.0


def _lab_statistics(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from torchstain.numpy.utils import lab_split, rgb2lab

    channels = lab_split(rgb2lab(pixels.astype(np.float32) / 255.0))
    return (
        np.array([float(np.mean(c)) for c in channels]),
        np.array([float(np.std(c)) for c in channels]),
    )


def _lab_to_rgb255(lab: np.ndarray) -> tuple[int, int, int]:
    from torchstain.numpy.utils import lab2rgb, lab_merge

    merged = lab_merge(*[np.array([[float(v)]], np.float32) for v in lab])
    rgb = lab2rgb(merged)[0, 0] * 255.0
    return tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))  # type: ignore[return-value]


def _stain_matrix_problem(matrix: np.ndarray, maximum: np.ndarray) -> str | None:
    """Why a Macenko estimate is nonsense, or ``None``."""
    if not (np.isfinite(matrix).all() and np.isfinite(maximum).all()):
        return "the stain vectors were not finite"
    if (matrix < -0.05).any():
        return "a stain vector had negative optical densities"
    if (maximum <= 1e-3).any():
        return "a stain was absent"
    cosine = float(matrix[:, 0] @ matrix[:, 1] / np.prod(np.linalg.norm(matrix, axis=0)))
    if np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) < MIN_STAIN_ANGLE_DEGREES:
        return "the two stain vectors were the same colour"
    return None


def _fit_macenko(tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchstain's Macenko fit on tissue pixels (any shape ending in 3): the stain vectors
    (3, 2) and the maximum concentrations (2,)."""
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    normaliser = NumpyMacenkoNormalizer()
    normaliser.fit(
        tissue.reshape(-1, 1, 3),
        Io=TRANSMITTED_LIGHT,
        alpha=ANGLE_PERCENTILE,
        beta=TISSUE_OPTICAL_DENSITY,
    )
    return np.asarray(normaliser.HERef), np.asarray(normaliser.maxCRef)


_BLAS_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def _numerical_errors_raised() -> Iterator[None]:
    """Turn NumPy's silent NaN-producing warnings (empty percentile, degenerate covariance)
    into exceptions, so a failed estimate is caught rather than served; and run on one BLAS
    thread: these 3x3 and 3xN products are too small to share, and OpenBLAS's threads waiting
    on a busy 2-core machine made one normalisation 16 ms instead of 3 (measured). The lock
    keeps concurrent callers from restoring each other's thread counts out of order."""
    with (
        _BLAS_LOCK,
        _blas_controller().limit(limits=1, user_api="blas"),
        np.errstate(divide="raise", invalid="raise", over="raise"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error", RuntimeWarning)
        yield
