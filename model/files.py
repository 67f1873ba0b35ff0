"""Writing files so that a killed process never leaves half of one, and checksums.

Every file or folder this project writes for later use (model artifacts, run folders,
checkpoints, caches) is first written to a hidden temporary sibling and then renamed over its
final name. A rename within one folder is atomic on POSIX, so a reader (or a resumed run)
sees the old version or the new one, never a truncated one, even after ``kill -9``.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text_atomically(folder / "settings.json", "{}")
    >>> (folder / "settings.json").read_text()
    '{}'
    >>> with staged_directory(folder / "model") as staging:
    ...     _ = (staging / "weights.bin").write_bytes(b"123")
    >>> sorted(p.name for p in folder.iterdir())
    ['model', 'settings.json']
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write`` on a temporary sibling file, then rename it over ``path``.

    Creates the parent folder. On any error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda stream: stream.write(data))


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; on success it replaces ``target`` as a whole.

    An existing ``target`` is moved aside, the staged folder renamed into place, and the old
    one removed: there is no moment at which ``target`` holds a mix of old and new files.
    On an error (or a kill) the staged folder is removed (or left hidden, named
    ``.<target>.*``) and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (artifacts, downloaded archives).

    Example:
        >>> file_sha256("runs/quick/model/model.keras")  # doctest: +SKIP
        'e3b0c442...'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
