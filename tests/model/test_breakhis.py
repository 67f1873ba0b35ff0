"""The BreakHis naming convention (shared by training and the app)."""

from __future__ import annotations

import pytest

from model.breakhis import parse_breakhis_filename, read_breakhis_filename


def test_reads_every_field():
    name = parse_breakhis_filename("SOB_B_A-14-29960CD-200-007.png")
    assert (
        name.label,
        name.class_name,
        name.subtype,
        name.patient,
        name.magnification,
        name.number,
    ) == (0, "benign", "A", "14-29960CD", 200, 7)
    assert name.subtype_words == "adenosis"
    assert name.describe() == "benign, adenosis; patient 14-29960CD; 200X; image 7"


@pytest.mark.parametrize(
    "upload_name",
    [
        "SOB_M_DC-14-2523-40-010.png",
        "SOB_M_DC-14-2523-40-010 (1).png",  # a browser's re-download suffix
        "C:\\Users\\me\\SOB_M_DC-14-2523-40-010.PNG",  # a Windows path
        "sob_m_dc-14-2523-40-010.jpg",
    ],
)
def test_upload_names(upload_name):
    name = read_breakhis_filename(upload_name)
    assert name is not None and name.patient == "14-2523" and name.magnification == 40


@pytest.mark.parametrize(
    "other", ["slide.png", "SOB_M_DC-14-2523-40.png", "SOB_B_DC-14-2523-40-010.png"]
)  # benign letter, malignant type
def test_other_names(other):
    assert read_breakhis_filename(other) is None
    with pytest.raises(ValueError, match="SOB_"):
        parse_breakhis_filename(other)


def test_every_real_sample_name_parses(breakhis_sample_images):
    for path in breakhis_sample_images:
        name = parse_breakhis_filename(path)
        assert f"{name.magnification}X" == path.parent.name
        assert name.class_name in path.parts
