"""Train / validation / test splits of the image index, with a patient-leakage audit each.

The split functions of the protocols (registered, with their titles and options, in
:mod:`train.protocols`):

``paper``
    What the reproduced paper does: train on every 100X, 200X and 400X image, test on every 40X
    image. The same patients appear on both sides (each patient is photographed at all
    magnifications), so test accuracy is optimistic; the audit shows exactly that. An optional
    image-level validation part can be carved out of train (it leaks patients too).
``patient``
    Spanhol et al. 2016: random 70/30 train/test splits over *patients*, stratified by class,
    repeated for 5 folds; a patient-disjoint validation part (20% of the train patients,
    stratified) is carved out of train for model selection and threshold choice. Fold ``k`` is
    reproducible from ``(seed, k)`` alone.
``magnification``
    The patient protocol run separately on each magnification's images.
``kfold``
    Patient-grouped stratified k-fold (scikit-learn ``StratifiedGroupKFold``): the patients are
    dealt into k test folds, so every patient is tested exactly once and test sets never
    overlap (Spanhol's random splits leave some patients untested and test others twice). A
    patient-disjoint validation part is carved out of each fold's training patients as in the
    patient protocol.

Every ``Split`` carries a ``LeakageAudit`` (patients shared between its parts). A run saves
its splits in its folder (``splits.csv``, ``splits.json``: see :mod:`train.run_folder`) so a
resumed run reuses identical splits.

Example:
    >>> from train.dataset import index_dataset
    >>> images = index_dataset("/work/shared/breakhis-sample").images  # doctest: +SKIP
    >>> splits = patient_splits(images, seed=0)                         # doctest: +SKIP
    >>> print(splits[0].audit.describe())                               # doctest: +SKIP
    patient-fold1: train 8 patients / 20 images, ... patient-disjoint: no patient is shared ...
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from train.console import counted, summarise_names, warn_once
from train.dataset import MAGNIFICATIONS, DatasetIndex

logger = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("train", "val", "test")
PAPER_TRAIN_MAGNIFICATIONS: tuple[int, ...] = (100, 200, 400)
PAPER_TEST_MAGNIFICATION = 40
SPLITS_CSV_COLUMNS: tuple[str, ...] = ("name", "protocol", "fold", "magnification", "split", "path")


class SplitError(ValueError):
    """Splits cannot be made (or reloaded) as asked; the message says why."""


# --- the audit ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakageAudit:
    """Which patients two parts of a split share.

    Attributes:
        split_name: the split audited.
        images, patients: count per part (``train``, ``val``, ``test``).
        shared_patients: sorted patient ids per pair of parts: ``"train&val"``,
            ``"train&test"``, ``"val&test"``.
        test_patients_in_train: how many test patients also have training images.
        images_without_patient: images whose patient is unknown (cannot be audited).

    Example:
        >>> audit = split.audit  # doctest: +SKIP
        >>> audit.patient_disjoint, audit.shared_patients["train&test"]  # doctest: +SKIP
        (True, [])
    """

    split_name: str
    images: dict[str, int]
    patients: dict[str, int]
    shared_patients: dict[str, list[str]]
    test_patients_in_train: int
    images_without_patient: int = 0

    @property
    def patient_disjoint(self) -> bool:
        """True when no patient appears in two parts."""
        return not any(self.shared_patients.values())

    @property
    def test_patients_in_train_fraction(self) -> float | None:
        """Fraction of test patients that also have training images (None: no test patients)."""
        if not self.patients["test"]:
            return None
        return self.test_patients_in_train / self.patients["test"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, including the derived fields."""
        return {
            **asdict(self),
            "patient_disjoint": self.patient_disjoint,
            "test_patients_in_train_fraction": self.test_patients_in_train_fraction,
        }

    def describe(self) -> str:
        """One human-readable paragraph, e.g. for the training log."""
        parts = ", ".join(
            f"{part} {self.patients[part]} patients / {self.images[part]} images"
            for part in PARTS
            if self.images[part]
        )
        if self.patient_disjoint:
            verdict = "patient-disjoint: no patient is shared between parts"
        else:
            shared = "; ".join(
                f"{pair}: {len(ids)} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})"
                for pair, ids in self.shared_patients.items()
                if ids
            )
            verdict = (
                f"PATIENT LEAKAGE: {self.test_patients_in_train} of {self.patients['test']} "
                f"test patients also have training images; shared patients {shared}"
            )
        unknown = (
            f"; {self.images_without_patient} images without a patient id were not audited"
            if self.images_without_patient
            else ""
        )
        return f"{self.split_name}: {parts}. {verdict}{unknown}"


def leakage_audit(
    name: str, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame
) -> LeakageAudit:
    """Audit the patients shared between the parts of a split.

    Example:
        >>> audit = leakage_audit("mine", train_df, val_df, test_df)  # doctest: +SKIP
    """
    frames = {"train": train, "val": val, "test": test}
    patients = {part: set(frame["patient"].dropna()) for part, frame in frames.items()}
    pairs = (("train", "val"), ("train", "test"), ("val", "test"))
    return LeakageAudit(
        split_name=name,
        images={part: len(frame) for part, frame in frames.items()},
        patients={part: len(ids) for part, ids in patients.items()},
        shared_patients={
            f"{first}&{second}": sorted(patients[first] & patients[second])
            for first, second in pairs
        },
        test_patients_in_train=len(patients["test"] & patients["train"]),
        images_without_patient=int(sum(frame["patient"].isna().sum() for frame in frames.values())),
    )


# --- a split ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Split:
    """One named train / validation / test split of the image index.

    The part tables are rows of the index (same columns), sorted by path. ``val`` is empty
    when the protocol has no validation part or it had to be omitted (see ``notes``).

    Example:
        >>> split.name, len(split.train), len(split.val), len(split.test)  # doctest: +SKIP
        ('patient-fold1', 19, 6, 9)
    """

    name: str
    protocol: str
    fold: int
    magnification: int | None
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    notes: tuple[str, ...] = field(default=())

    @property
    def audit(self) -> LeakageAudit:
        """Patients shared between the parts of this split."""
        return leakage_audit(self.name, self.train, self.val, self.test)

    def part(self, name: str) -> pd.DataFrame:
        """The ``"train"``, ``"val"`` or ``"test"`` table."""
        if name not in PARTS:
            raise KeyError(f"unknown part {name!r}; expected one of {', '.join(PARTS)}")
        return getattr(self, name)

    def assignments(self) -> pd.DataFrame:
        """One row per image: ``SPLITS_CSV_COLUMNS`` (the run folder's ``splits.csv``)."""
        frames = [
            pd.DataFrame(
                {
                    "name": self.name,
                    "protocol": self.protocol,
                    "fold": self.fold,
                    "magnification": pd.array(
                        [self.magnification] * len(self.part(part)), dtype="Int64"
                    ),
                    "split": part,
                    "path": self.part(part)["path"].to_numpy(),
                }
            )
            for part in PARTS
        ]
        return pd.concat(frames, ignore_index=True)[list(SPLITS_CSV_COLUMNS)]


def index_images(index: pd.DataFrame | DatasetIndex) -> pd.DataFrame:
    images = index.images if isinstance(index, DatasetIndex) else index
    missing = {"path", "label", "patient", "magnification"} - set(images.columns)
    if missing:
        named = ", ".join(sorted(missing))
        raise SplitError(f"the index lacks the column{'s' if len(missing) > 1 else ''} {named}")
    if images.empty:
        raise SplitError("the index holds no images")
    return images


def sorted_by_path(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _make_split(
    name: str,
    protocol: str,
    fold: int,
    magnification: int | None,
    train: pd.DataFrame,
    val: pd.DataFrame,
    test: pd.DataFrame,
    notes: list[str],
) -> Split:
    split = Split(
        name,
        protocol,
        fold,
        magnification,
        sorted_by_path(train),
        sorted_by_path(val),
        sorted_by_path(test),
        tuple(notes),
    )
    for note in notes:
        warn_once(logger, "%s: %s", name, note, key=f"{name}: {note}")
    # Debug: a run prints every protocol's audits once it uses them (format_audits); the
    # splits are also made earlier, to plan, and that must not print them twice.
    logger.debug("%s", split.audit.describe())
    return split


# --- paper protocol -----------------------------------------------------------------------
def paper_split(
    index: pd.DataFrame | DatasetIndex, *, val_fraction: float = 0.0, seed: int = 0
) -> Split:
    """The paper's split: train = 100X/200X/400X images, test = 40X images.

    Args:
        val_fraction: share of the training images moved to validation, chosen at
            image level and stratified by class (patients leak into it, as into test).
        seed: seed of that validation draw.

    Raises:
        SplitError: no 40X or no other images, or images without magnification.

    Example:
        >>> split = paper_split(images)                   # doctest: +SKIP
        >>> split.audit.test_patients_in_train_fraction   # doctest: +SKIP
        1.0
    """
    images = index_images(index)
    if images["magnification"].isna().any():
        raise SplitError(
            f"the paper protocol splits by magnification, but "
            f"{counted(int(images['magnification'].isna().sum()), 'image')} without one"
        )
    train = images[images["magnification"].isin(PAPER_TRAIN_MAGNIFICATIONS)]
    test = images[images["magnification"] == PAPER_TEST_MAGNIFICATION]
    if train.empty or test.empty:
        raise SplitError(
            "the paper protocol needs 40X images (test) and 100X/200X/400X images (train); "
            f"found {len(test)} and {len(train)}"
        )
    val = train.iloc[0:0]
    notes = [
        "image-level protocol of the paper: the same patients are in train and test, so test "
        "accuracy measures recognition of seen patients at a new magnification"
    ]
    if val_fraction > 0:
        stratify = train["label"] if train["label"].value_counts().min() >= 2 else None
        train, val = train_test_split(
            train, test_size=val_fraction, random_state=seed, stratify=stratify
        )
        notes.append("validation carved out of train at image level (it shares patients too)")
    return _make_split("paper", "paper", 0, None, train, val, test, notes)


# --- patient protocol ---------------------------------------------------------------------
def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _patient_labels(images: pd.DataFrame) -> pd.Series:
    if images["patient"].isna().any():
        raise SplitError(
            f"patient-level splits need a patient id for every image; "
            f"{counted(int(images['patient'].isna().sum()), 'image')} without one (give a "
            "'patient' column "
            "in the CSV manifest or use BreakHis file names)"
        )
    labels = images.groupby("patient")["label"]
    mixed = labels.nunique()
    mixed = sorted(mixed[mixed > 1].index)
    if mixed:
        warn_once(
            logger,
            "patients with images of both classes are stratified by their majority class: %s",
            summarise_names(mixed),
        )
    return labels.agg(lambda values: int(values.mode().max())).sort_index()


def _draw(
    patients_by_class: dict[int, list[str]], fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Per class, move round(fraction * n) (at least 1, leaving at least 1) shuffled patients."""
    kept, drawn = [], []
    for label in sorted(patients_by_class):
        patients = rng.permutation(patients_by_class[label]).tolist()
        count = min(max(1, _round_half_up(fraction * len(patients))), len(patients) - 1)
        drawn += patients[:count]
        kept += patients[count:]
    return kept, drawn


def _carve_validation(
    patients_by_class: dict[int, list[str]],
    train_patients: list[str],
    val_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[str], list[str], list[str]]:
    """Move ``val_fraction`` of each class's training patients to validation (patient-disjoint
    by construction: whole patients move). Returns (train, validation, notes); validation is
    omitted, with a note, when a class has fewer than 2 training patients."""
    if val_fraction <= 0:
        return train_patients, [], []
    in_train = set(train_patients)
    train_by_class = {
        label: [patient for patient in patients if patient in in_train]
        for label, patients in patients_by_class.items()
    }
    if min(len(patients) for patients in train_by_class.values()) < 2:
        note = (
            "validation omitted: a class has fewer than 2 training patients "
            f"({', '.join(f'{k}: {len(v)}' for k, v in sorted(train_by_class.items()))}); "
            "use the default threshold 0.5 and no early stopping on validation"
        )
        return train_patients, [], [note]
    kept, drawn = _draw(train_by_class, val_fraction, rng)
    return kept, drawn, []


def patient_split(
    index: pd.DataFrame | DatasetIndex,
    fold: int,
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    magnification: int | None = None,
) -> Split:
    """Fold ``fold`` of the patient protocol: a patient-disjoint, class-stratified split.

    Per class the patients are shuffled by a generator seeded from ``(seed, fold,
    magnification)`` and ``round(test_fraction * n)`` of them (at least one, leaving at least
    one) go to test; then ``round(val_fraction * n_train)`` of each class's remaining patients
    go to validation. Validation is omitted, with a note and a warning, when a class has fewer
    than 2 training patients.

    Args:
        fold: 1-based fold number (any int works; it only seeds the draw).
        magnification: restrict to this magnification's images first (magnification protocol).

    Raises:
        SplitError: unknown patients, a class missing, or a class with fewer than 2 patients.

    Example:
        >>> split = patient_split(images, fold=1, seed=0)  # doctest: +SKIP
        >>> split.audit.patient_disjoint                   # doctest: +SKIP
        True
    """
    images = index_images(index)
    protocol, name = "patient", f"patient-fold{fold}"
    if magnification is not None:
        images = images[images["magnification"] == magnification]
        protocol, name = "magnification", f"magnification-{magnification}X-fold{fold}"
        if images.empty:
            raise SplitError(f"no {magnification}X images to split")
    labels = _patient_labels(images)
    patients_by_class = {int(label): sorted(group.index) for label, group in labels.groupby(labels)}
    counts = {label: len(patients_by_class.get(label, [])) for label in (0, 1)}
    if min(counts.values()) < 2:
        scope = f" at {magnification}X" if magnification else ""
        raise SplitError(
            f"the patient protocol needs at least 2 patients per class{scope} (one for training, "
            f"one for testing); found {counts[0]} benign and {counts[1]} malignant"
        )
    seed_sequence = np.random.SeedSequence([seed, fold, magnification or 0])
    rng = np.random.default_rng(seed_sequence)
    train_patients, test_patients = _draw(patients_by_class, test_fraction, rng)

    train_patients, val_patients, notes = _carve_validation(
        patients_by_class, train_patients, val_fraction, rng
    )

    def rows(patients: list[str]) -> pd.DataFrame:
        return images[images["patient"].isin(patients)]

    return _make_split(
        name,
        protocol,
        fold,
        magnification,
        rows(train_patients),
        rows(val_patients),
        rows(test_patients),
        notes,
    )


def patient_splits(
    index: pd.DataFrame | DatasetIndex,
    *,
    n_folds: int = 5,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
) -> list[Split]:
    """Folds 1..``n_folds`` of the patient protocol (Spanhol et al. 2016: 5 random splits).

    Example:
        >>> [split.name for split in patient_splits(images, n_folds=2)]  # doctest: +SKIP
        ['patient-fold1', 'patient-fold2']
    """
    return [
        patient_split(
            index, fold, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction
        )
        for fold in range(1, n_folds + 1)
    ]


def check_kfold_feasible(images: pd.DataFrame, n_folds: int) -> None:
    """Refuse, before any work, a k-fold that cannot give every test fold both classes.

    Raises:
        SplitError: fewer than 2 folds, images without a patient id, or a class with fewer
            patients than folds.
    """
    if n_folds < 2:
        raise SplitError(
            f"the patient k-fold protocol needs at least 2 folds (got {n_folds}); "
            "pass e.g. --folds 5"
        )
    labels = _patient_labels(images)
    counts = {label: int((labels == label).sum()) for label in (0, 1)}
    fewest = min(counts.values())
    if fewest < n_folds:
        hint = f"; use --folds {fewest} or fewer" if fewest >= 2 else ""
        raise SplitError(
            f"the patient k-fold protocol with {n_folds} folds needs at least {n_folds} "
            f"patients per class (one per test fold); found {counts[0]} benign and "
            f"{counts[1]} malignant{hint}"
        )


def patient_kfold_splits(
    index: pd.DataFrame | DatasetIndex,
    *,
    n_folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> list[Split]:
    """The patient k-fold protocol: ``kfold-fold1`` .. ``kfold-fold<n_folds>``.

    ``StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)`` runs on the
    images with the patient as group (a patient's images stay together) and the patient's
    majority class as label (so a mixed patient counts wholly as that class, as in the
    patient protocol's stratification): the folds keep the class proportions while each
    patient lands in exactly one test fold. Each fold's validation part is
    ``round(val_fraction * n)`` of each class's training patients, drawn from ``(seed, fold)``.

    Raises:
        SplitError: see :func:`check_kfold_feasible`.

    Example:
        >>> splits = patient_kfold_splits(images, n_folds=5, seed=42)  # doctest: +SKIP
        >>> sum(split.audit.patients["test"] for split in splits)       # doctest: +SKIP
        82
    """
    images = index_images(index)
    check_kfold_feasible(images, n_folds)
    labels = _patient_labels(images)
    patients_by_class = {int(label): sorted(group.index) for label, group in labels.groupby(labels)}
    # StratifiedGroupKFold shuffles the sorted unique patients, so the folds depend on the
    # seed and the patients only, not on the index's row order (a test checks it).
    ordered = images.reset_index(drop=True)
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
        ordered, ordered["patient"].map(labels), groups=ordered["patient"]
    )
    splits = []
    for fold, (train_rows, test_rows) in enumerate(folds, start=1):
        test_patients = sorted(set(ordered["patient"].iloc[test_rows]))
        rng = np.random.default_rng(np.random.SeedSequence([seed, fold]))
        train_patients, val_patients, notes = _carve_validation(
            patients_by_class, sorted(set(ordered["patient"].iloc[train_rows])), val_fraction, rng
        )

        def rows(patients: list[str]) -> pd.DataFrame:
            return ordered[ordered["patient"].isin(patients)]

        splits.append(
            _make_split(
                f"kfold-fold{fold}",
                "kfold",
                fold,
                None,
                rows(train_patients),
                rows(val_patients),
                rows(test_patients),
                notes,
            )
        )
    return splits


def magnification_splits(
    index: pd.DataFrame | DatasetIndex,
    *,
    magnifications: tuple[int, ...] = MAGNIFICATIONS,
    n_folds: int = 5,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    strict: bool = True,
) -> list[Split]:
    """The patient protocol on each magnification separately (``magnification-40X-fold1``...).

    Args:
        strict: when False, a magnification that cannot be split (too few patients) is skipped
            with a warning instead of raising; at least one must remain.

    Example:
        >>> splits = magnification_splits(images, magnifications=(40,), n_folds=1)  # doctest: +SKIP
        >>> set(splits[0].test["magnification"])                                    # doctest: +SKIP
        {40}
    """
    splits: list[Split] = []
    for magnification in magnifications:
        try:
            splits += [
                patient_split(
                    index,
                    fold,
                    seed=seed,
                    test_fraction=test_fraction,
                    val_fraction=val_fraction,
                    magnification=magnification,
                )
                for fold in range(1, n_folds + 1)
            ]
        except SplitError as error:
            if strict:
                raise
            warn_once(
                logger, "skipping %dX: %s", magnification, error, key=f"{magnification}: {error}"
            )
    if not splits:
        raise SplitError(f"no magnification among {magnifications} could be split")
    return splits


def format_audits(splits: list[Split]) -> str:
    """The audit lines of all splits (and their notes), for printing.

    Example:
        >>> print(format_audits(splits))  # doctest: +SKIP
    """
    lines = []
    for split in splits:
        lines.append(split.audit.describe())
        lines += [f"  note: {note}" for note in split.notes]
    return "\n".join(lines)
