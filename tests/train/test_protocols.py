"""The protocol registry: every protocol's flags agree with what its splits really do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from train.config import resolve_config
from train.dataset import index_dataset
from train.protocols import PROTOCOLS, check_feasible, make_splits, protocol
from train.run import build_parser
from train.splits import SplitError


@pytest.fixture(scope="module")
def images(small_synthetic_breakhis: Path) -> pd.DataFrame:
    return index_dataset(small_synthetic_breakhis, check_images=False).images


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_the_patient_disjoint_flag_matches_every_split_audit(images, name):
    spec = PROTOCOLS[name]
    options = spec.split_options(resolve_config("smoke", {"folds": 2}))
    splits = make_splits(images, name, **options)
    assert splits and all(split.protocol == name for split in splits)
    assert {split.audit.patient_disjoint for split in splits} == {spec.patient_disjoint}


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_what_a_protocol_requires_is_really_required(images, name):
    spec = PROTOCOLS[name]
    # Two folds: the k-fold protocol refuses the smoke preset's one fold for another reason.
    options = spec.split_options(resolve_config("smoke", {"folds": 2}))
    make_splits(images, name, **options)  # feasible with every column known
    check_feasible(spec, images, options)
    for column in spec.requires:
        unknown = images.assign(**{column: None})
        with pytest.raises(SplitError):
            make_splits(unknown, name, **options)
        with pytest.raises(SplitError, match=f"needs the {column} of every image; 80 of 80"):
            check_feasible(spec, unknown, options)


def test_the_command_line_and_the_config_read_the_registry():
    choices = next(a.choices for a in build_parser()._actions if a.dest == "protocols")
    assert list(choices) == list(PROTOCOLS)
    assert resolve_config("paper", {"protocols": list(PROTOCOLS)}).protocols == tuple(PROTOCOLS)
    with pytest.raises(ValueError, match="protocols must be among paper, patient, magnification"):
        resolve_config("paper", {"protocols": ["random"]})
    with pytest.raises(SplitError, match="unknown protocol 'random'; expected one of paper"):
        protocol("random")


def test_descriptions_say_how_many_splits_and_what_leaks():
    assert "5 random 70/30 splits" in PROTOCOLS["patient"].describe(5, 0.2, True)
    paper = PROTOCOLS["paper"].describe(1, 0.0, False)
    assert "same patients" in paper and "default 0.5" in paper
    assert PROTOCOLS["paper"].title.startswith("Paper protocol (train 100X/200X/400X")


def test_kfold_feasibility_is_refused_before_any_split_with_the_counts(images):
    """The run's early check and the split function refuse the same thing, saying why."""
    spec = PROTOCOLS["kfold"]
    six = spec.split_options(resolve_config("smoke", {"folds": 6}))
    message = "6 folds needs at least 6 patients per class .*found 5 benign and 5 malignant"
    with pytest.raises(SplitError, match=message + "; use --folds 5 or fewer"):
        check_feasible(spec, images, six)
    with pytest.raises(SplitError, match=message):
        make_splits(images, "kfold", **six)
    one = spec.split_options(resolve_config("smoke"))
    with pytest.raises(SplitError, match=r"needs at least 2 folds \(got 1\)"):
        check_feasible(spec, images, one)
    check_feasible(spec, images, spec.split_options(resolve_config("smoke", {"folds": 5})))


def test_kfold_is_described_as_testing_every_patient_once():
    text = PROTOCOLS["kfold"].describe(5, 0.2, True)
    assert "StratifiedGroupKFold" in text and "every patient is tested exactly once" in text
    assert "5 disjoint test folds" in text and "20% of the training patients" in text


def test_the_registered_kfold_tests_every_patient_exactly_once(images):
    options = PROTOCOLS["kfold"].split_options(resolve_config("smoke", {"folds": 5}))
    splits = make_splits(images, "kfold", **options)
    tested = sorted(patient for split in splits for patient in set(split.test["patient"]))
    assert tested == sorted(set(images["patient"]))
