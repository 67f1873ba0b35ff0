"""train.console: long lists summarised, repeated warnings said once, counts worded."""

from __future__ import annotations

import logging

import pytest

from train.console import counted, progress, set_progress, summarise_names, warn_once


def test_summarise_names_counts_all_and_shows_a_few() -> None:
    names = [f"patient-{number}" for number in range(263)]
    assert summarise_names(names) == (
        "263 (patient-0, patient-1, patient-2, patient-3, patient-4, ...)"
    )
    assert summarise_names(["a", "b"]) == "2 (a, b)"


def test_counted_words_the_number() -> None:
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(3, "patch", "patches") == "3 patches"


def test_a_warning_is_said_once_whatever_its_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.console.once")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for fold in range(3):
            warn_once(logger, "fold patients mixed: %s", f"fold {fold}")
    levels = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert levels == [
        (logging.WARNING, "fold patients mixed: fold 0"),
        (logging.DEBUG, "fold patients mixed: fold 1"),
        (logging.DEBUG, "fold patients mixed: fold 2"),
    ]


def test_a_keyed_warning_is_said_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.console.keyed")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for magnification in (40, 100, 40):
            warn_once(logger, "skipping %dX", magnification, key=str(magnification))
    assert [record.getMessage() for record in caplog.records] == ["skipping 40X", "skipping 100X"]


def test_progress_yields_every_item_shown_or_hidden(capsys: pytest.CaptureFixture) -> None:
    try:
        set_progress(False)
        assert list(progress(range(5), total=5, description="hidden")) == [0, 1, 2, 3, 4]
        assert "hidden" not in capsys.readouterr().err
    finally:
        set_progress(True)
    assert list(progress(range(3), total=3, description="shown")) == [0, 1, 2]
