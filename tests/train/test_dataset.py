"""Indexing BreakHis: file names, the official layout, named folders, CSV manifests, bad files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from train.dataset import (
    FILENAME_CONVENTION,
    INDEX_COLUMNS,
    DatasetError,
    find_official_layout,
    format_summary,
    image_problem,
    index_csv,
    index_dataset,
    index_named_folder,
    index_official_layout,
    is_breakhis_filename,
    parse_breakhis_filename,
    summarize,
)


def write_png(path: Path, size: tuple[int, int] = (70, 46), colour=(230, 180, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def official_path(root: Path, filename: str, subtype_folder: str | None = None) -> Path:
    """Where the official archive puts ``filename`` (subtype folder overridable for quirks)."""
    name = parse_breakhis_filename(filename)
    letter = "M" if name.label else "B"
    return (
        root
        / "BreaKHis_v1/histology_slides/breast"
        / name.class_name
        / "SOB"
        / (subtype_folder or name.subtype_name)
        / f"SOB_{letter}_{name.subtype}_{name.patient}"
        / f"{name.magnification}X"
        / filename
    )


# --- file names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("SOB_M_DC-14-2523-40-010.png", (1, "malignant", "DC", "14-2523", 40, 10)),
        ("SOB_B_A-14-29960CD-200-007.png", (0, "benign", "A", "14-29960CD", 200, 7)),
        ("SOB_B_TA-14-3411F-400-001.PNG", (0, "benign", "TA", "14-3411F", 400, 1)),
        ("SOB_M_PC-14-9146-100-013.png", (1, "malignant", "PC", "14-9146", 100, 13)),
    ],
)
def test_parse_breakhis_filename(filename: str, expected: tuple) -> None:
    name = parse_breakhis_filename(Path("/any/folder") / filename)
    assert (
        name.label,
        name.class_name,
        name.subtype,
        name.patient,
        name.magnification,
        name.number,
    ) == expected


def test_subtype_name_is_the_archive_folder() -> None:
    assert (
        parse_breakhis_filename("SOB_B_PT-14-21998AB-40-001.png").subtype_name == "phyllodes_tumor"
    )


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("image_001.png", FILENAME_CONVENTION),
        ("SOB_M_DC-14-2523-40.png", FILENAME_CONVENTION),
        ("SOB_M_DC-14-2523-40-010.txt", FILENAME_CONVENTION),
        ("SOB_M_XX-14-2523-40-010.png", "unknown subtype 'XX'"),
        ("SOB_M_DC-14-2523-50-010.png", "unknown magnification 50"),
        ("SOB_B_DC-14-2523-40-010.png", "contradicts subtype DC"),
    ],
)
def test_parse_rejects_bad_names_with_the_pattern(filename: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_breakhis_filename(filename)
    assert message in str(error.value)
    assert not is_breakhis_filename(filename)


# --- the real sample ----------------------------------------------------------------------
def test_real_sample_indexes_exactly(breakhis_sample: Path) -> None:
    index = index_dataset(breakhis_sample)
    images = index.images
    assert index.layout == "official"
    assert tuple(images.columns) == INDEX_COLUMNS
    assert len(images) == 34
    assert images["patient"].nunique() == 14
    assert sorted(images["magnification"].unique()) == [40, 100, 200, 400]
    assert images["class_name"].value_counts().to_dict() == {"benign": 20, "malignant": 14}
    assert set(images["subtype"]) == {"A", "F", "PT", "TA", "DC", "LC", "MC", "PC"}
    assert index.skipped.empty
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in images["path"])
    assert str(images["magnification"].dtype) == "Int64"
    assert images["label"].dtype == "int64"


def test_real_sample_matches_manifest_row_by_row(
    breakhis_sample: Path, breakhis_sample_images: list[Path]
) -> None:
    manifest = pd.read_csv(breakhis_sample / "MANIFEST.csv", dtype=str).rename(
        columns={"class": "manifest_class"}
    )
    images = index_dataset(breakhis_sample).images
    assert sorted(images["path"]) == sorted(str(path.resolve()) for path in breakhis_sample_images)
    merged = manifest.merge(
        images, on="filename", how="outer", validate="one_to_one", indicator=True
    )
    assert (merged["_merge"] == "both").all()
    for row in merged.itertuples():
        assert row.class_name == row.manifest_class
        assert row.subtype_x == row.subtype_y
        assert row.patient_x == row.patient_y
        assert int(row.magnification_x) == row.magnification_y
        assert row.label == (1 if row.manifest_class == "malignant" else 0)


@pytest.mark.parametrize(
    ("relative", "expected_images"),
    [
        ("", 34),
        ("BreaKHis_v1", 34),
        ("BreaKHis_v1/histology_slides", 34),
        ("BreaKHis_v1/histology_slides/breast", 34),
        ("BreaKHis_v1/histology_slides/breast/benign", 20),
        ("BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma", 6),
    ],
)
def test_official_layout_found_from_any_level(
    breakhis_sample: Path, relative: str, expected_images: int
) -> None:
    index = index_dataset(breakhis_sample / relative)
    assert index.layout == "official"
    assert len(index) == expected_images


def test_official_layout_found_below_a_parent(breakhis_sample: Path, tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "breakhis").symlink_to(breakhis_sample)
    assert find_official_layout(tmp_path) is not None
    assert len(index_dataset(tmp_path)) == 34


# --- synthetic layouts --------------------------------------------------------------------
def test_synthetic_official_layout(small_synthetic_breakhis: Path) -> None:
    index = index_official_layout(small_synthetic_breakhis)
    images = index.images
    assert len(images) == 2 * 5 * 4 * 2
    assert images["patient"].nunique() == 10
    assert set(images["subtype"]) == {"A", "F", "PT", "TA", "DC", "LC", "MC", "PC"}
    assert images.groupby("magnification").size().to_dict() == {40: 20, 100: 20, 200: 20, 400: 20}
    with Image.open(images["path"].iloc[0]) as image:
        assert image.size == (70, 46)
        assert image.mode == "RGB"


def test_synthetic_full_size_images(make_synthetic_breakhis, tmp_path: Path) -> None:
    root = make_synthetic_breakhis(tmp_path, patients_per_class=1, images_per_magnification=1)
    images = index_dataset(root).images
    assert len(images) == 8
    with Image.open(images["path"].iloc[0]) as image:
        assert image.size == (700, 460)


def test_synthetic_total_images_is_exact(make_synthetic_breakhis, tmp_path: Path) -> None:
    root = make_synthetic_breakhis(tmp_path, patients_per_class=2, size=(14, 9), total_images=21)
    assert len(index_dataset(root, check_images=False)) == 21


def test_named_folder_recursive(small_synthetic_breakhis: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    sources = sorted(small_synthetic_breakhis.rglob("*.png"))[:12]
    for number, source in enumerate(sources):
        target = flat / ("sub" if number % 2 else "") / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    (flat / "README.txt").write_text("not an image, ignored")
    write_png(flat / "holiday_photo.png")
    index = index_dataset(flat)
    assert index.layout == "named-folder"
    assert len(index) == 12
    assert index.skipped["path"].tolist() == [str((flat / "holiday_photo.png").resolve())]
    assert FILENAME_CONVENTION in index.skipped["reason"].iloc[0]
    assert index_named_folder(flat).images.equals(index.images)


def test_patient_in_two_subtype_folders_is_one_patient(tmp_path: Path) -> None:
    # The real archive files patient 14-13412 under both ductal and lobular carcinoma.
    for filename, folder in [
        ("SOB_M_DC-14-13412-40-001.png", "ductal_carcinoma"),
        ("SOB_M_LC-14-13412-40-002.png", "lobular_carcinoma"),
        ("SOB_B_F-14-9133-40-001.png", None),
    ]:
        write_png(official_path(tmp_path, filename, folder))
    images = index_dataset(tmp_path).images
    quirk = images[images["patient"] == "14-13412"]
    assert len(quirk) == 2
    assert set(quirk["subtype"]) == {"DC", "LC"}
    assert images["patient"].nunique() == 2


def test_file_in_the_wrong_class_folder_is_skipped(tmp_path: Path) -> None:
    write_png(official_path(tmp_path, "SOB_B_F-14-9133-40-001.png"))
    wrong = official_path(tmp_path, "SOB_B_F-14-9133-40-002.png")
    wrong = Path(str(wrong).replace("/benign/", "/malignant/"))
    write_png(wrong)
    index = index_dataset(tmp_path)
    assert len(index) == 1
    assert "file name says benign" in index.skipped["reason"].iloc[0]


# --- unreadable files ---------------------------------------------------------------------
def test_corrupt_and_fake_pngs_are_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_png(official_path(tmp_path, "SOB_B_F-14-9133-40-001.png"))
    truncated = official_path(tmp_path, "SOB_B_F-14-9133-40-002.png")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = official_path(tmp_path, "SOB_B_F-14-9133-40-003.png")
    text.write_text("this is not a PNG at all")
    empty = official_path(tmp_path, "SOB_B_F-14-9133-40-004.png")
    empty.write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="train.dataset"):
        index = index_dataset(tmp_path)

    assert index.images["path"].tolist() == [str(good.resolve())]
    skipped = dict(zip(index.skipped["path"], index.skipped["reason"], strict=True))
    assert set(skipped) == {str(p.resolve()) for p in (truncated, text, empty)}
    assert "not a readable image" in skipped[str(text.resolve())]
    assert "empty file" in skipped[str(empty.resolve())]
    for path in (truncated, text, empty):
        assert any(path.name in record.getMessage() for record in caplog.records)
    assert "skipped files: 3" in format_summary(index.images, index.skipped)


def test_check_images_false_trusts_the_files(tmp_path: Path) -> None:
    write_png(official_path(tmp_path, "SOB_B_F-14-9133-40-001.png"))
    official_path(tmp_path, "SOB_B_F-14-9133-40-002.png").write_text("not a PNG")
    assert len(index_dataset(tmp_path, check_images=False)) == 2


def test_image_problem(tmp_path: Path) -> None:
    assert image_problem(write_png(tmp_path / "ok.png")) is None
    assert image_problem(tmp_path / "missing.png") == "file not found"


def test_all_files_unreadable_raises(tmp_path: Path) -> None:
    official_path(tmp_path, "SOB_B_F-14-9133-40-001.png").parent.mkdir(parents=True)
    official_path(tmp_path, "SOB_B_F-14-9133-40-001.png").write_text("nope")
    with pytest.raises(DatasetError, match=r"No usable images.*; 1 file skipped, e.g."):
        index_dataset(tmp_path)


# --- empty or malformed datasets ----------------------------------------------------------
def test_empty_folder_raises_with_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        index_dataset(tmp_path)
    assert FILENAME_CONVENTION in str(error.value)
    assert "histology_slides" in str(error.value)


def test_folder_without_breakhis_names_raises(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "nested" / "b.png")
    with pytest.raises(DatasetError, match="No usable images") as error:
        index_dataset(tmp_path)
    assert FILENAME_CONVENTION in str(error.value)


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"neither a folder nor a \.csv"):
        index_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not an extracted BreakHis archive"):
        index_official_layout(tmp_path)
    with pytest.raises(DatasetError, match="is not a folder"):
        index_named_folder(tmp_path / "nowhere")


# --- CSV manifests ------------------------------------------------------------------------
def test_csv_relative_paths_string_labels_and_missing_optional_columns(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "a.png")
    write_png(tmp_path / "images" / "b.png")
    write_png(tmp_path / "images" / "c.png")
    absolute = write_png(tmp_path / "elsewhere" / "d.png")
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label\n"
        "../images/a.png,Benign\n"
        "../images/b.png, MALIGNANT\n"
        "../images/c.png,0\n"
        f"{absolute},1\n"
    )
    index = index_dataset(manifest)
    images = index.images.set_index("filename")
    assert index.layout == "csv"
    assert images["path"].to_dict() == {
        "a.png": str((tmp_path / "images/a.png").resolve()),
        "b.png": str((tmp_path / "images/b.png").resolve()),
        "c.png": str((tmp_path / "images/c.png").resolve()),
        "d.png": str(absolute.resolve()),
    }
    assert images["label"].to_dict() == {"a.png": 0, "b.png": 1, "c.png": 0, "d.png": 1}
    assert images["class_name"].to_dict()["b.png"] == "malignant"
    assert images["patient"].isna().all()
    assert images["magnification"].isna().all()
    assert (images["subtype"] == "").all()


def test_csv_optional_columns_and_breakhis_names(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png")
    write_png(tmp_path / "SOB_M_DC-14-2523-40-010.png")
    (tmp_path / "m.csv").write_text(
        "Path,Label,Patient,Magnification\n"
        "x.png,benign,P7,100X\n"
        "SOB_M_DC-14-2523-40-010.png,malignant,,\n"
    )
    images = index_csv(tmp_path / "m.csv").images.set_index("filename")
    assert images.loc["x.png", "patient"] == "P7"
    assert images.loc["x.png", "magnification"] == 100
    # blank values fall back to what the BreakHis file name says
    assert images.loc["SOB_M_DC-14-2523-40-010.png", "patient"] == "14-2523"
    assert images.loc["SOB_M_DC-14-2523-40-010.png", "magnification"] == 40
    assert images.loc["SOB_M_DC-14-2523-40-010.png", "subtype"] == "DC"


def test_csv_missing_and_corrupt_files_are_skipped(tmp_path: Path) -> None:
    write_png(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "m.csv").write_text("path,label\nok.png,0\nbad.png,1\ngone.png,1\nok.png,0\n")
    index = index_csv(tmp_path / "m.csv")
    assert len(index) == 1
    reasons = dict(zip(index.skipped["path"], index.skipped["reason"], strict=True))
    assert reasons[str(tmp_path / "gone.png")] == "file not found"
    assert reasons[str(tmp_path / "bad.png")].startswith("not a readable image")
    assert reasons[str(tmp_path / "ok.png")] == "listed twice in the manifest"


def test_csv_missing_required_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,diagnosis\na.png,benign\n")
    with pytest.raises(DatasetError) as error:
        index_dataset(tmp_path / "m.csv")
    message = str(error.value)
    assert "lacks the columns path, label" in message
    assert "benign, malignant" in message


def test_csv_bad_labels_name_the_rows_and_allowed_values(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na.png,benign\nb.png,cancer\nc.png,2\n")
    with pytest.raises(DatasetError) as error:
        index_csv(tmp_path / "m.csv")
    message = str(error.value)
    assert "2 bad labels" in message
    assert "row 3: 'cancer'" in message
    assert "row 4: '2'" in message
    assert "allowed labels: 0, 1, benign, malignant" in message


def test_csv_bad_magnification(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label,magnification\na.png,benign,35X\n")
    with pytest.raises(DatasetError, match="bad magnification '35X'"):
        index_csv(tmp_path / "m.csv")


@pytest.mark.parametrize("content", ["", "path,label\n"])
def test_csv_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DatasetError, match="path, label"):
        index_csv(tmp_path / "m.csv")


def test_csv_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        index_csv(tmp_path / "m.csv")


# --- summaries ----------------------------------------------------------------------------
def test_summary_of_the_real_sample(breakhis_sample: Path) -> None:
    images = index_dataset(breakhis_sample).images
    summary = summarize(images)
    assert summary["images"] == 34
    assert summary["patients"] == 14
    assert summary["images_by_class"] == {"benign": 20, "malignant": 14}
    assert summary["patients_by_class"] == {"benign": 8, "malignant": 6}
    assert summary["images_by_magnification"] == {"40X": 13, "100X": 6, "200X": 6, "400X": 9}
    assert list(summary["images_by_subtype"]) == ["A", "F", "PT", "TA", "DC", "LC", "MC", "PC"]
    assert sum(summary["images_by_subtype"].values()) == 34
    text = format_summary(images)
    assert text.splitlines()[0] == "34 images, 14 patients"
    assert "magnification: 40X 13, 100X 6, 200X 6, 400X 9" in text


def test_summary_reports_unknowns(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,0\n")
    images = index_csv(tmp_path / "m.csv").images
    summary = summarize(images)
    assert summary["images_without_patient"] == 1
    assert summary["images_by_subtype"] == {"unknown": 1}
    assert "without a patient id: 1" in format_summary(images)
