"""The docs say what the code does: figures and file layouts quoted in README.md and docs/."""

from __future__ import annotations

import re
from pathlib import Path

from train.report import PATIENT_DISJOINT_CONTEXT
from train.splits import SPLITS_CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SPANHOL_RANGE = "0.80-0.90"
"""Spanhol et al. 2016's own patient-disjoint range, quoted as the source of the low end."""


def _layout_entry(name: str) -> str:
    """The run-folder layout's comment for ``name`` in docs/training.md, continuation lines
    joined."""
    lines = (ROOT / "docs" / "training.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
    comment = [lines[start].split("#", 1)[1]]
    for line in lines[start + 1 :]:
        if not line.strip().startswith("#"):
            break
        comment.append(line.split("#", 1)[1])
    return " ".join(part.strip() for part in comment)


def test_one_patient_disjoint_range_everywhere():
    low, high = PATIENT_DISJOINT_CONTEXT
    figure = f"{low:.2f}-{high:.2f}"
    quoted = {
        doc.name: set(re.findall(r"\b0\.\d\d ?[-–] ?0\.\d\d\b", doc.read_text())) for doc in DOCS
    }
    assert figure in quoted["README.md"] and figure in quoted["training.md"]
    others = {name: ranges - {figure, SPANHOL_RANGE} for name, ranges in quoted.items()}
    assert not any(others.values()), f"other accuracy ranges quoted: {others}"


def test_splits_csv_columns_are_documented_in_order():
    documented = _layout_entry("splits.csv").split(":", 1)[1]  # the list after "...:"
    positions = [documented.find(column) for column in SPLITS_CSV_COLUMNS]
    assert -1 not in positions, f"{documented!r} lacks some of {SPLITS_CSV_COLUMNS}"
    assert positions == sorted(positions), f"{documented!r} vs {SPLITS_CSV_COLUMNS}"


def test_cache_folder_contents_are_documented():
    documented = _layout_entry("runs/.cache/")
    for name in ("images-<key>.npy", "images-<key>.json", "features-<key>.npy"):
        assert name in documented, name
