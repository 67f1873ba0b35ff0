"""What a reader of trained models needs to know about run folders: where a run's served
model is, and which run is the newest.

A run folder is written by ``python -m train.run``; :mod:`train.run_folder` owns its whole
layout. Serving only needs this part of it, so it lives here, where ``app/`` (which may not
import ``train/``) and :mod:`model.artifact` can read it::

    runs/<name>/
        model/              # the served model: an artifact (model.keras + model_card.json)
        ...                 # everything else is training's business

Example:
    >>> import tempfile
    >>> runs = Path(tempfile.mkdtemp())
    >>> (runs / "quick" / SERVED_MODEL_DIR).mkdir(parents=True)
    >>> _ = (served_model_dir(runs / "quick") / CARD_FILE).write_text("{}")
    >>> find_newest_run(runs).name
    'quick'
"""

from __future__ import annotations

from pathlib import Path

SERVED_MODEL_DIR = "model"
"""The run folder's sub-folder holding the model that the run serves."""
MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
"""The two files of a model artifact (see :mod:`model.artifact`)."""


def served_model_dir(run_dir: str | Path) -> Path:
    """The artifact folder of a run's served model (it may not exist yet)."""
    return Path(run_dir) / SERVED_MODEL_DIR


def is_run_with_model(path: str | Path) -> bool:
    """True when ``path`` is a run folder whose served model has been written (a card is
    there); a run still training has none yet."""
    return (served_model_dir(path) / CARD_FILE).is_file()


def find_newest_run(runs_dir: str | Path) -> Path | None:
    """The run folder under ``runs_dir`` whose served model card was written last, or None.

    Folders without a served model (still training, or not runs at all) and hidden folders
    (staging left by an interrupted write) are skipped; an unreadable ``runs_dir`` counts as
    empty.
    """
    runs_dir = Path(runs_dir)
    try:
        candidates = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError:
        return None
    newest: tuple[int, str, Path] | None = None
    for candidate in candidates:
        card = served_model_dir(candidate) / CARD_FILE
        try:
            if not candidate.is_dir() or candidate.name.startswith(".") or not card.is_file():
                continue
            key = (card.stat().st_mtime_ns, candidate.name, candidate)
        except OSError:  # removed while we looked
            continue
        if newest is None or key[:2] > newest[:2]:
            newest = key
    return None if newest is None else newest[2]
