"""Synthetic BreakHis-like datasets in the official archive layout: for the tests, the
benchmarks, and for trying the training pipeline offline (``python -m train.synthetic``).
They are NOT histopathology: a model trained on them means nothing clinically.

The images imitate H&E tissue only coarsely: a pink, slightly mottled background with dark
purple "nuclei" (filled ellipses). The class carries a learnable signal that a small CNN
picks up within a few epochs: malignant tiles have many more, larger, more crowded and darker
nuclei than benign ones, on a slightly more lilac background. Every patient gets its own stain
shift and every tile its own nucleus count, size and noise, so the task is clear but not a
single-pixel giveaway. Checked: a two-layer CNN (8 and 16 filters, global average pooling) on
700x460 tiles resized to 144x96 and scaled to [-1, 1] reaches 0.94-1.0 accuracy on held-out
patients after 10 epochs on 4 training patients per class (two dataset seeds, three model seeds).

Example::

    python -m train.synthetic --dest /tmp/synthetic --patients-per-class 4
    python -m train.run --preset smoke --data /tmp/synthetic

    from train.synthetic import make_synthetic_breakhis
    root = make_synthetic_breakhis("/tmp/fake", patients_per_class=4, images_per_magnification=2)
    # root / "BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/..."

Benchmarks can ask for the size of the real dataset with ``total_images=7909``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BENIGN_SUBTYPES = ("A", "F", "PT", "TA")
MALIGNANT_SUBTYPES = ("DC", "LC", "MC", "PC")
SUBTYPE_FOLDERS = {
    "A": "adenosis",
    "F": "fibroadenoma",
    "PT": "phyllodes_tumor",
    "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma",
    "LC": "lobular_carcinoma",
    "MC": "mucinous_carcinoma",
    "PC": "papillary_carcinoma",
}
MAGNIFICATIONS = (40, 100, 200, 400)

# Nuclei per 700x460 tile and radius range in pixels at 700 px width.
_NUCLEI = {
    0: {"count": (10, 35), "radius": (3.5, 7.0), "darkness": (0.55, 0.8)},
    1: {"count": (70, 130), "radius": (8.0, 15.0), "darkness": (0.75, 0.95)},
}
# Higher magnification shows fewer, bigger nuclei; the class contrast stays the same.
_MAGNIFICATION_SCALE = {40: 0.8, 100: 0.9, 200: 1.0, 400: 1.15}
# Eosin-pink background; malignant tissue is a little more lilac (denser haematoxylin), by
# about one patient-to-patient stain shift, so colour helps but does not decide alone.
_BACKGROUND = {0: np.array([236.0, 186.0, 208.0]), 1: np.array([222.0, 176.0, 214.0])}
_NUCLEUS = np.array([88.0, 48.0, 132.0])  # haematoxylin purple


@dataclass(frozen=True)
class SyntheticPatient:
    """One synthetic patient: id, label and subtype code."""

    patient: str
    label: int
    subtype: str


def synthetic_patients(patients_per_class: int) -> list[SyntheticPatient]:
    """Patients of both classes with subtypes spread over the 8 BreakHis subtypes.

    Ids follow the real pattern (``14-<digits>[letters]``); every third one carries letters.

    Example:
        >>> [p.patient for p in synthetic_patients(2)]
        ['14-10000', '14-10001', '14-20000', '14-20001']
    """
    patients = []
    for label, subtypes, base in ((0, BENIGN_SUBTYPES, 10000), (1, MALIGNANT_SUBTYPES, 20000)):
        for number in range(patients_per_class):
            suffix = "CD" if number % 3 == 2 else ""
            patients.append(
                SyntheticPatient(f"14-{base + number}{suffix}", label, subtypes[number % 4])
            )
    return patients


def render_tile(
    rng: np.random.Generator,
    label: int,
    size: tuple[int, int] = (700, 460),
    magnification: int = 200,
    stain_shift: np.ndarray | None = None,
) -> np.ndarray:
    """One synthetic H&E-like RGB tile (height x width x 3, uint8).

    Example:
        >>> tile = render_tile(np.random.default_rng(0), label=1, size=(70, 46))
        >>> tile.shape, tile.dtype
        ((46, 70, 3), dtype('uint8'))
    """
    width, height = size
    shift = np.zeros(3) if stain_shift is None else stain_shift
    # Mottled background: a coarse 8x12 noise grid upsampled, so tiles look like tissue, not
    # static, and the mottle has the same scale at any image size (it stays smoother than the
    # nuclei after the model's downscaling to 144x96).
    coarse = rng.normal(0.0, 10.0, size=(8, 12, 3))
    mottle = (
        np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
                (width, height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        - 128.0
    )
    tile = (_BACKGROUND[label] + shift).astype(np.float32) + mottle

    spec = _NUCLEI[label]
    scale = width / 700.0 * _MAGNIFICATION_SCALE[magnification]
    count = int(rng.integers(*spec["count"]) / _MAGNIFICATION_SCALE[magnification] ** 2)
    rows, cols = np.ogrid[:height, :width]
    for _ in range(count):
        radius_y = rng.uniform(*spec["radius"]) * scale
        radius_x = radius_y * rng.uniform(0.7, 1.3)
        center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
        top, bottom = (
            int(max(0, center_y - radius_y - 1)),
            int(min(height, center_y + radius_y + 2)),
        )
        left, right = int(max(0, center_x - radius_x - 1)), int(min(width, center_x + radius_x + 2))
        if top >= bottom or left >= right:
            continue
        inside = ((rows[top:bottom] - center_y) / max(radius_y, 0.5)) ** 2 + (
            (cols[:, left:right] - center_x) / max(radius_x, 0.5)
        ) ** 2 <= 1.0
        darkness = rng.uniform(*spec["darkness"])
        patch = tile[top:bottom, left:right]
        nucleus_colour = _NUCLEUS + shift * 0.5
        patch[inside] = patch[inside] * (1 - darkness) + nucleus_colour * darkness
    tile += rng.standard_normal(tile.shape, dtype=np.float32) * 4.0
    return np.clip(tile, 0, 255, out=tile).astype(np.uint8)


def _images_per_cell(
    cells: int, images_per_magnification: int, total_images: int | None
) -> list[int]:
    if total_images is None:
        return [images_per_magnification] * cells
    base, extra = divmod(total_images, cells)
    return [base + (1 if cell < extra else 0) for cell in range(cells)]


def make_synthetic_breakhis(
    root: str | Path,
    patients_per_class: int = 4,
    images_per_magnification: int = 2,
    size: tuple[int, int] = (700, 460),
    seed: int = 0,
    *,
    total_images: int | None = None,
    compress_level: int = 1,
) -> Path:
    """Write a synthetic dataset in the official BreakHis archive layout under ``root``.

    Args:
        root: folder that will contain ``BreaKHis_v1/``.
        patients_per_class: patients per class (subtypes cycle through the 4 of each class).
        images_per_magnification: images per patient and magnification (all 4 magnifications).
        size: (width, height) of every PNG; the real dataset is 700x460.
        seed: everything (patients' stains, tiles) is reproducible from it.
        total_images: when given, spread exactly this many images over the patient x
            magnification cells instead of ``images_per_magnification`` each.
        compress_level: PNG zlib level; 1 keeps writing thousands of images fast.

    Returns:
        ``root`` (give it to ``train.dataset.index_dataset``).

    Example:
        >>> import tempfile
        >>> root = make_synthetic_breakhis(tempfile.mkdtemp(), 2, 1, size=(70, 46))
        >>> len(list(root.rglob("*.png")))   # 4 patients x 4 magnifications x 1 image
        16
    """
    root = Path(root)
    breast = root / "BreaKHis_v1" / "histology_slides" / "breast"
    patients = synthetic_patients(patients_per_class)
    counts = iter(
        _images_per_cell(
            len(patients) * len(MAGNIFICATIONS), images_per_magnification, total_images
        )
    )
    for patient_number, patient in enumerate(patients):
        # One generator per patient: adding patients never changes the existing ones.
        rng = np.random.default_rng([seed, patient_number])
        stain_shift = rng.normal(0.0, 3.0, size=3)
        class_name = "malignant" if patient.label else "benign"
        class_letter = "M" if patient.label else "B"
        patient_folder = (
            breast
            / class_name
            / "SOB"
            / SUBTYPE_FOLDERS[patient.subtype]
            / f"SOB_{class_letter}_{patient.subtype}_{patient.patient}"
        )
        for magnification in MAGNIFICATIONS:
            folder = patient_folder / f"{magnification}X"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(1, next(counts) + 1):
                tile = render_tile(rng, patient.label, size, magnification, stain_shift)
                name = (
                    f"SOB_{class_letter}_{patient.subtype}-{patient.patient}"
                    f"-{magnification}-{number:03d}.png"
                )
                Image.fromarray(tile).save(folder / name, compress_level=compress_level)
    return root


def main(argv: list[str] | None = None) -> int:
    """``python -m train.synthetic --dest DIR``: write a synthetic dataset and say where."""
    parser = argparse.ArgumentParser(
        prog="python -m train.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dest", type=Path, required=True, help="folder to write into")
    parser.add_argument("--patients-per-class", type=int, default=4)
    parser.add_argument("--images-per-magnification", type=int, default=2)
    parser.add_argument("--width", type=int, default=700)
    parser.add_argument("--height", type=int, default=460)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_synthetic_breakhis(
        args.dest,
        args.patients_per_class,
        args.images_per_magnification,
        size=(args.width, args.height),
        seed=args.seed,
    )
    count = sum(1 for _ in root.rglob("*.png"))
    print(f"{count} synthetic images in {root / 'BreaKHis_v1'} (not real tissue)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
