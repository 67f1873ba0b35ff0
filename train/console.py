"""What a training run prints: long lists summarised, repeated warnings said once, and
progress bars (tqdm) for the long passes (TensorFlow's start-up noise is dropped by
:func:`model.tensorflow_start.quiet_tensorflow_start`, which the model core's command lines
use too).

A run's console should carry what a person acts on: the dataset summary, the protocols,
each epoch, the results, and warnings worth reading once.

Example:
    >>> summarise_names(["p1", "p2", "p3", "p4", "p5", "p6", "p7"], shown=3)
    '7 (p1, p2, p3, ...)'
    >>> summarise_names(["p1", "p2"])
    '2 (p1, p2)'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")

_SAID: set[tuple[str, str]] = set()
_SAID_LOCK = threading.Lock()
_PROGRESS = {"enabled": True}


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
