"""Split protocols (paper, patient, magnification), their leakage audits, saving and reloading."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from train.dataset import index_dataset
from train.protocols import make_splits
from train.run_folder import (
    SPLITS_CSV,
    SPLITS_JSON,
    load_or_make_splits,
    load_splits,
    save_splits,
)
from train.splits import (
    SPLITS_CSV_COLUMNS,
    SplitError,
    format_audits,
    magnification_splits,
    paper_split,
    patient_kfold_splits,
    patient_split,
    patient_splits,
)


@pytest.fixture(scope="module")
def sample_images(breakhis_sample: Path) -> pd.DataFrame:
    return index_dataset(breakhis_sample).images


@pytest.fixture(scope="module")
def synthetic_images(small_synthetic_breakhis: Path) -> pd.DataFrame:
    return index_dataset(small_synthetic_breakhis, check_images=False).images


def patients(frame: pd.DataFrame) -> set[str]:
    return set(frame["patient"])


def toy_index(patients_per_class: tuple[int, int], images_per_patient: int = 2) -> pd.DataFrame:
    rows = []
    for label, count in enumerate(patients_per_class):
        for number in range(count):
            for image in range(images_per_patient):
                rows.append(
                    {
                        "path": f"/d/{label}-{number}-{image}.png",
                        "label": label,
                        "patient": f"{label}-{number}",
                        "magnification": 40,
                    }
                )
    frame = pd.DataFrame(rows)
    frame["magnification"] = frame["magnification"].astype("Int64")
    return frame


# --- paper protocol -----------------------------------------------------------------------
def test_paper_split_on_the_real_sample(sample_images: pd.DataFrame) -> None:
    split = paper_split(sample_images)
    assert set(split.test["magnification"]) == {40}
    assert set(split.train["magnification"]) == {100, 200, 400}
    assert len(split.train) + len(split.test) == 34
    assert len(split.test) == 13
    assert split.val.empty

    # Independently: the 40X patients that also have images at another magnification.
    by_patient = sample_images.groupby("patient")["magnification"].agg(set)
    at_40x = {patient for patient, mags in by_patient.items() if 40 in mags}
    seen_elsewhere = {patient for patient in at_40x if by_patient[patient] - {40}}
    audit = split.audit
    assert set(audit.shared_patients["train&test"]) == seen_elsewhere
    assert audit.test_patients_in_train == len(seen_elsewhere) == 8
    assert audit.patients["test"] == len(at_40x) == 11
    assert not audit.patient_disjoint
    assert "PATIENT LEAKAGE: 8 of 11 test patients" in audit.describe()


def test_paper_audit_shows_every_test_patient_in_training(synthetic_images) -> None:
    # Every synthetic patient has all four magnifications, as in the full BreakHis.
    audit = paper_split(synthetic_images).audit
    assert audit.test_patients_in_train == audit.patients["test"] == 10
    assert audit.test_patients_in_train_fraction == 1.0
    assert audit.to_dict()["patient_disjoint"] is False


def test_paper_split_with_image_level_validation(synthetic_images: pd.DataFrame) -> None:
    split = paper_split(synthetic_images, val_fraction=0.25, seed=3)
    assert len(split.val) == 15  # a quarter of the 60 non-40X images
    assert len(split.train) == 45
    assert set(split.val["label"]) == {0, 1}
    assert set(split.val["path"]).isdisjoint(split.train["path"])
    assert set(split.train["magnification"]) | set(split.val["magnification"]) == {100, 200, 400}
    assert split.audit.shared_patients["train&val"]  # image-level: patients leak into val


def test_paper_split_needs_magnifications() -> None:
    frame = toy_index((2, 2))
    with pytest.raises(SplitError, match="40X images"):
        paper_split(frame)  # only 40X: no training images
    frame["magnification"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    with pytest.raises(SplitError, match="splits by magnification, but 8 images without one"):
        paper_split(frame)


# --- patient protocol ---------------------------------------------------------------------
def test_patient_protocol_on_the_real_sample(sample_images: pd.DataFrame) -> None:
    splits = patient_splits(sample_images, n_folds=5, seed=0)
    assert [split.name for split in splits] == [f"patient-fold{k}" for k in range(1, 6)]
    all_patients = patients(sample_images)
    for split in splits:
        audit = split.audit
        assert audit.patient_disjoint, audit.describe()
        assert audit.shared_patients == {"train&val": [], "train&test": [], "val&test": []}
        assert set(split.test["label"]) == {0, 1}
        assert set(split.val["label"]) == {0, 1}
        # 8 benign, 6 malignant patients -> round(2.4)=2 + round(1.8)=2 test patients
        assert audit.patients["test"] == 4
        assert 0.25 <= audit.patients["test"] / len(all_patients) <= 0.35
        assert patients(split.train) | patients(split.val) | patients(split.test) == all_patients
        paths = pd.concat([split.train, split.val, split.test])["path"]
        assert paths.is_unique and len(paths) == 34
    assert len({tuple(sorted(patients(split.test))) for split in splits}) > 1


def test_patient_protocol_proportions_on_more_patients(make_synthetic_breakhis, tmp_path):
    root = make_synthetic_breakhis(tmp_path, patients_per_class=10, size=(7, 5))
    images = index_dataset(root, check_images=False).images
    split = patient_split(images, fold=1)
    # per class: 10 patients -> 3 test; 7 left -> round(1.4)=1 val, 6 train
    assert split.audit.patients == {"train": 12, "val": 2, "test": 6}
    for part in ("train", "val", "test"):
        frame = split.part(part)
        assert frame.groupby("label")["patient"].nunique().to_dict() == {
            0: split.audit.patients[part] // 2,
            1: split.audit.patients[part] // 2,
        }


def test_fold_is_reproducible_from_seed_and_fold(sample_images: pd.DataFrame) -> None:
    alone = patient_split(sample_images, 3, seed=7)
    again = patient_split(sample_images.sample(frac=1.0, random_state=1), 3, seed=7)
    in_series = patient_splits(sample_images, seed=7)[2]
    for other in (again, in_series):
        for part in ("train", "val", "test"):
            pd.testing.assert_frame_equal(alone.part(part), other.part(part))
    other_seed = [patient_split(sample_images, 3, seed=seed).test for seed in range(8, 12)]
    assert any(not frame.equals(alone.test) for frame in other_seed)


def test_val_fraction_does_not_change_the_test_set(sample_images) -> None:
    with_val = patient_split(sample_images, 2, val_fraction=0.2)
    without_val = patient_split(sample_images, 2, val_fraction=0.0)
    pd.testing.assert_frame_equal(with_val.test, without_val.test)
    assert without_val.val.empty
    assert patients(without_val.train) == patients(with_val.train) | patients(with_val.val)


def test_validation_omitted_when_too_few_training_patients(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="train.splits"):
        split = patient_split(toy_index((2, 3)), 1)
    assert split.val.empty
    assert split.notes and "validation omitted" in split.notes[0]
    assert "validation omitted" in caplog.text
    assert split.audit.patient_disjoint
    assert set(split.test["label"]) == {0, 1}


def test_too_few_patients_per_class_raises() -> None:
    with pytest.raises(SplitError, match=r"at least 2 patients per class.*1 benign and 4"):
        patient_split(toy_index((1, 4)), 1)
    with pytest.raises(SplitError, match="0 benign"):
        patient_split(toy_index((0, 4)), 1)


def test_unknown_patients_raise() -> None:
    frame = toy_index((3, 3))
    frame.loc[0, "patient"] = None
    with pytest.raises(SplitError, match="; 1 image without one"):
        patient_split(frame, 1)


def test_mixed_class_patient_is_kept_whole(caplog) -> None:
    frame = toy_index((4, 4), images_per_patient=3)
    frame.loc[0, "label"] = 1  # patient 0-0 now has one malignant and two benign images
    with caplog.at_level(logging.WARNING, logger="train.splits"):
        split = patient_split(frame, 1)
    assert "both classes" in caplog.text
    assert split.audit.patient_disjoint


def test_a_patient_with_as_many_benign_as_malignant_images_counts_as_malignant() -> None:
    """A 50/50 patient is stratified as malignant (the cautious call, as in the patient
    metrics): with it, 1 benign patient is left, too few to split; were the tie to go to
    benign, there would be 2 and the split would go ahead."""
    frame = toy_index((2, 3), images_per_patient=2)
    frame.loc[frame["patient"] == "0-1", "label"] = [0, 1]
    with pytest.raises(SplitError, match="found 1 benign and 4 malignant"):
        patient_split(frame, 1)


# --- magnification protocol ---------------------------------------------------------------
def test_magnification_protocol_restricts_each_split(sample_images: pd.DataFrame) -> None:
    splits = magnification_splits(sample_images, magnifications=(40, 400), n_folds=2)
    assert [split.name for split in splits] == [
        "magnification-40X-fold1",
        "magnification-40X-fold2",
        "magnification-400X-fold1",
        "magnification-400X-fold2",
    ]
    for split in splits:
        assert split.protocol == "magnification"
        for part in ("train", "val", "test"):
            assert set(split.part(part)["magnification"]) <= {split.magnification}
        assert split.audit.patient_disjoint
        assert set(split.test["label"]) == {0, 1}
    assert len(splits[0].train) + len(splits[0].val) + len(splits[0].test) == 13


def test_magnification_protocol_on_unsplittable_magnification(sample_images) -> None:
    # The sample has a single malignant patient at 200X.
    with pytest.raises(SplitError, match=r"at 200X.*5 benign and 1 malignant"):
        magnification_splits(sample_images)
    splits = magnification_splits(sample_images, strict=False, n_folds=1)
    assert [split.magnification for split in splits] == [40, 100, 400]
    assert "validation omitted" in splits[1].notes[0]  # 100X: one benign training patient


def test_make_splits_dispatch(synthetic_images: pd.DataFrame) -> None:
    assert [s.name for s in make_splits(synthetic_images, "paper")] == ["paper"]
    assert len(make_splits(synthetic_images, "patient", n_folds=2)) == 2
    assert len(make_splits(synthetic_images, "magnification", n_folds=1)) == 4
    with pytest.raises(SplitError, match="unknown protocol 'random'"):
        make_splits(synthetic_images, "random")


# --- saving and loading -------------------------------------------------------------------
def test_save_load_round_trip_is_identical(sample_images: pd.DataFrame, tmp_path: Path) -> None:
    splits = [*patient_splits(sample_images, n_folds=3, seed=5), paper_split(sample_images)]
    csv_path, json_path = save_splits(splits, tmp_path / "run", params={"seed": 5})
    assert csv_path.name == SPLITS_CSV and json_path.name == SPLITS_JSON

    table = pd.read_csv(csv_path)
    assert tuple(table.columns) == SPLITS_CSV_COLUMNS
    assert set(table["split"]) == {"train", "val", "test"}
    assert len(table) == 3 * 34 + 34

    document = json.loads(json_path.read_text())
    assert document["params"] == {"seed": 5}
    assert [entry["name"] for entry in document["splits"]] == [s.name for s in splits]
    assert document["splits"][0]["audit"]["patient_disjoint"] is True
    assert document["splits"][3]["audit"]["test_patients_in_train"] == 8

    loaded = load_splits(tmp_path / "run", sample_images)
    assert [s.name for s in loaded] == [s.name for s in splits]
    for original, again in zip(splits, loaded, strict=True):
        assert (again.fold, again.magnification, again.notes) == (
            original.fold,
            original.magnification,
            original.notes,
        )
        for part in ("train", "val", "test"):
            pd.testing.assert_frame_equal(original.part(part), again.part(part))
        assert again.audit == original.audit


def test_magnification_splits_round_trip(sample_images: pd.DataFrame, tmp_path: Path) -> None:
    splits = magnification_splits(sample_images, magnifications=(40,), n_folds=1)
    save_splits(splits, tmp_path)
    loaded = load_splits(tmp_path, sample_images)
    assert loaded[0].magnification == 40
    pd.testing.assert_frame_equal(loaded[0].test, splits[0].test)


def test_load_or_make_reuses_saved_splits(sample_images: pd.DataFrame, tmp_path: Path) -> None:
    first = load_or_make_splits(tmp_path, sample_images, "patient", n_folds=2, seed=1)
    csv_before = (tmp_path / SPLITS_CSV).read_text()
    # A reordered index must not change a resumed run's splits.
    shuffled = sample_images.sample(frac=1.0, random_state=0)
    second = load_or_make_splits(tmp_path, shuffled, "patient", n_folds=2, seed=1)
    assert (tmp_path / SPLITS_CSV).read_text() == csv_before
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a.test, b.test)
    with pytest.raises(SplitError, match="use a new run folder"):
        load_or_make_splits(tmp_path, sample_images, "patient", n_folds=2, seed=2)


def test_load_with_a_changed_dataset_raises(sample_images: pd.DataFrame, tmp_path: Path) -> None:
    save_splits([paper_split(sample_images)], tmp_path)
    with pytest.raises(SplitError, match="not in the dataset"):
        load_splits(tmp_path, sample_images.iloc[1:])
    with pytest.raises(SplitError, match="no saved splits"):
        load_splits(tmp_path / "elsewhere", sample_images)


def test_format_audits_lists_every_split_and_note(sample_images: pd.DataFrame) -> None:
    text = format_audits([paper_split(sample_images), patient_split(sample_images, 1)])
    assert text.startswith("paper: train 11 patients / 21 images")
    assert "note: image-level protocol" in text
    assert "patient-fold1:" in text and "patient-disjoint" in text


# --- patient k-fold protocol --------------------------------------------------------------
def uneven_index(seed: int = 0) -> pd.DataFrame:
    """17 benign and 31 malignant patients with 1 to 12 images each, rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "path": f"/d/{label}-{number}-{image}.png",
            "label": label,
            "patient": f"{label}-{number:02d}",
            "magnification": 40,
        }
        for label, count in ((0, 17), (1, 31))
        for number in range(count)
        for image in range(int(rng.integers(1, 13)))
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame["magnification"] = frame["magnification"].astype("Int64")
    return frame


def test_kfold_tests_every_patient_exactly_once() -> None:
    images = uneven_index()
    splits = patient_kfold_splits(images, n_folds=5, seed=42)
    assert [split.name for split in splits] == [f"kfold-fold{k}" for k in range(1, 6)]
    tested = [patient for split in splits for patient in patients(split.test)]
    assert sorted(tested) == sorted(set(images["patient"]))  # all of them, none twice
    for split in splits:
        parts = [patients(split.train), patients(split.val), patients(split.test)]
        assert split.audit.patient_disjoint
        assert not (parts[0] & parts[1]) and not ((parts[0] | parts[1]) & parts[2])
        # Train, validation and test together hold every image of the index, once.
        assert sorted(pd.concat([split.train, split.val, split.test])["path"]) == sorted(
            images["path"]
        )
        assert split.val["patient"].nunique() >= 2 and set(split.val["label"]) == {0, 1}


def test_kfold_keeps_the_class_balance_in_every_fold() -> None:
    """Stratified on the images (each carrying its patient's class): every test fold's
    malignant share is within 5 points of the whole set's 61% (GroupKFold, unstratified,
    gives 36% to 80% here), and every fold tests several patients of each class."""
    images = uneven_index()
    overall = images["label"].mean()
    for split in patient_kfold_splits(images, n_folds=5, seed=42):
        assert abs(split.test["label"].mean() - overall) < 0.05, split.name
        per_class = split.test.groupby("patient")["label"].first().value_counts()
        assert per_class[0] >= 3 and per_class[1] >= 5, split.name


def test_kfold_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    images = uneven_index()

    def test_sets(frame: pd.DataFrame, seed: int) -> list[set[str]]:
        return [patients(split.test) for split in patient_kfold_splits(frame, seed=seed)]

    def val_sets(frame: pd.DataFrame, seed: int) -> list[set[str]]:
        return [patients(split.val) for split in patient_kfold_splits(frame, seed=seed)]

    reordered = images.sample(frac=1.0, random_state=1)
    assert test_sets(images, 3) == test_sets(reordered, 3)  # row order does not matter
    assert val_sets(images, 3) == val_sets(reordered, 3)
    assert test_sets(images, 3) != test_sets(images, 4)


def test_kfold_counts_a_mixed_patient_as_its_majority_class(caplog) -> None:
    images = toy_index((4, 4), images_per_patient=3)
    images.loc[images.index[:1], "label"] = 1  # patient 0-0: one malignant, two benign images
    with caplog.at_level(logging.WARNING):
        splits = patient_kfold_splits(images, n_folds=4, seed=0)
    assert "stratified by their majority class: 1 (0-0)" in caplog.text
    for split in splits:  # every fold tests one benign (by majority) and one malignant patient
        assert sorted(p[0] for p in patients(split.test)) == ["0", "1"]


def test_kfold_refuses_too_few_patients_or_folds() -> None:
    with pytest.raises(
        SplitError,
        match=r"with 5 folds needs at least 5 patients per class "
        r"\(one per test fold\); found 4 benign and 9 malignant; use --folds 4",
    ):
        patient_kfold_splits(toy_index((4, 9)), n_folds=5)
    with pytest.raises(SplitError, match=r"needs at least 2 folds \(got 1\)"):
        patient_kfold_splits(toy_index((4, 9)), n_folds=1)
    with pytest.raises(SplitError, match="need a patient id for every image; 26 images"):
        patient_kfold_splits(toy_index((4, 9)).assign(patient=None), n_folds=2)
