"""Loading the model once, in a background thread, and reporting how far it got.

No Streamlit here. All TensorFlow work goes through ``model/``, and :mod:`model.analysis`
(which imports TensorFlow) is imported only inside the loader thread, so the page is
interactive before TensorFlow is ready. How long each loading stage takes is measured by
``bench/bench_app.py`` (see docs/benchmarks.md); :attr:`ModelHandle.timings` records it for
every load.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.model_source import ModelSource, local_name
from app.process import prefer_lean_tensorflow, release_freed_memory
from model.artifact import read_card, read_card_from_zip
from model.card import ModelCard
from model.config import COARSE_LAYER
from model.errors import ArtifactError
from model.preprocessing import DecodedImage
from model.sources import describe_model_location, resolve_model_location

if TYPE_CHECKING:  # importing these at run time would import TensorFlow
    from model.analysis import Analyzer
    from model.artifact import LoadedArtifact

Loader = Callable[[dict[str, float]], "Analyzer"]
"""Builds an analyzer; records the seconds of each stage in the dict it is given."""


class ModelHandle:
    """A model that loads in a background thread, once, then serves every session.

    Loading a ResNet-50 artifact takes seconds (importing TensorFlow, deserialising the Keras
    model, tracing the Grad-CAM graph). Starting it in a thread lets the page render at once;
    the first analysis waits for it (:meth:`wait`). The loaded
    :class:`~model.analysis.Analyzer` is thread-safe and shared.

    Args:
        label: how the UI names the model's origin.
        load: builds the analyzer (runs in the thread; its exception is kept and re-raised
            by :meth:`wait`).
        preview: the card read cheaply beforehand, shown while loading.
    """

    def __init__(self, label: str, load: Loader, preview: ModelCard | None = None) -> None:
        self.label = label
        self.preview = preview
        self.key = uuid.uuid4().hex  # tells this model's cached results from another's
        self.started: float | None = None
        self.load_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds per loading stage
        self._load: Loader | None = load
        self._analyzer: Analyzer | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bcd-model-loader", daemon=False)
        self._warm_up: threading.Thread | None = None

    def start(self) -> ModelHandle:
        """Start loading (once); returns self."""
        if self.started is None and not self._done.is_set():
            self.started = time.monotonic()
            self._thread.start()
        return self

    @classmethod
    def failed_with(cls, label: str, error: BaseException) -> ModelHandle:
        """A handle that failed before loading began (e.g. the card is unreadable)."""
        handle = cls(label, load=_never)
        handle._error, handle._load = error, None
        handle._done.set()
        return handle

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            assert self._load is not None
            self._analyzer = self._load(self.timings)
        except BaseException as error:  # kept for wait(); a thread has nobody else to tell
            self._error = error
        finally:
            self.load_seconds = time.perf_counter() - started
            self._load = None  # drop the closure (it may hold an uploaded .zip's bytes)
            if self._analyzer is not None and warm_up_controls_enabled():
                # Started before the model is announced ready, so warmed_up() can wait on it.
                self._warm_up = threading.Thread(
                    target=self._warm_up_controls, name="bcd-controls-warm-up", daemon=True
                )
                self._warm_up.start()
            self._done.set()

    def _warm_up_controls(self) -> None:
        # After the model is ready, so the first image never waits for it: each graph traced
        # here is one a visitor's first change of map method, layer or TTA does not trace.
        began = time.perf_counter()
        try:
            assert self._analyzer is not None
            self._analyzer.warm_up_controls()
        except Exception:  # a map that fails to trace fails again, with its message, when asked
            return
        self.timings["warm up every map and TTA (background)"] = time.perf_counter() - began

    def warmed_up(self, timeout: float | None = None) -> bool:
        """Wait for the background warm-up of the map controls (True once it has finished;
        False while it runs past ``timeout``, or when there is none)."""
        if self._warm_up is None:
            return False
        self._warm_up.join(timeout)
        return not self._warm_up.is_alive()

    @property
    def elapsed(self) -> float:
        """Seconds since loading started (0 when it never started)."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    @property
    def loading(self) -> bool:
        return not self._done.is_set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._analyzer is not None

    @property
    def error(self) -> BaseException | None:
        return self._error if self._done.is_set() else None

    @property
    def error_message(self) -> str | None:
        """What to tell the user when loading failed (None otherwise)."""
        error = self.error
        if error is None:
            return None
        if isinstance(error, ArtifactError):
            return without_server_paths(str(error))
        return without_server_paths(
            f"the model could not be loaded ({type(error).__name__}: {error})"
        )

    @property
    def card(self) -> ModelCard | None:
        """The loaded model's card, or the preview while loading; None once loading failed
        (a model that did not load is never named as if it were in use)."""
        if self._analyzer is not None:
            return self._analyzer.card
        return self.preview if self.loading else None

    def wait(self, timeout: float | None = None) -> Analyzer:
        """Block until loaded; raise the loading error, or ``TimeoutError``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the model is still loading after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._analyzer is not None
        return self._analyzer


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`,;()<>]*[^\s'\"`,;()<>.:]")
"""An absolute POSIX path in running text (not the ``//host/...`` of a URL or an ``hf://``
id, not a relative ``runs/<name>``), without a full stop or colon that ends its sentence."""


def without_server_paths(message: str) -> str:
    """``message`` with every absolute path on the server cut to its last component.

    Our own messages name a model by its run name (:func:`app.model_source.local_name`),
    but the libraries they quote do not: Keras says ``File not found:
    filepath=/srv/models/run-7/model/model.keras``, and an uploaded ``.zip`` is read from a
    scratch folder. Visitors see these messages (the pages, the sidebar, ``/api/model``), and
    the server's folders are none of their business.

    Example:
        >>> without_server_paths("File not found: filepath=/srv/a/run-7/model/model.keras.")
        'File not found: filepath=model.keras.'
        >>> without_server_paths("https://host/m/model.zip#sha256=ab or hf://o/n@v1 or runs/q")
        'https://host/m/model.zip#sha256=ab or hf://o/n@v1 or runs/q'
        >>> without_server_paths("input (None, 96, 144, 3) / 2 at '/tmp/tmpq1w2/model.keras'")
        "input (None, 96, 144, 3) / 2 at 'model.keras'"
    """
    return _ABSOLUTE_PATH.sub(lambda match: match.group().rstrip("/").rsplit("/", 1)[-1], message)


def model_status(handle: ModelHandle | None) -> dict[str, Any]:
    """The server model's state for the ``/api/model`` readiness endpoint (no patient data).

    Example:
        >>> model_status(None)
        {'state': 'none', 'model': None, 'load_seconds': None, 'error': None}
        >>> model_status(ModelHandle.failed_with("x", ValueError("no")))["state"]
        'failed'
    """
    if handle is None:
        return {"state": "none", "model": None, "load_seconds": None, "error": None}
    card = handle.card
    if handle.loading:
        state = "loading"
    elif handle.error is not None:
        state = "failed"
    else:
        state = "ready"
    return {
        "state": state,
        "model": card.name if card is not None else None,
        "load_seconds": None if handle.load_seconds is None else round(handle.load_seconds, 2),
        "error": handle.error_message,
    }


def _never(timings: dict[str, float]) -> Analyzer:
    raise RuntimeError("this model handle never loads")


class _Stage:
    """Times one loading stage into ``timings[name]``."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.timings[self.name] = time.perf_counter() - self.started


def load_analyzer(
    path: Path, timings: dict[str, float] | None = None, name: str | None = None
) -> Analyzer:
    """Load an artifact from disk and make it ready (traced) for the first image; messages
    name it ``name`` (default: its path)."""
    timings = {} if timings is None else timings
    prefer_lean_tensorflow()
    with _Stage(timings, "import TensorFlow"):
        # Imported here, in the loader thread: these import TensorFlow.
        from model.analysis import Analyzer
        from model.artifact import load_artifact
    with _Stage(timings, "read artifact"):
        artifact = load_artifact(path, source=name)
    return _prepare(Analyzer, artifact, timings)


def load_analyzer_from_location(
    location: str, name: str, timings: dict[str, float] | None = None
) -> Analyzer:
    """Fetch a remote model (URL or Hub id, :mod:`model.sources`: once, into a cache), then
    load it as :func:`load_analyzer` does; messages name it ``name``, not its cache path."""
    timings = {} if timings is None else timings
    with _Stage(timings, "fetch model"):
        path = resolve_model_location(location)
    prefer_lean_tensorflow()
    with _Stage(timings, "import TensorFlow"):
        from model.analysis import Analyzer
        from model.artifact import load_artifact
    with _Stage(timings, "read artifact"):
        artifact = load_artifact(path, source=name)
    return _prepare(Analyzer, artifact, timings)


def load_analyzer_from_zip(
    data: bytes, source: str, timings: dict[str, float] | None = None
) -> Analyzer:
    """Load an uploaded artifact ``.zip`` (held in memory) and make it ready."""
    timings = {} if timings is None else timings
    prefer_lean_tensorflow()
    with _Stage(timings, "import TensorFlow"):
        from model.analysis import Analyzer
        from model.artifact import load_artifact_bytes
    with _Stage(timings, "read artifact"):
        artifact = load_artifact_bytes(data, source=source)
    return _prepare(Analyzer, artifact, timings)


def _prepare(
    analyzer_class: type[Analyzer], artifact: LoadedArtifact, timings: dict[str, float]
) -> Analyzer:
    with _Stage(timings, "build analyzer"):
        analyzer = analyzer_class(artifact)
    with _Stage(timings, "trace Grad-CAM"):
        warm_up(analyzer)
    release_freed_memory()  # loading's temporary buffers
    return analyzer


def warm_up(analyzer: Analyzer) -> Analyzer:
    """Run one blank image through the default Grad-CAM path and overlay, so the first user's
    image pays neither for tracing the graph nor for importing Matplotlib's colormaps."""
    spec = analyzer.card.config.input
    blank = DecodedImage(np.full((spec.height, spec.width, 3), 200, np.uint8), "PNG", "RGB")
    analyzer.analyze(blank, method="gradcam", layer=COARSE_LAYER).overlay(blank.pixels)
    return analyzer


WARM_UP_CONTROLS_ENV = "BCD_WARM_UP_CONTROLS"
"""``0`` turns the background warm-up of every map method, layer and TTA off (the test suite
does, to keep its two cores for the tests; one test turns it on)."""


def warm_up_controls_enabled() -> bool:
    """Whether a loaded model traces every map control in the background (default: yes)."""
    return os.environ.get(WARM_UP_CONTROLS_ENV, "1").strip() != "0"


def start_model_handle(source: ModelSource) -> ModelHandle:
    """Read the card cheaply, then start loading the model in the background.

    A remote model (URL or Hub id) is checked for syntax here and fetched in the loader
    thread, so a download never holds up the page; it has no card to preview until then.
    A local model's messages name it by its run name (:func:`app.model_source.local_name`):
    visitors read them, and the server's folders are none of their business.
    """
    if source.path is None:
        try:
            name = describe_model_location(source.location)
        except ArtifactError as error:  # a malformed location: nothing to fetch
            return ModelHandle.failed_with(source.detail, error)
        location = source.location
        return ModelHandle(
            source.detail,
            lambda timings: load_analyzer_from_location(location, name, timings),
        ).start()
    path = source.path
    name = local_name(path)
    try:
        preview = read_card(path, source=name)
    except ArtifactError as error:
        return ModelHandle.failed_with(source.detail, error)
    return ModelHandle(
        source.detail, lambda timings: load_analyzer(path, timings, name), preview
    ).start()


def start_upload_handle(data: bytes, file_name: str) -> ModelHandle:
    """Read the card of an artifact ``.zip`` uploaded in the sidebar, then start loading it."""
    label = f"uploaded file {file_name}"
    try:
        preview = read_card_from_zip(data, label)
    except ArtifactError as error:
        return ModelHandle.failed_with(label, error)
    return ModelHandle(
        label,
        lambda timings: load_analyzer_from_zip(data, source=label, timings=timings),
        preview,
    ).start()
