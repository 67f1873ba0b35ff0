"""What a training run prints: TensorFlow's start-up noise silenced, long lists summarised,
repeated warnings said once, and progress bars (tqdm) for the long passes.

A run's console should carry what a person acts on: the dataset summary, the protocols,
each epoch, the results, and warnings worth reading once. TensorFlow's C++ start-up lines
(oneDNN notes, "Could not find cuda drivers", a ``cuInit`` error on machines without a GPU)
are written before Python's logging exists and, through absl, often twice; they are
dropped while TensorFlow starts (:func:`quiet_tensorflow_start`) unless the user sets
``TF_CPP_MIN_LOG_LEVEL=0``.

Example:
    >>> summarise_names(["p1", "p2", "p3", "p4", "p5", "p6", "p7"], shown=3)
    '7 (p1, p2, p3, ...)'
    >>> summarise_names(["p1", "p2"])
    '2 (p1, p2)'
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")

_SAID: set[tuple[str, str]] = set()
_SAID_LOCK = threading.Lock()
_PROGRESS = {"enabled": True}


TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning",
)
"""Start-up lines of TensorFlow's C++ side that say nothing a run can act on. They are
written before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not stop
them (TensorFlow 2.18+), and two of its libraries each write them: hence twice."""


def quiet_tensorflow_start() -> None:
    """Import TensorFlow and probe for GPUs with its C++ start-up lines in
    :data:`TENSORFLOW_NOISE` dropped; anything else it writes meanwhile still reaches stderr.

    The lines come from C++ straight to file descriptor 2, so the descriptor is pointed at a
    temporary file for the import and the probe, then restored and the file filtered. Set
    ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
            _drop_retracing_warnings()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # where cuInit reports a missing GPU
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if not any(n in line for n in TENSORFLOW_NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    _drop_retracing_warnings()


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing":
    each fold builds and evaluates a new model, so new traces are expected, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _drop_retracing_warnings() -> None:
    tensorflow_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingFilter) for f in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_RetracingFilter())


def summarise_names(names: Sequence[Any], shown: int = 5) -> str:
    """``"<count> (<first few>, ...)"``: a list that can run to hundreds of ids, in one line."""
    listed = ", ".join(str(name) for name in list(names)[:shown])
    return f"{len(names)} ({listed}{', ...' if len(names) > shown else ''})"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``"1 replica"``, ``"2 replicas"``: a count with its noun in the right number.

    Example:
        >>> counted(1, "worker"), counted(3, "worker"), counted(2, "patch", "patches")
        ('1 worker', '3 workers', '2 patches')
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def warn_once(logger: logging.Logger, message: str, *args: Any, key: str | None = None) -> None:
    """``logger.warning`` the first time this message is said in the process; later ones
    (every fold, every protocol, each with its own patients) go to DEBUG.

    Messages are the same when their template is (whatever the arguments), or when they
    share ``key``, for a warning that must be said once per value."""
    said = (logger.name, message if key is None else key)
    with _SAID_LOCK:
        first = said not in _SAID
        _SAID.add(said)
    logger.log(logging.WARNING if first else logging.DEBUG, message, *args)


def forget_warnings() -> None:
    """Let :func:`warn_once` say every warning again (a new run in the same process)."""
    with _SAID_LOCK:
        _SAID.clear()


def set_progress(enabled: bool) -> None:
    """Show (default) or hide the progress bars of :func:`progress` (``--quiet`` hides)."""
    _PROGRESS["enabled"] = enabled


def progress(
    items: Iterable[Item], total: int | None = None, description: str = "", unit: str = "image"
) -> Iterator[Item]:
    """``items`` with a tqdm progress bar on stderr (hidden with ``set_progress(False)``,
    and when there are too few items to need one)."""
    hidden = not _PROGRESS["enabled"] or (total is not None and total < 2)
    yield from tqdm(
        items,
        total=total,
        desc=description,
        unit=unit,
        disable=hidden,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
