"""Which model the app serves, and when its files changed (plain Python, no Streamlit).

Which model (first match wins):

1. ``--model LOCATION`` after ``--`` on the command line
   (``streamlit run app/main.py -- --model runs/quick``),
2. the ``BCD_MODEL`` environment variable,
3. the newest run folder under ``runs/`` (``BCD_RUNS_DIR`` overrides where) that
   ``python -m train.run`` wrote, i.e. one whose served model has a card
   (:func:`model.runs.find_newest_run`),
4. otherwise none: the app shows how to get one, and accepts an artifact ``.zip`` upload or
   a URL / ``hf://`` id typed in the sidebar (for that session).

A ``LOCATION`` is a local path, an ``https://...#sha256=<hex>`` URL or an
``hf://owner/name[@revision][/path]`` id (:mod:`model.sources`, which fetches remote ones;
the app does that in the loader thread). A remote model is named by its short name
(``model.zip@sha256:1a2b3c4d5e6f``, the ``hf://`` id), never by where it is cached; a model on
the server's disk by its run name (or file name), never by the server's folders
(:func:`local_name`): visitors see these names.

Example:
    >>> source = resolve_model_source(argv=["--model", "runs/quick"], environ={})
    >>> source.origin, source.path.name
    ('command line', 'quick')
    >>> resolve_model_source(argv=[], environ={"BCD_MODEL": "/models/a.zip"}).detail
    'a.zip from BCD_MODEL'
    >>> url = "https://example.org/m/model.zip#sha256=" + "ab" * 32
    >>> resolve_model_source(argv=["--model", url], environ={}).detail
    '--model model.zip@sha256:abababababab'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model.errors import ModelLocationError
from model.runs import (
    CARD_FILE,
    MODEL_FILE,
    SERVED_MODEL_DIR,
    find_newest_run,
    is_run_with_model,
    served_model_dir,
)
from model.sources import describe_model_location, is_remote_location

ENV_MODEL = "BCD_MODEL"
ENV_RUNS_DIR = "BCD_RUNS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"

Origin = Literal["command line", "environment", "newest run", "this session"]
"""Where a :class:`ModelSource` was found (``"this session"``: typed in the sidebar)."""


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from.

    Attributes:
        location: an artifact folder, a run folder (holding ``model/``), an artifact ``.zip``,
            or a remote location (``https://...#sha256=...``, ``hf://...``).
        origin: ``"command line"``, ``"environment"``, ``"newest run"`` or ``"this session"``.
        detail: how the user would recognise it (``"run quick from BCD_MODEL"``; a remote
            model by its short name only; never a server path).
    """

    location: str
    origin: Origin
    detail: str

    @property
    def is_remote(self) -> bool:
        """A URL or Hub id, fetched when the model loads."""
        return is_remote_location(self.location)

    @property
    def path(self) -> Path | None:
        """The local path; None for a remote location (its local copy is known only once it
        has been fetched).

        Example:
            >>> ModelSource("hf://o/n", "environment", "BCD_MODEL=hf://o/n").path is None
            True
        """
        return None if self.is_remote else Path(self.location).expanduser()


def local_name(path: Path) -> str:
    """How a model on the server's disk is named to visitors: ``run <name>`` for a run folder
    or the served model folder inside one, otherwise its own file or folder name; never the
    folders above it (they would tell visitors how the server is laid out).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()) / "quick-20260101-000000"
        >>> (run / "model").mkdir(parents=True)
        >>> _ = (run / "model" / "model_card.json").write_text("{}")
        >>> local_name(run), local_name(run / "model"), local_name(Path("/srv/models/a.zip"))
        ('run quick-20260101-000000', 'run quick-20260101-000000', 'a.zip')
    """
    path = path.expanduser()
    if is_run_with_model(path):
        return f"run {path.name}"
    if path.name == SERVED_MODEL_DIR and is_run_with_model(path.parent):
        return f"run {path.parent.name}"
    return path.name or str(path)


def runs_directory_name(environ: Mapping[str, str] | None = None) -> str:
    """How *Get a model* names the folder the newest run is taken from: ``runs/`` (the
    repository's) or the variable that set another one, not the server's path.

    Example:
        >>> runs_directory_name({}), runs_directory_name({"BCD_RUNS_DIR": "/srv/runs"})
        ('runs/', 'the folder BCD_RUNS_DIR names on this server')
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV_RUNS_DIR, "").strip():
        return f"the folder {ENV_RUNS_DIR} names on this server"
    return "runs/"


def short_name(location: str) -> str:
    """How a location is shown: a remote one by its short name (no host, query or cache
    path), a malformed remote one as given (its loading error says what is wrong), a local
    one as given.

    Example:
        >>> short_name("hf://bcd-lab/breakhis-resnet50@v1"), short_name("runs/quick")
        ('hf://bcd-lab/breakhis-resnet50@v1', 'runs/quick')
    """
    try:
        return describe_model_location(location)
    except ModelLocationError:
        return location.strip()


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
        >>> resolve_model_source([], {}, runs_dir=runs).detail
        'newest run: quick'
    """
    environ = os.environ if environ is None else environ
    argv = [] if argv is None else argv
    if (argument := model_argument(argv)) is not None:
        return ModelSource(argument, "command line", _detail(argument, "--model"))
    if configured := environ.get(ENV_MODEL, "").strip():
        return ModelSource(configured, "environment", _detail(configured, ENV_MODEL))
    runs_dir = runs_directory(environ) if runs_dir is None else runs_dir
    if (run := find_newest_run(runs_dir)) is not None:
        return ModelSource(str(run), "newest run", f"newest run: {run.name}")
    return None


def _detail(location: str, flag: str) -> str:
    """``--model model.zip@sha256:...`` for a remote location (its short name), ``run quick
    from BCD_MODEL`` for a local one (:func:`local_name`)."""
    if is_remote_location(location):
        separator = " " if flag.startswith("--") else "="
        return f"{flag}{separator}{short_name(location)}"
    return f"{local_name(Path(location))} from {flag}"


def session_model_source(text: str) -> ModelSource | None:
    """The model a visitor typed in the sidebar: a URL or ``hf://`` id only (None when the
    field is empty).

    A path on the server is refused: a visitor could otherwise load any artifact on the
    server's disk, and its error messages would tell which paths exist.

    Raises:
        ModelLocationError: ``text`` is not a remote location.

    Example:
        >>> session_model_source("hf://bcd-lab/breakhis-resnet50").detail
        'chosen in this session: hf://bcd-lab/breakhis-resnet50'
        >>> session_model_source("  ") is None
        True
    """
    text = text.strip()
    if not text:
        return None
    if not is_remote_location(text):
        raise ModelLocationError(
            f"{text!r} is not a URL or hf:// id: this field takes https://.../model.zip"
            "#sha256=<64 hex digits> or hf://owner/name; to use a .zip from your computer, "
            "upload it above"
        )
    return ModelSource(text, "this session", f"chosen in this session: {short_name(text)}")


def artifact_fingerprint(path: Path) -> str:
    """Changes when the artifact's files change (so a re-trained model is reloaded).

    ``path`` is an artifact folder, a run folder (its served model counts) or a ``.zip``.
    (A remote location needs none: its URL pins the content by checksum, and a Hub id is
    fetched once per server; pin a commit with ``@revision`` for a model that cannot change.)

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
