"""Which model the app serves, and when its files changed (plain Python, no Streamlit).

Which model (first match wins):

1. ``--model PATH`` after ``--`` on the command line
   (``streamlit run app/main.py -- --model runs/quick``),
2. the ``BCD_MODEL`` environment variable,
3. the newest run folder under ``runs/`` (``BCD_RUNS_DIR`` overrides where) that
   ``python -m train.run`` wrote, i.e. one whose served model has a card
   (:func:`model.runs.find_newest_run`),
4. otherwise none: the app shows how to get one, and accepts an artifact ``.zip`` upload.

Example:
    >>> source = resolve_model_source(argv=["--model", "runs/quick"], environ={})
    >>> source.origin, source.path.name
    ('command line', 'quick')
    >>> resolve_model_source(argv=[], environ={"BCD_MODEL": "/models/a.zip"}).detail
    'BCD_MODEL=/models/a.zip'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model.runs import CARD_FILE, MODEL_FILE, find_newest_run, is_run_with_model, served_model_dir

ENV_MODEL = "BCD_MODEL"
ENV_RUNS_DIR = "BCD_RUNS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"

Origin = Literal["command line", "environment", "newest run"]
"""Where a :class:`ModelSource` was found."""


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from.

    Attributes:
        path: an artifact folder, a run folder (holding ``model/``) or an artifact ``.zip``.
        origin: ``"command line"``, ``"environment"`` or ``"newest run"``.
        detail: how the user would recognise it (``"BCD_MODEL=/models/a.zip"``).
    """

    path: Path
    origin: Origin
    detail: str


def model_argument(argv: Sequence[str]) -> str | None:
    """The ``--model PATH`` given after ``--`` to ``streamlit run``, if any.

    Other arguments are ignored (under pytest ``sys.argv`` holds pytest's own).

    Raises:
        ValueError: ``--model`` without a path (argparse would exit the server instead).

    Example:
        >>> model_argument(["--model", "runs/quick"]), model_argument(["--model=runs/a"])
        ('runs/quick', 'runs/a')
        >>> model_argument(["tests/app", "-x"]) is None
        True
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--model", default=None)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ValueError(
            "--model needs a path: `streamlit run app/main.py -- --model runs/<name>`"
        ) from error
    return known.model or None


def runs_directory(environ: Mapping[str, str] | None = None) -> Path:
    """``BCD_RUNS_DIR`` when set, else ``runs/`` under the repository root.

    Example:
        >>> runs_directory({"BCD_RUNS_DIR": "/srv/runs"}).as_posix()
        '/srv/runs'
        >>> runs_directory({}) == DEFAULT_RUNS_DIR
        True
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV_RUNS_DIR, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_RUNS_DIR


def resolve_model_source(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    runs_dir: Path | None = None,
) -> ModelSource | None:
    """Pick the model as the module docstring lists; None when there is none.

    Example:
        >>> import tempfile
        >>> runs = Path(tempfile.mkdtemp())
        >>> resolve_model_source([], {}, runs_dir=runs) is None
        True
        >>> (runs / "quick" / "model").mkdir(parents=True)
        >>> _ = (runs / "quick" / "model" / "model_card.json").write_text("{}")
        >>> resolve_model_source([], {}, runs_dir=runs).detail.endswith(": quick")
        True
    """
    environ = os.environ if environ is None else environ
    argv = [] if argv is None else argv
    if (argument := model_argument(argv)) is not None:
        return ModelSource(Path(argument).expanduser(), "command line", f"--model {argument}")
    if configured := environ.get(ENV_MODEL, "").strip():
        detail = f"{ENV_MODEL}={configured}"
        return ModelSource(Path(configured).expanduser(), "environment", detail)
    runs_dir = runs_directory(environ) if runs_dir is None else runs_dir
    if (run := find_newest_run(runs_dir)) is not None:
        return ModelSource(run, "newest run", f"newest run in {runs_dir}: {run.name}")
    return None


def artifact_fingerprint(path: Path) -> str:
    """Changes when the artifact's files change (so a re-trained model is reloaded).

    ``path`` is an artifact folder, a run folder (its served model counts) or a ``.zip``.

    Example:
        >>> import tempfile
        >>> artifact_fingerprint(Path(tempfile.mkdtemp()))
        'model_card.json:missing|model.keras:missing'
    """
    files = [path]
    if path.is_dir():
        folder = served_model_dir(path) if is_run_with_model(path) else path
        files = [folder / CARD_FILE, folder / MODEL_FILE]
    parts = []
    for file in files:
        try:
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{file.name}:missing")
    return "|".join(parts)
