"""The part of the run-folder layout that serving reads: the served model, the newest run."""

from __future__ import annotations

import os
from pathlib import Path

from model.card import ModelCard
from model.runs import CARD_FILE, find_newest_run, is_run_with_model, served_model_dir


def _run(runs: Path, name: str, mtime: int | None) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    if mtime is not None:
        served_model_dir(run).mkdir()
        card = served_model_dir(run) / CARD_FILE
        card.write_text(ModelCard(name=name).to_json())
        os.utime(card, (mtime, mtime))
    return run


def test_newest_run_by_its_served_card(tmp_path: Path) -> None:
    _run(tmp_path, "old", 1_000)
    new = _run(tmp_path, "new", 2_000)
    _run(tmp_path, ".staging", 3_000)  # hidden: an interrupted write
    training = _run(tmp_path, "still-training", None)
    assert find_newest_run(tmp_path) == new
    assert is_run_with_model(new) and not is_run_with_model(training)
    assert find_newest_run(tmp_path / "missing") is None


def test_the_run_folder_layout_agrees_with_training(tmp_path: Path) -> None:
    from train.run_folder import RunFolder

    assert RunFolder(tmp_path / "run").served_model_dir == served_model_dir(tmp_path / "run")
