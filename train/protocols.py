"""The evaluation protocols, in one registry: what each is called, what it means, whether its
test patients are unseen, how its splits are made, and what it needs from the data.

The command line (``--protocols``), the run, the splits, the report and (through the model
card, which carries each evaluation's title) the app all read :data:`PROTOCOLS`. Adding a
protocol means adding one :class:`ProtocolSpec` here.

Example:
    >>> list(PROTOCOLS)
    ['paper', 'patient', 'magnification', 'kfold']
    >>> PROTOCOLS["paper"].patient_disjoint, PROTOCOLS["patient"].patient_disjoint
    (False, True)
    >>> PROTOCOLS["paper"].requires
    ('magnification',)
    >>> from train.config import resolve_config
    >>> PROTOCOLS["patient"].split_options(resolve_config("smoke"))
    {'n_folds': 1, 'seed': 42, 'val_fraction': 0.2}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from train.console import counted
from train.dataset import DatasetIndex
from train.splits import (
    PAPER_TEST_MAGNIFICATION,
    PAPER_TRAIN_MAGNIFICATIONS,
    Split,
    SplitError,
    check_kfold_feasible,
    index_images,
    magnification_splits,
    paper_split,
    patient_kfold_splits,
    patient_splits,
)

if TYPE_CHECKING:
    from train.config import TrainConfig


@dataclass(frozen=True)
class ProtocolSpec:
    """One evaluation protocol.

    Attributes:
        name: the registry key, used on the command line and as the run sub-folder.
        title: heading in the report and the app.
        patient_disjoint: whether the protocol keeps every test patient out of training
            (the leakage audit of each split checks it).
        requires: index columns that must be known for every image (``"patient"``,
            ``"magnification"``).
        make_splits: builds the protocol's splits from an index and the options of
            :meth:`split_options`.
        options: ``TrainConfig`` -> keyword options of ``make_splits`` (saved with the
            splits, so a resumed run can check they are the same).
        describe: (number of splits, validation fraction, has a validation part) -> how
            the numbers were obtained, in one or two sentences.
        feasible: (index images, the options of :meth:`split_options`) -> None, raising
            :class:`~train.splits.SplitError` when the splits cannot be made; cheap, so a run
            can call :func:`check_feasible` before any training. ``None``: only the
            ``requires`` columns are checked.
    """

    name: str
    title: str
    patient_disjoint: bool
    requires: tuple[str, ...]
    make_splits: Callable[..., list[Split]]
    options: Callable[[TrainConfig], dict[str, Any]]
    describe: Callable[[int, float, bool], str]
    feasible: Callable[..., None] | None = None

    def split_options(self, config: TrainConfig) -> dict[str, Any]:
        """The options this protocol's splits are made with, from a run's config."""
        return self.options(config)


def _paper_options(config: TrainConfig) -> dict[str, Any]:
    return {"seed": config.seed}


def _patient_options(config: TrainConfig) -> dict[str, Any]:
    return {
        "n_folds": config.folds,
        "seed": config.seed,
        "val_fraction": config.validation_fraction,
    }


def _magnification_options(config: TrainConfig) -> dict[str, Any]:
    # A magnification with too few patients is skipped (with a warning), not fatal.
    return {**_patient_options(config), "strict": False}


def _describe_paper(folds: int, validation_fraction: float, has_validation: bool) -> str:
    selection = (
        "An image-level validation part (same patients) picks the epoch and threshold."
        if has_validation
        else "There is no validation part, so the last epoch's model is used and the "
        "threshold is the default 0.5."
    )
    return (
        f"As in the paper: every {'/'.join(f'{m}X' for m in PAPER_TRAIN_MAGNIFICATIONS)} image "
        f"trains the model, every {PAPER_TEST_MAGNIFICATION}X image tests it; the same patients "
        f"are on both sides, so the test numbers are optimistic. {selection}"
    )


def _selection(validation_fraction: float) -> str:
    return (
        f"{100 * validation_fraction:.0f}% of the training patients form a validation part "
        "used to pick the epoch (lowest validation loss) and the threshold"
    )


def _describe_patient(folds: int, validation_fraction: float, has_validation: bool) -> str:
    return (
        f"Spanhol et al. 2016: {counted(folds, 'random 70/30 split')} of the *patients* "
        f"(stratified by class); {_selection(validation_fraction)}. Test patients are never "
        "seen in training."
    )


def _describe_magnification(folds: int, validation_fraction: float, has_validation: bool) -> str:
    return (
        "The patient-disjoint protocol on each magnification separately "
        f"({counted(folds, 'split')}); "
        f"{_selection(validation_fraction)}. A magnification with too few patients to split "
        "is skipped."
    )


def _describe_kfold(folds: int, validation_fraction: float, has_validation: bool) -> str:
    return (
        f"Patient-grouped stratified {folds}-fold cross-validation (scikit-learn "
        "StratifiedGroupKFold, stratified by each patient's majority class): every patient is "
        f"tested exactly once, in one of the {folds} disjoint test folds; "
        f"{_selection(validation_fraction)}. Test patients are never seen in training."
    )


def _kfold_feasible(images: pd.DataFrame, n_folds: int, **_: Any) -> None:
    check_kfold_feasible(images, n_folds)


PROTOCOLS: dict[str, ProtocolSpec] = {
    "paper": ProtocolSpec(
        name="paper",
        title=(
            f"Paper protocol (train {'/'.join(f'{m}X' for m in PAPER_TRAIN_MAGNIFICATIONS)}, "
            f"test {PAPER_TEST_MAGNIFICATION}X)"
        ),
        patient_disjoint=False,
        requires=("magnification",),
        make_splits=lambda index, **options: [paper_split(index, **options)],
        options=_paper_options,
        describe=_describe_paper,
    ),
    "patient": ProtocolSpec(
        name="patient",
        title="Patient-disjoint protocol (Spanhol et al. 2016)",
        patient_disjoint=True,
        requires=("patient",),
        make_splits=patient_splits,
        options=_patient_options,
        describe=_describe_patient,
    ),
    "magnification": ProtocolSpec(
        name="magnification",
        title="Patient-disjoint protocol per magnification",
        patient_disjoint=True,
        requires=("patient", "magnification"),
        make_splits=magnification_splits,
        options=_magnification_options,
        describe=_describe_magnification,
    ),
    "kfold": ProtocolSpec(
        name="kfold",
        title="Patient k-fold protocol (every patient tested once)",
        patient_disjoint=True,
        requires=("patient",),
        make_splits=patient_kfold_splits,
        options=_patient_options,
        describe=_describe_kfold,
        feasible=_kfold_feasible,
    ),
}
"""Every protocol by name, in the order the command line lists them."""


def protocol(name: str) -> ProtocolSpec:
    """The registered protocol ``name``.

    Raises:
        SplitError: no such protocol (the message lists the known ones).
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SplitError(
            f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}"
        ) from None


def check_feasible(
    spec: ProtocolSpec, index: pd.DataFrame | DatasetIndex, options: dict[str, Any]
) -> None:
    """Refuse, before any work, a protocol whose splits cannot be made from ``index`` with
    ``options`` (those of :meth:`ProtocolSpec.split_options`).

    Raises:
        SplitError: a ``requires`` column unknown for some images, or the protocol's own
            ``feasible`` check failed (e.g. too few patients per class for k folds).

    Example:
        >>> images = pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1],
        ...                        "patient": ["p1", "p2"], "magnification": [40, 40]})
        >>> check_feasible(PROTOCOLS["kfold"], images, {"n_folds": 2, "seed": 0})
        Traceback (most recent call last):
        ...
        train.splits.SplitError: ... 2 patients per class ...; found 1 benign and 1 malignant
        >>> check_feasible(PROTOCOLS["kfold"], images, {"n_folds": 1, "seed": 0})
        Traceback (most recent call last):
        ...
        train.splits.SplitError: the patient k-fold protocol needs at least 2 folds (got 1); ...
    """
    images = index_images(index)
    for column in spec.requires:
        unknown = int(images[column].isna().sum())
        if unknown:
            raise SplitError(
                f"the {spec.name} protocol needs the {column} of every image; "
                f"{unknown} of {len(images)} images have none"
            )
    if spec.feasible is not None:
        spec.feasible(images, **options)


def make_splits(
    index: pd.DataFrame | DatasetIndex, protocol_name: str, **options: Any
) -> list[Split]:
    """Splits of a protocol by name; ``options`` go to that protocol's split function.

    Example:
        >>> splits = make_splits(images, "paper")  # doctest: +SKIP
    """
    return protocol(protocol_name).make_splits(index, **options)
