"""The examples in the docstrings of the pure modules run, and say what they show.

A module listed here must have examples (a module whose examples all went missing fails),
and every example that is not marked ``+SKIP`` must give exactly its shown output.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

PURE_MODULES = (
    "model.config",
    "model.card",
    "model.breakhis",
    "model.files",
    "model.runs",
    "model.sources",
    "model.publish",
    "model.overlay",
    "model.quality",
    "model.calibration",
    "model.applicability",
    "model.trust",
    "model.stain",
    "model.tables",
    "model.batch",
    "train.config",
    "train.distributed",
    "train.protocols",
    "train.staining",
    "train.evaluation",
    "train.run_folder",
    "train.metrics",
    "train.report",
    "train.synthetic",
    "app.model_source",
    "app.results",
    "app.card_text",
)


@pytest.mark.parametrize("name", PURE_MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert results.attempted > 0, f"{name} has no runnable docstring examples"
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed"
